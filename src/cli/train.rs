//! `perturb train`.

use super::output::{self, OutputArgs};
use super::{AdapterArgs, DeviceKind, EstimatorArgs, LoopArg, MethodArg, NetArgs, PrecisionArg};
use crate::cpu::CpuEvaluator;
use crate::error::{Error, Result};
use crate::estimate::{Estimator, StepMode};
use crate::gpu::{GpuContext, GpuEvaluator, GpuOptions};
use crate::model::Model;
use crate::precision::Precision;
use crate::report::{self, Report, Settings};
use crate::train::{self, Control, Evaluator, History, Hyper, Method, Outcome, Run, Vanished};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

/// `perturb train` options.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Network and data.
    #[command(flatten)]
    pub net: NetArgs,
    /// Seed of the random network (--layers) and of the SPSA directions.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Gradient estimator.
    #[command(flatten)]
    pub estimator: EstimatorArgs,
    /// Epochs (full-batch steps).
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 0.01, allow_hyphen_values = true)]
    pub lr: f64,
    /// Nudge added to each parameter.
    #[arg(long, default_value_t = 0.0001, allow_hyphen_values = true)]
    pub eps: f64,
    /// Where the nudged losses are computed.
    #[arg(long, value_enum, default_value_t = DeviceKind::Gpu)]
    pub device: DeviceKind,
    /// How the nudged losses are computed.
    #[arg(long, value_enum, default_value_t = MethodArg::Naive)]
    pub method: MethodArg,
    /// Who applies the update (resident needs --device gpu).
    #[arg(long = "loop", value_enum, default_value_t = LoopArg::Host)]
    pub loop_mode: LoopArg,
    /// Epochs per GPU submission in the resident loop (losses are reported after each).
    #[arg(long, default_value_t = 100)]
    pub epochs_per_submit: usize,
    /// Float type of the forward pass and loss (f64 needs --device cpu).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    pub precision: PrecisionArg,
    /// Write a report (losses, model, predictions, device, seconds): JSON, or .npz (arrays).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the trained model: JSON model file, or .npz (W1, b1, …, activations).
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Adapter choice.
    #[command(flatten)]
    pub adapter: AdapterArgs,
    /// Console output and plot.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Runs `perturb train`.
pub fn train(args: &TrainArgs) -> Result<()> {
    let (estimator, step) = args.estimator.get();
    let hyper = Hyper {
        epochs: args.epochs,
        lr: args.lr,
        eps: args.eps,
        estimator,
        step,
        seed: args.seed.unwrap_or(0),
    };
    hyper.validate()?;
    output::begin(&args.output)?;
    let precision = match args.precision {
        PrecisionArg::F32 => Precision::F32,
        PrecisionArg::F64 => Precision::F64,
    };
    if precision == Precision::F64 && args.device == DeviceKind::Gpu {
        return Err(Error::Config(
            "--precision f64 runs on the CPU only (the GPU computes in float32); add --device cpu"
                .into(),
        ));
    }
    if args.loop_mode == LoopArg::Resident && args.device != DeviceKind::Gpu {
        return Err(Error::Config(
            "--loop resident runs the update on the GPU; it needs --device gpu".into(),
        ));
    }
    let method = Method::from(args.method);
    if matches!(estimator, Estimator::Spsa { .. }) && method == Method::Reuse {
        return Err(Error::Config(
            "--estimator spsa moves every parameter at once, so --method reuse has nothing to reuse; use --method naive".into(),
        ));
    }
    let model = args.net.model(hyper.seed)?;
    let data = args.net.data(&model)?;

    say!(
        "perturb: {} network, {} parameters, {} sample{}, {} epochs, lr {}, eps {}",
        report::describe_model(&model),
        model.num_params(),
        data.len(),
        if data.len() == 1 { "" } else { "s" },
        hyper.epochs,
        hyper.lr,
        hyper.eps
    );
    if estimator != Estimator::Forward || step != StepMode::Nominal {
        say!("estimator: {}", describe_estimator(&hyper));
    }
    let (history, device) = match (args.device, precision) {
        (DeviceKind::Gpu, _) => {
            let ctx = GpuContext::new(&args.adapter.options())?;
            let opts = GpuOptions {
                method,
                shape: estimator.shape(),
                ..Default::default()
            };
            let mut gpu = GpuEvaluator::with_options(ctx, &model, &data, opts)?;
            if args.loop_mode == LoopArg::Resident {
                let device = gpu.device();
                say!(
                    "device: {} — {} ({}), float32, {} method, resident loop\n",
                    device.kind,
                    device.adapter,
                    device.backend,
                    method.name()
                );
                let epochs = hyper.epochs;
                let history = gpu.train_resident(
                    &model.params,
                    &hyper,
                    args.epochs_per_submit,
                    |epoch, loss| output::epoch(epoch, epochs, loss),
                )?;
                (history, device)
            } else {
                run(&mut gpu, &model, &hyper, "float32", method)?
            }
        }
        (DeviceKind::Cpu, Precision::F32) => {
            let mut cpu = CpuEvaluator::<f32>::with_method(&model, &data, method)?;
            run(&mut cpu, &model, &hyper, "float32", method)?
        }
        (DeviceKind::Cpu, Precision::F64) => {
            let mut cpu = CpuEvaluator::<f64>::with_method(&model, &data, method)?;
            run(&mut cpu, &model, &hyper, "float64", method)?
        }
    };
    let trained = model.with_params(history.params.clone())?;
    let predictions = match precision {
        Precision::F32 => CpuEvaluator::<f32>::new(&trained, &data)?.predict(&trained.params),
        Precision::F64 => CpuEvaluator::<f64>::new(&trained, &data)?.predict(&trained.params),
    };
    say!(
        "trained in {:.3} s ({:.1} µs per epoch)\n",
        history.seconds,
        1e6 * history.seconds / hyper.epochs as f64
    );
    say!("{}", report::format_params(&trained, 8).trim_end());
    say!("\npredictions for the training inputs:");
    say!(
        "{}",
        report::format_predictions(&data.x, &data.y, &predictions, 10).trim_end()
    );
    if let Some(path) = &args.save {
        trained.save(path)?;
        say!("saved the trained model to {}", path.display());
    }
    let report = Report {
        losses: history.losses.clone(),
        model: trained.to_file(),
        predictions,
        device,
        seconds: history.seconds,
        settings: Settings {
            epochs: hyper.epochs,
            lr: hyper.lr,
            eps: hyper.eps,
            precision: if precision == Precision::F32 {
                "f32"
            } else {
                "f64"
            }
            .into(),
            samples: data.len(),
        },
    };
    if let Some(path) = &args.report {
        report.save(path)?;
        say!("wrote the report to {}", path.display());
    }
    output::finish(&args.output, &report)
}

/// `central differences over exact steps`, `spsa, 4 rademacher directions per step`.
pub(crate) fn describe_estimator(h: &Hyper) -> String {
    match h.estimator {
        Estimator::Spsa { samples, direction } => format!(
            "spsa, {samples} {} direction{} per step, seed {}",
            direction.name(),
            if samples == 1 { "" } else { "s" },
            h.seed
        ),
        e => format!("{} differences over {} steps", e.name(), h.step.name()),
    }
}

/// The warning for nudges that vanished in float32, if any did.
pub(crate) fn vanished_warning(v: &Vanished, eps: f64) -> Option<String> {
    if !v.any() {
        return None;
    }
    let (k, w) = v.first_params[0];
    let w = if w.abs() < 1e6 {
        format!("{w}")
    } else {
        format!("{w:e}")
    };
    Some(format!(
        "warning: from epoch {} the nudge {eps} vanished in float32 for up to {} parameter(s) (w + eps == w), first parameter {k} at w = {w}: their gradient was taken as 0; a larger --eps avoids this",
        v.first_epoch, v.max_count
    ))
}

fn run<E: Evaluator>(
    ev: &mut E,
    model: &Model,
    hyper: &Hyper,
    precision: &str,
    method: Method,
) -> Result<(History, crate::train::DeviceInfo)> {
    let device = ev.device();
    say!(
        "device: {} — {} ({}), {precision}, {} method\n",
        device.kind,
        device.adapter,
        device.backend,
        method.name()
    );
    let start = Instant::now();
    let mut runs = [Run::new(*hyper, model.params.clone())];
    train::train_runs(ev, &mut runs, Control::default(), |e| {
        output::epoch(e.epoch, hyper.epochs, e.loss)
    })?;
    let [run] = runs;
    if let Some(w) = vanished_warning(&run.vanished, hyper.eps) {
        eprintln!("perturb: {w}");
    }
    if let Some(Outcome::Diverged { epoch, what }) = run.outcome {
        return Err(Error::Diverged { epoch, what });
    }
    let history = History {
        losses: run.losses,
        params: run.params,
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok((history, device))
}
