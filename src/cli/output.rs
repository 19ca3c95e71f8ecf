//! What `perturb train` prints: plain lines (the default), a progress bar on a terminal for runs
//! longer than about a second, `--quiet` (errors and one summary line), `--json` (the report on
//! stdout and nothing else), and the `--plot` chart. A closed or full stdout stops the printing,
//! never the run.
//!
//! The mode and the bar live in process-wide state set by [`begin`], so that the training code
//! only swaps its epoch line for [`epoch`] and the console macro checks [`silenced`].

use crate::error::{Error, Result};
use crate::plot::{self, Format};
use crate::report::{self, Report};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Output options of `perturb train`.
#[derive(Debug, Args, Clone, Default)]
pub struct OutputArgs {
    /// Draw the loss per epoch (the book's Figure 1-16) to FILE, .png or .svg.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Log-scale loss axis in the --plot chart (for long runs).
    #[arg(long, requires = "plot")]
    pub log_y: bool,
    /// Print only errors and one summary line.
    #[arg(long)]
    pub quiet: bool,
    /// Print the JSON report (as --report writes it) to stdout, and nothing else there.
    #[arg(long)]
    pub json: bool,
}

/// Runs expected to last longer than this get a progress bar (on a terminal).
const BAR_AFTER: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Lines,
    Quiet,
    Json,
}

struct State {
    mode: Mode,
    terminal: bool,
    /// Time and epoch of the first callback: the rate is measured from there, past the warm-up.
    first: Option<(Instant, usize)>,
    bar: Option<ProgressBar>,
}

static STATE: Mutex<State> = Mutex::new(State {
    mode: Mode::Lines,
    terminal: false,
    first: None,
    bar: None,
});

fn state() -> std::sync::MutexGuard<'static, State> {
    // A panic while holding the lock cannot leave the state inconsistent in a way that matters.
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sets the mode for a run and checks `--plot`'s extension before any training is spent.
pub fn begin(args: &OutputArgs) -> Result<()> {
    if let Some(path) = &args.plot {
        Format::from_path(path)?;
    }
    let mut s = state();
    s.mode = if args.json {
        Mode::Json
    } else if args.quiet {
        Mode::Quiet
    } else {
        Mode::Lines
    };
    s.terminal = std::io::stdout().is_terminal();
    s.first = None;
    s.bar = None;
    Ok(())
}

/// True under `--quiet` or `--json`: the console lines are not printed.
pub fn silenced() -> bool {
    state().mode != Mode::Lines
}

/// Set by [`mute`]: stdout is left to another process (MPI rank 0).
static MUTED: AtomicBool = AtomicBool::new(false);

/// Prints nothing on stdout from now on (an MPI rank other than 0); errors still go to stderr.
pub fn mute() {
    MUTED.store(true, Ordering::SeqCst);
}

/// Set once a write to stdout failed (closed by `| head`, or `/dev/full`): nothing more is printed.
static STDOUT_LOST: AtomicBool = AtomicBool::new(false);

/// Writes one line to stdout, above the progress bar when one is shown. When stdout is closed or
/// full, printing stops (with one note on stderr) and the run goes on: its files are still written
/// and its exit status is what it would have been.
pub fn print_line(line: &str) {
    let bar = state().bar.clone();
    let write = || write_stdout(&format!("{line}\n"));
    let _ = match bar {
        Some(bar) => bar.suspend(write),
        None => write(),
    };
}

/// Writes `text` to stdout unless an earlier write failed; the first failure stops printing and
/// is noted on stderr.
fn write_stdout(text: &str) -> std::io::Result<()> {
    if MUTED.load(Ordering::SeqCst) {
        return Ok(());
    }
    if STDOUT_LOST.load(Ordering::SeqCst) {
        return Err(std::io::Error::other("stdout was lost earlier"));
    }
    let mut out = std::io::stdout().lock();
    let written = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    if let Err(e) = &written {
        if !STDOUT_LOST.swap(true, Ordering::SeqCst) {
            eprintln!("perturb: note: stdout cannot be written ({e}); printing stops, the run and its files go on");
        }
    }
    written
}

/// Whether a write to stdout failed during this process.
pub fn stdout_lost() -> bool {
    STDOUT_LOST.load(Ordering::SeqCst)
}

/// Whether a run that has done `done` epochs in `elapsed` (since the first callback) out of
/// `remaining` more will take longer than [`BAR_AFTER`] in all.
fn expect_long(elapsed: Duration, done: usize, remaining: usize) -> bool {
    if done == 0 {
        return false;
    }
    let eta = elapsed.as_secs_f64() / done as f64 * remaining as f64;
    elapsed.as_secs_f64() + eta > BAR_AFTER.as_secs_f64()
}

/// Reports the loss of `epoch` (1-based) of `epochs`: a console line for the epochs
/// [`report::shows_epoch`] picks, or the progress bar once the run looks longer than a second on
/// a terminal; nothing under `--quiet` / `--json`.
pub fn epoch(epoch: usize, epochs: usize, loss: f64, extra: &str) {
    let mut s = state();
    if s.mode != Mode::Lines {
        return;
    }
    let now = Instant::now();
    let (t0, e0) = *s.first.get_or_insert((now, epoch));
    if s.bar.is_none()
        && s.terminal
        && epoch < epochs
        && expect_long(now - t0, epoch - e0, epochs - epoch)
    {
        s.bar = Some(new_bar(epochs));
    }
    let line = format!("epoch {epoch:>6}  loss {loss:.8}{extra}");
    let Some(bar) = s.bar.clone() else {
        drop(s);
        if report::shows_epoch(epoch, epochs) {
            print_line(&line);
        }
        return;
    };
    bar.set_message(format!("loss {loss:.8}"));
    bar.set_position(epoch as u64);
    if epoch == epochs {
        // The bar gives way to the last epoch's line, so that the final loss stays on screen.
        bar.finish_and_clear();
        s.bar = None;
        drop(s);
        print_line(&line);
    }
}

fn new_bar(epochs: usize) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(epochs as u64), ProgressDrawTarget::stdout());
    let style = ProgressStyle::with_template(
        "epoch {pos:>6}/{len}  {msg}  [{wide_bar}] {elapsed} elapsed, ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// Clears a progress bar left by a run that stopped early (an error), so that the error line
/// is not drawn over it.
pub fn abandon() {
    if let Some(bar) = state().bar.take() {
        bar.finish_and_clear();
    }
}

/// Draws the `--plot` charts of `report` to `path` (written atomically): train and validation
/// loss and, for class labels, train and validation accuracy in a second panel.
pub fn plot(args: &OutputArgs, path: &std::path::Path, report: &Report) -> Result<()> {
    let (val_loss, val_accuracy) = report
        .val
        .as_ref()
        .map_or((&[][..], &[][..]), |v| (&v.loss[..], &v.accuracy[..]));
    let charts = plot::training_charts(
        &report.losses,
        val_loss,
        &report.train_accuracy,
        val_accuracy,
        args.log_y,
    );
    plot::render_stacked(&charts, path)
}

/// After the run and its files: prints the `--json` report or the `--quiet` summary line. Under
/// `--json` the report on stdout is an output like the files: failing to write it is an error.
pub fn finish(report: &Report) -> Result<()> {
    abandon();
    let mode = state().mode;
    match mode {
        Mode::Lines => {}
        Mode::Quiet => {
            let first = report.losses.first().copied().unwrap_or(f64::NAN);
            let last = report.losses.last().copied().unwrap_or(f64::NAN);
            let t = report.seconds;
            let time = if t >= 1.0 {
                format!("{t:.2} s")
            } else if t >= 1e-3 {
                format!("{:.2} ms", t * 1e3)
            } else {
                format!("{:.1} µs", t * 1e6)
            };
            print_line(&format!(
                "trained {} epochs in {time}: loss {first:.8} -> {last:.8}",
                report.losses.len()
            ));
        }
        Mode::Json => {
            let text = serde_json::to_string_pretty(report)
                .map_err(|e| Error::Config(format!("--json: {e}")))?;
            write_stdout(&format!("{text}\n"))
                .map_err(|e| Error::io(std::path::Path::new("stdout (--json)"), e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_only_for_runs_expected_past_a_second() {
        let ms = Duration::from_millis;
        // 1 ms per epoch, 100 epochs: 0.1 s, plain lines.
        assert!(!expect_long(ms(1), 1, 98));
        // 10 ms per epoch, 1000 epochs: 10 s.
        assert!(expect_long(ms(10), 1, 998));
        // Already past a second.
        assert!(expect_long(ms(1100), 500, 1));
        // Nothing measured yet (the first callback only sets the clock).
        assert!(!expect_long(ms(0), 0, 1_000_000));
    }
}
