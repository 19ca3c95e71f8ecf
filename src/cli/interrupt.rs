//! Stop requests: SIGINT (Ctrl-C), SIGTERM (schedulers, `timeout`, CI cancellations) and SIGHUP (a
//! closed terminal). The first asks the run to stop after the current step, save what it has and
//! exit with 128 + the signal's number (130, 143, 129); a second ends the process at once with that
//! status, without saving.
//!
//! The trainer polls [`flag`] between steps; it finishes the step, saves what it has and returns
//! [`crate::Error::Interrupted`], which `main` turns into [`exit_status`]. The signals are received
//! on a thread of its own (signal-hook's iterator; `ctrlc` on other platforms, SIGINT only), so it
//! may print and exit safely.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::OnceLock;

static REQUESTED: AtomicBool = AtomicBool::new(false);
/// The signal that asked for the stop (0: none, or a request by [`request`]).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// SIGINT's number, the status base of a stop that no signal asked for.
const SIGINT: i32 = 2;

/// Installs the handlers. Idempotent: later calls return the first call's outcome. On the first
/// signal the flag [`requested`] reads is set and one line goes to stderr saying the run will stop
/// after this step; on the second the process exits with 128 + the signal without saving.
pub fn install() -> Result<()> {
    INSTALLED
        .get_or_init(listen)
        .clone()
        .map_err(|e| Error::Config(format!("cannot install the signal handlers: {e}")))
}

#[cfg(unix)]
fn listen() -> std::result::Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("perturb-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                on_signal(sig);
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(not(unix))]
fn listen() -> std::result::Result<(), String> {
    ctrlc::set_handler(|| on_signal(SIGINT)).map_err(|e| e.to_string())
}

/// True once a stop was asked for (by a signal or [`request`]) and not [`clear`]ed since.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// The flag itself, for [`crate::session::Training::stop_on`].
pub fn flag() -> &'static AtomicBool {
    &REQUESTED
}

/// Asks the run to stop as a first Ctrl-C would, without the message (for tests and for callers
/// that stop a run for reasons of their own). Returns whether a stop was already requested.
pub fn request() -> bool {
    REQUESTED.swap(true, Ordering::SeqCst)
}

/// Forgets a request, so that a process that runs several trainings can interrupt each.
pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
    SIGNAL.store(0, Ordering::SeqCst);
}

/// The exit status of a run stopped by a request: 128 + the signal that asked (130 for Ctrl-C or
/// a request without a signal, 143 for SIGTERM, 129 for SIGHUP).
pub fn exit_status() -> u8 {
    let sig = SIGNAL.load(Ordering::SeqCst);
    (128 + if sig > 0 { sig } else { SIGINT }) as u8
}

/// The signal's name in the stderr line.
fn name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        15 => "SIGTERM",
        _ => "interrupt",
    }
}

fn on_signal(sig: i32) {
    if request() {
        std::process::exit(128 + sig);
    }
    SIGNAL.store(sig, Ordering::SeqCst);
    eprintln!(
        "perturb: {}: stopping after this step and saving (a second signal quits at once)",
        name(sig)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_sets_the_flag_until_cleared_and_reports_a_second_request() {
        // The only unit test touching the flag; the signal path is tested in tests/interrupt.rs,
        // a process of its own.
        clear();
        assert!(!requested());
        assert!(!request(), "first request: nothing was pending");
        assert!(requested());
        assert_eq!(
            exit_status(),
            130,
            "a request without a signal reads as Ctrl-C"
        );
        assert!(
            request(),
            "second request: one was pending (the handler exits here)"
        );
        clear();
        assert!(!requested());
    }

    #[test]
    fn install_is_idempotent() {
        install().unwrap();
        install().unwrap();
    }
}
