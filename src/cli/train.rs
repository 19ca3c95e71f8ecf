//! `perturb train`.

use super::output::{self, OutputArgs};
use super::value_name;
use super::{AdapterArgs, DeviceKind, EstimatorArgs, LoopArg, MethodArg, NetArgs, PrecisionArg};
use crate::checkpoint::{Checkpoint, GivenFlags, RunSettings};
use crate::cpu::CpuEvaluator;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::estimate::{Estimator, StepMode};
use crate::gpu::{GpuContext, GpuEvaluator, GpuOptions};
use crate::interrupt;
use crate::model::Model;
use crate::precision::Precision;
use crate::report::{self, Report, Settings};
use crate::train::{self, Control, DeviceInfo, Evaluator, Hyper, Method, Outcome, Run, Vanished};
use clap::{Args, ValueEnum};
use std::collections::BTreeMap;
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
    /// Checkpoint file (model, epochs done, losses, settings), written atomically at the end, every
    /// --checkpoint-every epochs, and when the run stops early [default: next to --save, else the
    /// resumed file; a run stopped early without either writes perturb.checkpoint.json].
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Also write the checkpoint every N epochs (0: only at the end and on a stop).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub checkpoint_every: usize,
    /// Continue the run in this checkpoint until --epochs in total (default: the checkpoint's);
    /// flags given again must agree with it.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["model", "layers", "activations"])]
    pub resume: Option<PathBuf>,
    /// Keep training when the loss or a parameter stops being finite (default: stop at that epoch,
    /// keep the last finite parameters, exit 6; the resident loop keeps those of the start of the
    /// batch of epochs it diverged in).
    #[arg(long)]
    pub allow_divergence: bool,
    /// Adapter choice.
    #[command(flatten)]
    pub adapter: AdapterArgs,
    /// Console output and plot.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Runs `perturb train`. `given(id)` says whether the flag with that argument id was given on
/// the command line (a resumed run takes the others from its checkpoint).
pub fn train(args: &TrainArgs, given: &dyn Fn(&str) -> bool) -> Result<()> {
    output::begin(&args.output)?;
    let setup = Setup::new(args, given)?;
    let (hyper, method, precision) = (setup.hyper, setup.method, setup.precision);
    let (model, data) = (&setup.model, &setup.data);
    say!(
        "perturb: {} network, {} parameters, {} sample{}, {} epochs, lr {}, eps {}",
        report::describe_model(model),
        model.num_params(),
        data.len(),
        if data.len() == 1 { "" } else { "s" },
        hyper.epochs,
        hyper.lr,
        hyper.eps
    );
    if hyper.estimator != Estimator::Forward || hyper.step != StepMode::Nominal {
        say!("estimator: {}", describe_estimator(&hyper));
    }
    if !setup.losses.is_empty() {
        say!(
            "resuming after epoch {} of {}",
            setup.losses.len(),
            hyper.epochs
        );
    }
    interrupt::install()?;
    let control = Control {
        stop: Some(interrupt::flag()),
        allow_divergence: args.allow_divergence,
    };
    let mut run = Run::new(hyper, model.params.clone());
    run.losses = setup.losses.clone();
    let start = Instant::now();
    let every = args.checkpoint_every;
    let saver = |params: &[f32], losses: &[f64]| setup.save_checkpoint(params, losses);
    let precision_name = if precision == Precision::F32 {
        "float32"
    } else {
        "float64"
    };
    let (device, result) = match (setup.device, precision) {
        (DeviceKind::Gpu, _) => {
            let ctx = GpuContext::new(&args.adapter.options())?;
            let opts = GpuOptions {
                method,
                shape: hyper.estimator.shape(),
                ..Default::default()
            };
            let mut gpu = GpuEvaluator::with_options(ctx, model, data, opts)?;
            if setup.loop_mode == LoopArg::Resident {
                let device = gpu.device();
                say!(
                    "device: {} — {} ({}), float32, {} method, resident loop\n",
                    device.kind,
                    device.adapter,
                    device.backend,
                    method.name()
                );
                let done = run.losses.len();
                let remaining = Hyper {
                    epochs: hyper.epochs - done,
                    ..hyper
                };
                let result = gpu
                    .train_resident(
                        &run.params,
                        &remaining,
                        args.epochs_per_submit,
                        control.stop,
                        |epoch, loss| output::epoch(done + epoch, hyper.epochs, loss),
                    )
                    .map(|h| {
                        run.outcome = Some(match h.outcome {
                            Outcome::Finished if h.losses.len() < remaining.epochs => {
                                Outcome::Stopped
                            }
                            Outcome::Diverged { epoch, what } => Outcome::Diverged {
                                epoch: done + epoch,
                                what,
                            },
                            outcome => outcome,
                        });
                        run.losses.extend(h.losses);
                        run.params = h.params;
                    });
                (device, result)
            } else {
                drive(
                    &mut gpu, &mut run, control, every, &saver, "float32", method,
                )
            }
        }
        (DeviceKind::Cpu, Precision::F32) => {
            let mut cpu = CpuEvaluator::<f32>::with_method(model, data, method)?;
            drive(
                &mut cpu,
                &mut run,
                control,
                every,
                &saver,
                precision_name,
                method,
            )
        }
        (DeviceKind::Cpu, Precision::F64) => {
            let mut cpu = CpuEvaluator::<f64>::with_method(model, data, method)?;
            drive(
                &mut cpu,
                &mut run,
                control,
                every,
                &saver,
                precision_name,
                method,
            )
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    if let Some(w) = vanished_warning(&run.vanished, hyper.eps) {
        eprintln!("perturb: {w}");
    }
    // A failed device keeps the epochs it completed: save them, then report the failure.
    if let Err(e) = result {
        return Err(match setup.save_checkpoint(&run.params, &run.losses) {
            Ok(Some(path)) => saved_note(e, &path, run.losses.len()),
            _ => e,
        });
    }
    let trained = model.with_params(run.params.clone())?;
    let predictions = match precision {
        Precision::F32 => CpuEvaluator::<f32>::new(&trained, data)?.predict(&trained.params),
        Precision::F64 => CpuEvaluator::<f64>::new(&trained, data)?.predict(&trained.params),
    };
    let ran = run.losses.len() - setup.losses.len();
    let report = Report {
        losses: run.losses.clone(),
        model: trained.to_file(),
        predictions,
        device,
        seconds,
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
            estimator: describe_estimator(&hyper),
        },
    };
    let outcome = run.outcome.clone().unwrap_or_default();
    if outcome != Outcome::Finished {
        let saved = setup.save_checkpoint(&run.params, &run.losses)?;
        if let Some(path) = &args.report {
            report.save(path)?;
        }
        let epoch = run.losses.len();
        return Err(match outcome {
            Outcome::Diverged { epoch, what } => Error::Diverged {
                epoch,
                what: match saved {
                    Some(p) => format!(
                        "{what}; the last finite parameters (after epoch {}) are saved in {}",
                        run.losses.len(),
                        p.display()
                    ),
                    None => what,
                },
            },
            _ => Error::Interrupted {
                epoch,
                checkpoint: saved,
            },
        });
    }
    if args.checkpoint.is_some() || args.resume.is_some() {
        if let Some(path) = setup.save_checkpoint(&run.params, &run.losses)? {
            say!("wrote the checkpoint to {}", path.display());
        }
    }
    say!(
        "trained in {:.3} s ({:.1} µs per epoch)\n",
        seconds,
        1e6 * seconds / ran.max(1) as f64
    );
    say!("{}", report::format_params(&trained, 8).trim_end());
    say!("\npredictions for the training inputs:");
    say!(
        "{}",
        report::format_predictions(&data.x, &data.y, &report.predictions, 10).trim_end()
    );
    if let Some(path) = &args.save {
        crate::files::save_model(&trained, path)?;
        say!("saved the trained model to {}", path.display());
    }
    if let Some(path) = &args.report {
        report.save(path)?;
        say!("wrote the report to {}", path.display());
    }
    output::finish(&args.output, &report)
}

/// Where a checkpoint goes when no --checkpoint is given and the run has to stop early.
pub const FALLBACK_CHECKPOINT: &str = "perturb.checkpoint.json";

/// Everything a run is set up from: the flags, or a checkpoint and the flags given again.
struct Setup {
    hyper: Hyper,
    method: Method,
    precision: Precision,
    device: DeviceKind,
    loop_mode: LoopArg,
    model: Model,
    data: Dataset,
    /// Losses of the epochs a resumed checkpoint already ran.
    losses: Vec<f64>,
    /// The checkpoint's settings (without the epoch count and losses, filled at each save).
    settings: RunSettings,
    /// `--checkpoint`, else the resumed file, else next to `--save`.
    checkpoint: Option<PathBuf>,
}

impl Setup {
    fn new(args: &TrainArgs, given: &dyn Fn(&str) -> bool) -> Result<Setup> {
        let resumed = args.resume.as_deref().map(Checkpoint::load).transpose()?;
        let mut extra = BTreeMap::new();
        extra.insert("estimator".into(), value_name(args.estimator.estimator));
        extra.insert("step".into(), value_name(args.estimator.step));
        extra.insert("samples".into(), args.estimator.samples.to_string());
        extra.insert("direction".into(), value_name(args.estimator.direction));
        let data_path = args.net.data.clone().or_else(|| {
            resumed
                .as_ref()
                .and_then(|c| c.settings.data.as_ref())
                .map(|d| PathBuf::from(&d.path))
        });
        let model = match &resumed {
            Some(c) => c.model.clone(),
            None => args.net.model(args.seed.unwrap_or(0))?,
        };
        // One read of the file: the loader's bytes are also what the checkpoint's hash covers.
        let (data, data_ref) = match &data_path {
            Some(path) => {
                let (d, r) = crate::files::load_data_referenced(path, &model)?;
                d.check_fits(&model, &path.display().to_string())?;
                (d, r)
            }
            None => (args.net.data(&model)?, None),
        };
        let mut settings = RunSettings {
            epochs: args.epochs,
            lr: args.lr,
            eps: args.eps,
            seed: args.seed,
            precision: value_name(args.precision),
            method: value_name(args.method),
            device: value_name(args.device),
            loop_mode: value_name(args.loop_mode),
            data: data_ref.clone(),
            extra,
        };
        let losses = match &resumed {
            Some(c) => {
                let pick = |id: &str| given(id).then_some(());
                let flags = GivenFlags {
                    epochs: pick("epochs").map(|_| args.epochs),
                    lr: pick("lr").map(|_| args.lr),
                    eps: pick("eps").map(|_| args.eps),
                    seed: pick("seed").and(args.seed),
                    precision: pick("precision").map(|_| settings.precision.clone()),
                    method: pick("method").map(|_| settings.method.clone()),
                    device: pick("device").map(|_| settings.device.clone()),
                    loop_mode: pick("loop_mode").map(|_| settings.loop_mode.clone()),
                    // The data trained on now, given again or not, must be the checkpoint's.
                    data: data_ref.clone(),
                    extra: settings
                        .extra
                        .iter()
                        .filter(|(k, _)| given(k))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                };
                c.check_resume(&flags)?;
                let epochs = if given("epochs") {
                    args.epochs
                } else {
                    c.settings.epochs
                };
                settings = RunSettings {
                    epochs,
                    data: data_ref,
                    ..c.settings.clone()
                };
                c.losses.clone()
            }
            None => Vec::new(),
        };
        let estimator = EstimatorArgs::from_names(&settings.extra)?;
        let (estimator, step) = estimator.get();
        let hyper = Hyper {
            epochs: settings.epochs,
            lr: settings.lr,
            eps: settings.eps,
            estimator,
            step,
            seed: settings.seed.unwrap_or(0),
        };
        hyper.validate()?;
        let parse = |what: &str, name: &str| Error::Checkpoint {
            origin: "checkpoint".into(),
            message: format!("unknown {what} {name:?}"),
        };
        let precision = match PrecisionArg::from_str(&settings.precision, false) {
            Ok(PrecisionArg::F32) => Precision::F32,
            Ok(PrecisionArg::F64) => Precision::F64,
            Err(_) => return Err(parse("precision", &settings.precision)),
        };
        let method = MethodArg::from_str(&settings.method, false)
            .map(Method::from)
            .map_err(|_| parse("method", &settings.method))?;
        let device = DeviceKind::from_str(&settings.device, false)
            .map_err(|_| parse("device", &settings.device))?;
        let loop_mode = LoopArg::from_str(&settings.loop_mode, false)
            .map_err(|_| parse("loop", &settings.loop_mode))?;
        if precision == Precision::F64 && device == DeviceKind::Gpu {
            return Err(Error::Config(
                "--precision f64 runs on the CPU only (the GPU computes in float32); add --device cpu"
                    .into(),
            ));
        }
        if loop_mode == LoopArg::Resident && device != DeviceKind::Gpu {
            return Err(Error::Config(
                "--loop resident runs the update on the GPU; it needs --device gpu".into(),
            ));
        }
        if matches!(estimator, Estimator::Spsa { .. }) && method == Method::Reuse {
            return Err(Error::Config(
                "--estimator spsa moves every parameter at once, so --method reuse has nothing to reuse; use --method naive".into(),
            ));
        }
        if args.checkpoint_every > 0 && loop_mode == LoopArg::Resident {
            return Err(Error::Config(
                "--checkpoint-every needs the host loop (the resident loop keeps the parameters on the GPU)".into(),
            ));
        }
        if args.allow_divergence && loop_mode == LoopArg::Resident {
            return Err(Error::Config(
                "--allow-divergence needs the host loop".into(),
            ));
        }
        let checkpoint = args
            .checkpoint
            .clone()
            .or_else(|| args.resume.clone())
            .or_else(|| {
                args.save
                    .as_ref()
                    .map(|s| s.with_extension("checkpoint.json"))
            });
        if args.checkpoint_every > 0 && checkpoint.is_none() {
            return Err(Error::Config(
                "--checkpoint-every needs --checkpoint FILE (or --save, next to which it goes)"
                    .into(),
            ));
        }
        Ok(Setup {
            hyper,
            method,
            precision,
            device,
            loop_mode,
            model,
            data,
            losses,
            settings,
            checkpoint,
        })
    }

    /// Writes a checkpoint of `params` after `losses.len()` epochs (atomically) to the checkpoint
    /// path, or to [`FALLBACK_CHECKPOINT`] when there is none (only runs that end early save
    /// without one). Returns where it went.
    fn save_checkpoint(&self, params: &[f32], losses: &[f64]) -> Result<Option<PathBuf>> {
        let path = self
            .checkpoint
            .clone()
            .unwrap_or_else(|| PathBuf::from(FALLBACK_CHECKPOINT));
        let ck = Checkpoint {
            model: self.model.with_params(params.to_vec())?,
            epochs_done: losses.len(),
            losses: losses.to_vec(),
            settings: self.settings.clone(),
        };
        ck.save_atomic(&path)?;
        Ok(Some(path))
    }
}

/// `e` with a note of where the run so far was saved.
fn saved_note(e: Error, path: &std::path::Path, epochs: usize) -> Error {
    let note = format!(
        "; the run so far ({epochs} epochs) is saved in {}",
        path.display()
    );
    match e {
        Error::Gpu(m) => Error::Gpu(m + &note),
        Error::LoopCap {
            kernel,
            cap,
            adapter,
            ..
        } => Error::LoopCap {
            kernel,
            cap,
            adapter,
            checkpoint: Some(path.to_path_buf()),
        },
        other => other,
    }
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

/// Writes a checkpoint of (parameters, losses so far); returns where.
type SaveFn<'a> = dyn Fn(&[f32], &[f64]) -> Result<Option<PathBuf>> + 'a;

/// The host loop of one run: trains `run` in place (so a failure leaves it at its last completed
/// epoch), writing a checkpoint every `every` epochs through `save`.
fn drive<E: Evaluator>(
    ev: &mut E,
    run: &mut Run,
    control: Control<'_>,
    every: usize,
    save: &SaveFn<'_>,
    precision: &str,
    method: Method,
) -> (DeviceInfo, Result<()>) {
    let device = ev.device();
    say!(
        "device: {} — {} ({}), {precision}, {} method\n",
        device.kind,
        device.adapter,
        device.backend,
        method.name()
    );
    let epochs = run.hyper.epochs;
    let mut losses = run.losses.clone();
    let mut save_error = None;
    let result = train::train_runs(ev, std::slice::from_mut(run), control, |e| {
        output::epoch(e.epoch, epochs, e.loss);
        losses.push(e.loss);
        if every > 0 && e.epoch % every == 0 && save_error.is_none() {
            save_error = save(e.params, &losses).err();
        }
    });
    (device, result.and(save_error.map_or(Ok(()), Err)))
}
