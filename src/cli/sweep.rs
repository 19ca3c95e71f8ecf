//! `perturb sweep`.

use super::train::{describe_estimator, vanished_warning};
use super::{parse_list, AdapterArgs, DeviceKind, EstimatorArgs, MethodArg, NetArgs, PrecisionArg};
use crate::cpu::CpuEvaluator;
use crate::error::{Error, Result};
use crate::estimate::Estimator;
use crate::gpu::{GpuContext, GpuEvaluator, GpuOptions};
use crate::plot;
use crate::report;
use crate::train::{self, Control, DeviceInfo, Evaluator, Hyper, Method, Outcome, Run};
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
    /// Where the perturbed losses are computed.
    #[arg(long, value_enum, default_value_t = DeviceKind::Gpu)]
    pub device: DeviceKind,
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

fn floats(s: &str, what: &str) -> Result<Vec<f64>> {
    parse_list(s, what, |p| p.parse::<f64>().ok())
}

/// Runs `perturb sweep`.
pub fn sweep(args: &SweepArgs) -> Result<()> {
    if let Some(path) = &args.plot {
        plot::Format::from_path(path)?;
    }
    let lrs = floats(&args.lr, "--lr")?;
    let epss = floats(&args.eps, "--eps")?;
    let seeds = parse_list(&args.seed, "--seed", |p| p.parse::<u64>().ok())?;
    let count = lrs.len() * epss.len() * seeds.len();
    if count > MAX_SWEEP_RUNS {
        return Err(Error::Config(format!(
            "{count} runs (lr × eps × seed); a sweep holds at most {MAX_SWEEP_RUNS}"
        )));
    }
    let (estimator, step) = args.estimator.get();
    let method = Method::from(args.method);
    if matches!(estimator, Estimator::Spsa { .. }) && method == Method::Reuse {
        return Err(Error::Config(
            "--estimator spsa moves every parameter at once, so --method reuse has nothing to reuse; use --method naive".into(),
        ));
    }
    if args.precision == PrecisionArg::F64 && args.device == DeviceKind::Gpu {
        return Err(Error::Config(
            "--precision f64 runs on the CPU only (the GPU computes in float32); add --device cpu"
                .into(),
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
    let model = shape.expect("at least one seed");
    let data = args.net.data(&model)?;
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
    let start = Instant::now();
    let control = Control {
        stop: None,
        allow_divergence: args.allow_divergence,
    };
    let device = match (args.device, args.precision) {
        (DeviceKind::Gpu, _) => {
            let ctx = GpuContext::new(&args.adapter.options())?;
            let opts = GpuOptions {
                method,
                runs: runs.len(),
                shape: estimator.shape(),
                ..Default::default()
            };
            let mut gpu = GpuEvaluator::with_options(ctx, &model, &data, opts)?;
            drive(&mut gpu, &mut runs, control)?
        }
        (DeviceKind::Cpu, PrecisionArg::F32) => {
            let mut cpu = CpuEvaluator::<f32>::with_method(&model, &data, method)?;
            drive(&mut cpu, &mut runs, control)?
        }
        (DeviceKind::Cpu, PrecisionArg::F64) => {
            let mut cpu = CpuEvaluator::<f64>::with_method(&model, &data, method)?;
            drive(&mut cpu, &mut runs, control)?
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let rows: Vec<SweepRun> = runs.iter().map(summarise).collect();
    say!(
        "device: {} — {} ({}); all runs in one evaluation per epoch, {seconds:.3} s\n",
        device.kind,
        device.adapter,
        device.backend
    );
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
    let diverged = rows.iter().filter(|r| r.outcome == "diverged").count();
    if let Some(path) = &args.plot {
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
    if let Some(path) = &args.report {
        let report = SweepReport {
            device,
            estimator: describe_estimator(&runs[0].hyper),
            seconds,
            runs: rows,
        };
        let text = serde_json::to_string_pretty(&report).expect("report serialises");
        std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))?;
        say!("wrote {}", path.display());
    }
    if diverged > 0 {
        say!("{diverged} run(s) diverged and were stopped at that epoch (the others ran on)");
    }
    Ok(())
}

fn drive<E: Evaluator>(ev: &mut E, runs: &mut [Run], control: Control<'_>) -> Result<DeviceInfo> {
    train::train_runs(ev, runs, control, |_| {})?;
    Ok(ev.device())
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
