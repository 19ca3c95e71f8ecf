//! `perturb bench`.

use super::{bench_process, pick, AdapterArgs};
use crate::bench::{self, BenchOptions, Size};
use crate::error::{Error, Result};
use crate::gpu::ReuseKernel;
use crate::model::Loss;
use crate::plot;
use crate::train::Method;
use clap::Args;
use std::path::PathBuf;

/// `perturb bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Sizes: book (2-3-1, B=1), small (16-32-4, B=64), medium (64-128-10, B=64), mnist (784-128-10, B=256).
    #[arg(long, default_value = "book,small,medium,mnist")]
    pub sizes: String,
    /// Methods: naive, reuse.
    #[arg(long, default_value = "naive,reuse")]
    pub methods: String,
    /// Losses: mse (the book's), cross-entropy (over one-hot labels; skipped for book, whose one
    /// output makes it constant). NumPy and JAX rows follow the same list.
    #[arg(long, default_value = "mse")]
    pub losses: String,
    /// Devices: cpu, gpu.
    #[arg(long, default_value = "cpu,gpu")]
    pub devices: String,
    /// Loop modes for GPU rows: host, resident.
    #[arg(long, default_value = "host,resident")]
    pub modes: String,
    /// Also time the book's algorithm in NumPy (plain loop and vectorised), via python3.
    #[arg(long)]
    pub numpy: bool,
    /// Also time backprop in JAX (`jax.grad` steps; the `vmap` forward difference at medium) via
    /// python3 and benches/jax_bench.py; skipped with a note when jax is not installed.
    #[arg(long)]
    pub jax: bool,
    /// Whole-process rows: spawn `perturb train` (the README's command; 2,000 book epochs host and
    /// resident; 10 medium reuse epochs) this many times each and report the median, start-up
    /// included (0: none).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub process_runs: usize,
    /// Write the rows as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw seconds per step against parameter count (log-log, one line per device, method and
    /// loop mode) to FILE, .png or .svg.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Time budget per row in seconds (a single step longer than this is still run once).
    #[arg(long, default_value_t = 3.0)]
    pub max_seconds: f64,
    /// Skip naive rows whose step needs more multiply-adds than this.
    #[arg(long, default_value_t = 1e10)]
    pub max_work: f64,
    /// The reuse method's GPU kernel: auto (by adapter), split, workgroup, invocation.
    #[arg(long, default_value = "auto")]
    pub reuse_kernel: String,
    /// Adapter choice.
    #[command(flatten)]
    pub adapter: AdapterArgs,
}

/// Runs `perturb bench`.
pub fn bench(args: &BenchArgs) -> Result<()> {
    let sizes = args
        .sizes
        .split(',')
        .map(Size::named)
        .collect::<Result<Vec<_>>>()?;
    let methods = pick(&args.methods, "methods", &["naive", "reuse"], |s| {
        if s == "naive" {
            Method::Naive
        } else {
            Method::Reuse
        }
    })?;
    let losses = pick(
        &args.losses,
        "losses",
        &["mse", "cross-entropy"],
        |s| match s {
            "mse" => Loss::Mse,
            _ => Loss::CrossEntropy,
        },
    )?;
    let devices = pick(&args.devices, "devices", &["cpu", "gpu"], str::to_string)?;
    let modes = pick(&args.modes, "modes", &["host", "resident"], str::to_string)?;
    if !(args.max_seconds > 0.0 && args.max_seconds.is_finite()) {
        return Err(Error::Config(format!(
            "--max-seconds must be > 0, got {}",
            args.max_seconds
        )));
    }
    let opts = BenchOptions {
        sizes: sizes.clone(),
        methods,
        losses: losses.clone(),
        cpu: devices.iter().any(|d| d == "cpu"),
        gpu: devices.iter().any(|d| d == "gpu"),
        resident: modes.iter().any(|m| m == "resident"),
        max_seconds: args.max_seconds,
        max_work: args.max_work,
        adapter: args.adapter.options(),
        reuse_kernel: reuse_kernel(&args.reuse_kernel)?,
    };
    if let Some(path) = &args.plot {
        plot::Format::from_path(path)?; // before the timing, not after
    }
    let outs = super::outputs::check_plain(
        &[],
        &[
            ("--json", args.json.as_deref()),
            ("--plot", args.plot.as_deref()),
        ],
    )?;
    if !modes.iter().any(|m| m == "host") {
        return Err(Error::Config(
            "--modes must include host (CPU rows and the baseline are host-driven)".into(),
        ));
    }
    say!("timing one training step (all P + 1 losses and the update), median of repeated runs");
    let mut rows = bench::run(&opts, |r| {
        let t = r
            .seconds
            .map_or(r.note.clone(), |s| format!("{:.3e} s/step", s));
        say!(
            "  {:<7} {:<6} {:<13} {:<4} {:<9} {t}",
            r.size,
            r.method,
            r.loss,
            r.device,
            r.mode
        );
    })?;
    if args.numpy {
        let (version, mut extra) =
            bench::numpy_rows(&sizes, &losses, args.max_seconds.max(5.0) * 4.0)?;
        say!("  NumPy {version}: {} rows", extra.len());
        rows.append(&mut extra);
    }
    if args.jax {
        match bench::jax_rows(&sizes, &losses, args.max_seconds.max(5.0) * 4.0)? {
            bench::JaxRows::Rows(version, mut extra) => {
                say!("  {version}: {} rows", extra.len());
                rows.append(&mut extra);
            }
            bench::JaxRows::Skipped(why) => say!("  --jax: no JAX rows: {why}"),
        }
    }
    bench::fill_speedups(&mut rows);
    if args.process_runs > 0 {
        rows.append(&mut process_rows(args, &opts)?);
    }
    say!("\n{}", bench::table(&rows));
    if rows
        .iter()
        .any(|r| r.device == "gpu" && r.adapter.to_lowercase().contains("llvmpipe"))
    {
        say!("\nllvmpipe is Mesa's software GPU: its rows are CPU time spent emulating a GPU.");
    }
    if let Some(path) = outs.target("--json") {
        let text = serde_json::to_string_pretty(&rows).expect("rows serialise");
        crate::fileio::write_atomic(path, (text + "\n").as_bytes())?;
        say!("wrote {}", path.display());
    }
    if let Some(path) = outs.target("--plot") {
        let steps: Vec<_> = rows
            .iter()
            .filter(|r| r.mode != "process")
            .cloned()
            .collect();
        plot::bench_chart(&steps).render(path)?;
        say!("wrote the chart to {}", path.display());
    }
    Ok(())
}

/// `--reuse-kernel`: `None` for auto (by adapter).
fn reuse_kernel(name: &str) -> Result<Option<ReuseKernel>> {
    Ok(match name {
        "auto" => None,
        "split" => Some(ReuseKernel::Split),
        "workgroup" => Some(ReuseKernel::Workgroup),
        "invocation" => Some(ReuseKernel::Invocation),
        other => {
            return Err(Error::Config(format!(
                "--reuse-kernel must be auto, split, workgroup or invocation, got {other:?}"
            )))
        }
    })
}

/// The whole-process rows ([`super::bench_process`]) of the sizes, methods and devices asked for,
/// run in a scratch directory that holds the medium data.
fn process_rows(args: &BenchArgs, opts: &BenchOptions) -> Result<Vec<bench::Row>> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Config(format!("where is this perturb binary? {e}")))?;
    let dir = std::env::temp_dir().join(format!("perturb-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::Config(format!("could not create {}: {e}", dir.display())))?;
    let csv = dir.join("medium.csv");
    let cases = bench_process::cases(
        &opts.sizes,
        &opts.methods,
        (opts.cpu, opts.gpu),
        &args.adapter,
        &csv,
    );
    if !cases.is_empty() {
        say!(
            "timing whole `perturb train` processes, start-up included, median of {}",
            args.process_runs
        );
    }
    let rows = bench_process::write_csv(&Size::named("medium")?, &csv).and_then(|()| {
        bench_process::rows(&exe, &dir, &cases, args.process_runs, |r| {
            let t = r
                .seconds
                .map_or(String::new(), |s| format!("{s:.3e} s/run"));
            say!(
                "  {:<7} {:<6} {:<4} {:<9} {t}  {}",
                r.size,
                r.method,
                r.device,
                r.mode,
                r.note
            );
        })
    });
    let _ = std::fs::remove_dir_all(&dir);
    rows
}
