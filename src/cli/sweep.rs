//! `perturb sweep`.

use super::train::{describe_estimator, vanished_warning};
use super::{
    parse_list, AdapterArgs, DeviceArg, EstimatorArgs, LossArg, MethodArg, NetArgs, PrecisionArg,
};
use crate::error::{Error, Fix, Result, Setting};
use crate::estimate::Estimator;
use crate::model::Model;
use crate::plot;
use crate::report;
use crate::session::Training;
use crate::train::{DeviceInfo, Hyper, Method, Outcome, Run};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// Most runs one sweep may hold.
pub const MAX_SWEEP_RUNS: usize = 256;

/// `perturb sweep` options.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Network and data (every run trains the same shape on the same data).
    #[command(flatten)]
    pub net: NetArgs,
    /// Learning rates, comma-separated.
    #[arg(long, default_value = "0.01")]
    pub lr: String,
    /// Nudges, comma-separated.
    #[arg(long, default_value = "0.0001")]
    pub eps: String,
    /// Seeds (random network with --layers, SPSA directions), comma-separated.
    #[arg(long, default_value = "0")]
    pub seed: String,
    /// Epochs of every run.
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Gradient estimator (the same for every run).
    #[command(flatten)]
    pub estimator: EstimatorArgs,
    /// The loss: mse (the book's) or cross-entropy (softmax over an identity output layer).
    #[arg(long, value_enum, default_value_t = LossArg::Mse)]
    pub loss: LossArg,
    /// Samples per step [default: every sample]. Every run steps through the same batches, one
    /// evaluation per step for all: each epoch's order is drawn from the FIRST seed of --seed, so
    /// the runs of that seed equal the same run of `perturb train` bit for bit.
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Keep file order in every epoch instead of a fresh seeded order per epoch.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Where the perturbed losses are computed.
    #[arg(long, value_enum, default_value_t = DeviceArg::Gpu)]
    pub device: DeviceArg,
    /// How the perturbed losses are computed.
    #[arg(long, value_enum, default_value_t = MethodArg::Naive)]
    pub method: MethodArg,
    /// Float type of the forward pass and loss (f64 needs --device cpu).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    pub precision: PrecisionArg,
    /// Keep training runs whose loss or parameters stop being finite (they are flagged either way).
    #[arg(long)]
    pub allow_divergence: bool,
    /// Write every run's settings, outcome and loss curve as JSON.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Draw every run's loss curve on one chart, .png or .svg.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Log-scale loss axis in the --plot chart.
    #[arg(long, requires = "plot")]
    pub log_y: bool,
    /// Adapter choice.
    #[command(flatten)]
    pub adapter: AdapterArgs,
    /// Splitting steps over adapters.
    #[command(flatten)]
    pub scale: super::ScaleArgs,
}

/// One run of a sweep, as reported.
#[derive(Clone, Debug, Serialize)]
pub struct SweepRun {
    /// Learning rate.
    pub lr: f64,
    /// Nudge.
    pub eps: f64,
    /// Seed.
    pub seed: u64,
    /// `finished`, `diverged` or `stopped`.
    pub outcome: String,
    /// For a divergence: the epoch and what became non-finite.
    pub detail: Option<String>,
    /// The last recorded loss.
    pub final_loss: Option<f64>,
    /// Loss of every epoch run.
    pub losses: Vec<f64>,
    /// The vanished-nudge warning, if any.
    pub warning: Option<String>,
}

/// The `--report` of a sweep.
#[derive(Clone, Debug, Serialize)]
pub struct SweepReport {
    /// What computed the losses.
    pub device: DeviceInfo,
    /// `forward differences over nominal steps`, ….
    pub estimator: String,
    /// Wall time of the whole sweep in seconds.
    pub seconds: f64,
    /// Every run.
    pub runs: Vec<SweepRun>,
}

fn floats(s: &str, what: Setting) -> Result<Vec<f64>> {
    parse_list(s, what, |p| p.parse::<f64>().ok())
}

/// Runs `perturb sweep`.
pub fn sweep(args: &SweepArgs) -> Result<()> {
    if let Some(path) = &args.plot {
        plot::Format::from_path(path)?;
    }
    let outs = super::outputs::check_plain(
        &[
            ("--data", args.net.data.as_deref()),
            ("--model", args.net.model.as_deref()),
        ],
        &[
            ("--report", args.report.as_deref()),
            ("--plot", args.plot.as_deref()),
        ],
    )?;
    let (model, runs) = sweep_runs(args)?;
    let data = args.net.data(&model, args.loss.into())?;
    say!(
        "perturb sweep: {} runs of a {} network ({} parameters, {} sample{}), {} epochs, {}",
        runs.len(),
        report::describe_model(&model),
        model.num_params(),
        data.len(),
        if data.len() == 1 { "" } else { "s" },
        args.epochs,
        describe_estimator(&runs[0].hyper)
    );
    let device = args
        .scale
        .device(args.device.into(), &args.adapter, args.precision.into())?;
    if args.batch_size == Some(0) {
        return Err(Error::invalid(Setting::BatchSize, "must be at least 1"));
    }
    let batching = crate::settings::Batching {
        size: args.batch_size.unwrap_or(0),
        shuffle: !args.no_shuffle,
    };
    let start = Instant::now();
    let done = Training::new(model, data)
        .device(device)
        .method(args.method.into())
        .loss(args.loss.into())
        .batching(batching)
        .runs(runs)
        .allow_divergence(args.allow_divergence)
        .run_all()?;
    if let Some(e) = done.fault {
        return Err(e);
    }
    let seconds = start.elapsed().as_secs_f64();
    let rows: Vec<SweepRun> = done.runs.iter().map(summarise).collect();
    say!(
        "device: {} — {} ({}); all runs in one evaluation per epoch, {seconds:.3} s\n",
        done.device.kind,
        done.device.adapter,
        done.device.backend
    );
    print_table(&rows);
    if let Some(path) = outs.target("--plot") {
        let curves: Vec<(String, Vec<f64>)> = rows
            .iter()
            .map(|r| {
                let name = format!(
                    "lr {} eps {} seed {}",
                    report::compact(r.lr),
                    report::compact(r.eps),
                    r.seed
                );
                (name, r.losses.clone())
            })
            .collect();
        plot::loss_curves(&curves, args.log_y).render(path)?;
        say!("drew {}", path.display());
    }
    let diverged = rows.iter().filter(|r| r.outcome == "diverged").count();
    if let Some(path) = outs.target("--report") {
        let report = SweepReport {
            device: done.device,
            estimator: describe_estimator(&done.runs[0].hyper),
            seconds,
            runs: rows,
        };
        let text = serde_json::to_string_pretty(&report).expect("report serialises");
        crate::fileio::write_atomic(path, (text + "\n").as_bytes())?;
        say!("wrote {}", path.display());
    }
    if diverged > 0 {
        say!("{diverged} run(s) diverged and were stopped at that epoch (the others ran on)");
    }
    Ok(())
}

/// The sweep's runs (lr × eps for each seed, seeds outermost) and the network of the first seed
/// (all share its shape).
fn sweep_runs(args: &SweepArgs) -> Result<(Model, Vec<Run>)> {
    let lrs = floats(&args.lr, Setting::Lr)?;
    let epss = floats(&args.eps, Setting::Eps)?;
    let seeds = parse_list(&args.seed, Setting::Seed, |p| p.parse::<u64>().ok())?;
    let count = lrs.len() * epss.len() * seeds.len();
    if count > MAX_SWEEP_RUNS {
        return Err(Error::Config(format!(
            "{count} runs (lr × eps × seed); a sweep holds at most {MAX_SWEEP_RUNS}"
        )));
    }
    let (estimator, step) = args.estimator.get();
    if matches!(estimator, Estimator::Spsa { .. }) && Method::from(args.method) == Method::Reuse {
        return Err(Error::refused(
            &[(Setting::Estimator, "spsa"), (Setting::Method, "reuse")],
            "SPSA moves every parameter at once, so there is nothing to reuse",
            Some(Fix::Use(Setting::Method, "naive")),
        ));
    }
    if args.precision == PrecisionArg::F64 && args.device == DeviceArg::Gpu {
        return Err(Error::refused(
            &[(Setting::Precision, "f64")],
            "runs on the CPU only (the GPU computes in float32)",
            Some(Fix::Use(Setting::Device, "cpu")),
        ));
    }
    let mut runs = Vec::with_capacity(count);
    let mut shape = None;
    for &seed in &seeds {
        let model = args.net.model(seed)?;
        for &lr in &lrs {
            for &eps in &epss {
                let hyper = Hyper {
                    epochs: args.epochs,
                    lr,
                    eps,
                    estimator,
                    step,
                    seed,
                };
                hyper.validate()?;
                runs.push(Run::new(hyper, model.params.clone()));
            }
        }
        shape.get_or_insert(model);
    }
    Ok((shape.expect("at least one seed"), runs))
}

/// The table of runs: settings, final loss, outcome; then any vanished-nudge warnings.
fn print_table(rows: &[SweepRun]) {
    say!(
        "{:>4}  {:>8}  {:>8}  {:>6}  {:>16}  status",
        "run",
        "lr",
        "eps",
        "seed",
        "final loss"
    );
    for (i, r) in rows.iter().enumerate() {
        let status = match &r.detail {
            Some(d) => format!("{}: {d}", r.outcome),
            None => format!("{} ({} epochs)", r.outcome, r.losses.len()),
        };
        say!(
            "{:>4}  {:>8}  {:>8}  {:>6}  {:>16}  {status}",
            i + 1,
            report::compact(r.lr),
            report::compact(r.eps),
            r.seed,
            r.final_loss.map_or("-".into(), report::format_loss)
        );
    }
    for (i, r) in rows.iter().enumerate() {
        if let Some(w) = &r.warning {
            say!("run {}: {w}", i + 1);
        }
    }
}

fn summarise(run: &Run) -> SweepRun {
    let (outcome, detail) = match &run.outcome {
        Some(Outcome::Diverged { epoch, what }) => {
            ("diverged", Some(format!("epoch {epoch}, {what}")))
        }
        Some(Outcome::Stopped) => ("stopped", None),
        _ => ("finished", None),
    };
    SweepRun {
        lr: run.hyper.lr,
        eps: run.hyper.eps,
        seed: run.hyper.seed,
        outcome: outcome.into(),
        detail,
        final_loss: run.losses.last().copied(),
        losses: run.losses.clone(),
        warning: vanished_warning(&run.vanished, run.hyper.eps),
    }
}
