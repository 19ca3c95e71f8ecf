//! `perturb train`.

use super::interrupt;
use super::output::{self, OutputArgs};
use super::outputs::{kept_note, with_notes, Lock, Outputs, Want};
use super::{
    AdapterArgs, DeviceArg, EstimatorArgs, LoopArg, LossArg, MethodArg, NetArgs, OptimizerArg,
    PrecisionArg,
};
use crate::checkpoint::{Checkpoint, GivenFlags, History, RunSettings};
use crate::cpu::CpuEvaluator;
use crate::data::Dataset;
use crate::error::{Error, Fix, Result, Setting};
use crate::estimate::{Estimator, StepMode};
use crate::metrics::Evaluation;
use crate::model::{Loss, Model};
use crate::optim::{Optimizer, DEFAULT_ADAM_EPS, DEFAULT_BETA1, DEFAULT_BETA2, DEFAULT_MOMENTUM};
use crate::precision::Precision;
use crate::report::{self, Report, Settings, ValHistory};
use crate::session::{Finished, Loop, Training};
use crate::settings::{Batching, DeviceInfo, DeviceKind, Hyper, LoopKind, Method, Named, Outcome};
use crate::train::{Run, Vanished};
use clap::Args;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

/// `perturb train` options.
#[derive(Debug, Args, Clone)]
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
    /// The loss: mse (the book's) or cross-entropy (softmax over an identity output layer).
    #[arg(long, value_enum, default_value_t = LossArg::Mse)]
    pub loss: LossArg,
    /// Samples per step: an epoch visits every sample once in batches of N, the last holding the
    /// remainder [default: every sample, the book's full batch].
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Keep file order in every epoch instead of a fresh seeded order (--seed) per epoch.
    #[arg(long)]
    pub no_shuffle: bool,
    /// The update rule.
    #[arg(long, value_enum, default_value_t = OptimizerArg::Sgd)]
    pub optimizer: OptimizerArg,
    /// Momentum factor μ (--optimizer momentum).
    #[arg(long, default_value_t = DEFAULT_MOMENTUM)]
    pub momentum: f64,
    /// Adam's first-moment decay (--optimizer adam).
    #[arg(long, default_value_t = DEFAULT_BETA1)]
    pub beta1: f64,
    /// Adam's second-moment decay (--optimizer adam).
    #[arg(long, default_value_t = DEFAULT_BETA2)]
    pub beta2: f64,
    /// Adam's epsilon (--optimizer adam).
    #[arg(long, default_value_t = DEFAULT_ADAM_EPS)]
    pub adam_eps: f64,
    /// Validation data (same forms as --data, e.g. fashion-mnist:test): its loss, and accuracy for
    /// class labels, after every epoch.
    #[arg(long, value_name = "FILE", conflicts_with = "val_split")]
    pub val_data: Option<PathBuf>,
    /// Hold out this fraction of --data (a seeded choice, --seed) for validation.
    #[arg(long, value_name = "F")]
    pub val_split: Option<f64>,
    /// Where the nudged losses are computed.
    #[arg(long, value_enum, default_value_t = DeviceArg::Gpu)]
    pub device: DeviceArg,
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
    /// Splitting steps over adapters.
    #[command(flatten)]
    pub scale: super::ScaleArgs,
    /// Splitting steps over MPI ranks.
    #[command(flatten)]
    pub distributed: super::scale::DistributedArgs,
    /// Console output and plot.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Runs `perturb train`. `given(id)` says whether the flag with that argument id was given on
/// the command line (a resumed run takes the others from its checkpoint). `mpi` is
/// the MPI [`Session`](super::Session) of `args.distributed`, held by the caller
/// until the run's error line is printed.
pub fn train(args: &TrainArgs, given: &dyn Fn(&str) -> bool, mpi: &super::Session) -> Result<()> {
    // Ranks other than 0 (--distributed) print and write nothing.
    let silent;
    let writes = args.distributed.rank(mpi) == 0;
    let args = match writes {
        true => args,
        _ => {
            silent = TrainArgs {
                report: None,
                save: None,
                checkpoint: None,
                checkpoint_every: 0,
                // Quiet draws no progress bar; muted prints not even the summary.
                output: output::OutputArgs {
                    quiet: true,
                    ..Default::default()
                },
                ..args.clone()
            };
            output::mute();
            &silent
        }
    };
    output::begin(&args.output)?;
    let mut setup = Setup::new(args, given)?;
    // Held until the run returns: no second run writes this checkpoint meanwhile. The other
    // ranks write nothing, not even a stopped run's checkpoint (rank 0 saves it), so they claim
    // nothing and take no lock.
    let (targets, _lock) = match writes {
        true => claim_outputs(args, &mut setup)?,
        false => {
            setup.checkpoint = None;
            setup.writes = false;
            (Targets::none(), None)
        }
    };
    setup.announce();
    interrupt::install()?;
    let (done, saved) = setup.run(args)?;
    let run = done.runs.into_iter().next().expect("one run");
    if let Some(w) = vanished_warning(&run.vanished, setup.hyper.eps) {
        eprintln!("perturb: {w}");
    }
    // The resumed epochs' measurements, then this run's.
    let mut history = setup.history.clone();
    for v in &done.val {
        record(&mut history, Some(v), None);
    }
    history.train_accuracy.extend(&done.train_accuracy);
    // A failed device keeps the epochs it completed: save them, then report the failure.
    if let Some(e) = done.fault {
        return Err(match setup.save_checkpoint(&run, &history) {
            Ok(Some(path)) => saved_note(e, &path, run.losses.len()),
            _ => e,
        });
    }
    let ran = Ran {
        device: done.device,
        seconds: done.seconds,
        history,
        broken: saved,
    };
    setup.finish(args, &targets, run, ran)
}

/// Where a checkpoint goes when no --checkpoint is given and the run has to stop early.
pub const FALLBACK_CHECKPOINT: &str = "perturb.checkpoint.json";

/// Everything a run is set up from: the flags, or a checkpoint and the flags given again.
struct Setup {
    hyper: Hyper,
    model: Model,
    data: Dataset,
    /// Validation data (`--val-data`, or held out by `--val-split`).
    val: Option<Dataset>,
    /// Where training starts: fresh, or where a resumed checkpoint stopped.
    start: Run,
    /// The run's settings as a checkpoint records them (epochs and losses filled at each save).
    settings: RunSettings,
    /// `--checkpoint`, else the resumed file, else next to `--save`.
    checkpoint: Option<PathBuf>,
    /// The resumed checkpoint's measurements after each of its epochs (empty for a fresh run).
    history: History,
    /// False on MPI ranks other than 0, which save no checkpoint, not even the fallback.
    writes: bool,
}

impl Setup {
    fn new(args: &TrainArgs, given: &dyn Fn(&str) -> bool) -> Result<Setup> {
        let resumed = args.resume.as_deref().map(Checkpoint::load).transpose()?;
        let data_path = resume_data_path(args, resumed.as_ref())?;
        let model = match &resumed {
            Some(c) => c.model.clone(),
            None => args.net.model(args.seed.unwrap_or(0))?,
        };
        // The data's targets are read for the loss (class labels for cross-entropy); a resumed
        // run takes the loss, the samples and the split of its checkpoint unless given again.
        let (loss, take, val_split) = match &resumed {
            Some(c) => (
                if given("loss") {
                    args.loss.into()
                } else {
                    c.settings.loss
                },
                if given("take") {
                    args.net.take
                } else {
                    c.settings.take.and_then(NonZeroUsize::new)
                },
                if given("val_split") {
                    args.val_split
                } else {
                    c.settings.val_split
                },
            ),
            None => (args.loss.into(), args.net.take, args.val_split),
        };
        // One read of the file: the loader's bytes are also what the checkpoint's hash covers.
        let (data, data_ref) = match &data_path {
            Some(path) => {
                let (d, r) = super::load_data(path, &model, loss, take)?;
                d.check_fits(&model, &path.display().to_string())?;
                (d, r)
            }
            None => (args.net.data(&model, loss)?, None),
        };
        let mut settings = RunSettings {
            epochs: args.epochs,
            lr: args.lr,
            eps: args.eps,
            seed: args.seed,
            precision: args.precision.into(),
            method: args.method.into(),
            device: args.device.into(),
            loop_mode: args.loop_mode.into(),
            data: data_ref,
            estimator: args.estimator.choice(),
            loss: args.loss.into(),
            batching: Batching {
                size: args.batch_size.unwrap_or(0),
                shuffle: !args.no_shuffle,
            },
            optimizer: optimizer(args),
            take: take.map(|n| n.get()),
            val_split,
        };
        if args.batch_size == Some(0) {
            return Err(Error::invalid(Setting::BatchSize, "must be at least 1"));
        }
        if let Some(c) = &resumed {
            settings = resumed_settings(c, &settings, given)?;
        }
        let (estimator, step) = settings.estimator.get();
        let hyper = Hyper {
            epochs: settings.epochs,
            lr: settings.lr,
            eps: settings.eps,
            estimator,
            step,
            seed: settings.seed.unwrap_or(0),
        };
        hyper.validate()?;
        settings.optimizer.validate()?;
        check_combination(args, &settings, estimator)?;
        let (data, val) = validation(args, data, &model, loss, hyper.seed, val_split)?;
        let mut start = Run::new(hyper, model.params.clone()).with_optimizer(settings.optimizer);
        let history = resumed
            .as_ref()
            .map_or_else(History::default, |c| c.history.clone());
        if let Some(c) = resumed {
            start.losses = c.losses;
            start.step_losses = c.step_losses;
            start.state = c.state;
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
            return Err(Error::invalid(
                Setting::CheckpointEvery,
                "needs a checkpoint file: give --checkpoint FILE (or --save, next to which it goes)",
            ));
        }
        Ok(Setup {
            hyper,
            model,
            data,
            val,
            start,
            settings,
            checkpoint,
            history,
            writes: true,
        })
    }

    /// The first lines: the network, the data, the settings, a resume.
    fn announce(&self) {
        let (hyper, model, data) = (&self.hyper, &self.model, &self.data);
        say!(
            "perturb: {} network, {} parameters, {} sample{}, {} epochs, lr {}, eps {}",
            report::describe_model(model),
            model.num_params(),
            data.len(),
            if data.len() == 1 { "" } else { "s" },
            hyper.epochs,
            report::compact(hyper.lr),
            report::compact(hyper.eps)
        );
        if hyper.estimator != Estimator::Forward || hyper.step != StepMode::Nominal {
            say!("estimator: {}", describe_estimator(hyper));
        }
        let s = &self.settings;
        if s.loss != Loss::Mse || !s.batching.is_full(data.len()) || s.optimizer != Optimizer::Sgd {
            say!(
                "loss {}, {}, optimizer {}",
                s.loss.name(),
                match s.batching.is_full(data.len()) {
                    true => "full batch".to_string(),
                    false => format!("batches of {}", s.batching.size),
                },
                s.optimizer.name()
            );
        }
        if !self.start.losses.is_empty() {
            say!(
                "resuming after epoch {} of {}",
                self.start.losses.len(),
                hyper.epochs
            );
        }
    }

    /// Trains through the library's [`Training`], printing each epoch and writing a checkpoint
    /// every `--checkpoint-every` epochs. Returns what training produced and the first failed
    /// periodic checkpoint write, if any.
    fn run(&self, args: &TrainArgs) -> Result<(Finished, Option<Error>)> {
        let s = &self.settings;
        let device = args.scale.device(s.device, &args.adapter, s.precision)?;
        let looping = match s.loop_mode {
            LoopKind::Host => Loop::Host,
            // Periodic checkpoints need every epoch's parameters: one epoch per submission.
            LoopKind::Resident if args.checkpoint_every > 0 => Loop::Resident(1),
            LoopKind::Resident => Loop::Resident(args.epochs_per_submit),
        };
        let (epochs, every) = (self.hyper.epochs, args.checkpoint_every);
        let mut save_error = None;
        let mut history = self.history.clone();
        let mut training = Training::new(self.model.clone(), self.data.clone());
        training = args.distributed.attach(training, s.device, &args.adapter)?;
        if let Some(val) = &self.val {
            training = training.validation(val.clone());
        }
        let done = training
            .device(device)
            .method(s.method)
            .loss(s.loss)
            .batching(s.batching)
            .looping(looping)
            .runs(vec![self.start.clone()])
            .stop_on(interrupt::flag())
            .allow_divergence(args.allow_divergence)
            .on_ready(|d| {
                let precision = match s.precision {
                    Precision::F32 => "float32",
                    Precision::F64 => "float64",
                };
                let resident = if looping == Loop::Host {
                    ""
                } else {
                    ", resident loop"
                };
                say!(
                    "device: {} — {} ({}), {precision}, {} method{resident}\n",
                    d.kind,
                    d.adapter,
                    d.backend,
                    s.method.name()
                );
            })
            .on_epoch(|e| {
                output::epoch(
                    e.epoch,
                    epochs,
                    e.loss,
                    &epoch_extra(e.val, e.train_accuracy),
                );
                record(&mut history, e.val, e.train_accuracy);
                if every > 0 && e.epoch % every == 0 && save_error.is_none() {
                    let mut at = self.start.clone();
                    at.params = e.params.to_vec();
                    at.losses = e.losses.to_vec();
                    at.step_losses = e.step_losses.to_vec();
                    at.state = e.state.clone();
                    if let Err(err) = self.save_checkpoint(&at, &history) {
                        checkpoint_failed(&err, e.epoch);
                        save_error = Some(err);
                    }
                }
            })
            .run_all()?;
        Ok((done, save_error))
    }

    /// After a run: the outcome (a divergence, a stop or a failed periodic checkpoint saves what
    /// it can and fails), then the console summary and every output, each written whether or not
    /// another failed.
    fn finish(&self, args: &TrainArgs, targets: &Targets, run: Run, ran: Ran) -> Result<()> {
        let trained = self.model.with_params(run.params.clone())?;
        // Every sample's prediction goes into a report file; the console shows the first few only.
        let rows = match targets.report {
            Some(_) => self.data.len(),
            None => SHOWN_PREDICTIONS,
        };
        let mut report = self.report(&trained, &run, ran.device, ran.seconds, rows)?;
        report.val = self.val.as_ref().map(|_| ValHistory {
            loss: ran.history.val_loss.clone(),
            accuracy: ran.history.val_accuracy.clone(),
        });
        report.train_accuracy = ran.history.train_accuracy.clone();
        let outcome = run.outcome.clone().unwrap_or_default();
        if outcome != Outcome::Finished || ran.broken.is_some() {
            return Err(self.stopped_early(
                targets,
                &run,
                &ran.history,
                &report,
                outcome,
                ran.broken,
            ));
        }
        let mut failed = Vec::new();
        let asked = args.checkpoint.is_some() || args.resume.is_some();
        let mut kept = None;
        if asked {
            match self.save_checkpoint(&run, &ran.history) {
                Ok(Some(path)) => {
                    say!("wrote the checkpoint to {}", path.display());
                    kept = Some(path);
                }
                Ok(None) => {}
                Err(e) => failed.push(e),
            }
        }
        let ran_epochs = run.losses.len() - self.start.losses.len();
        let seconds = ran.seconds;
        let per = seconds / ran_epochs.max(1) as f64;
        let per = match per >= 0.1 {
            true => format!("{per:.2} s"),
            false => format!("{:.1} µs", 1e6 * per),
        };
        say!("trained in {seconds:.3} s ({per} per epoch)\n");
        say!("{}", report::format_params(&trained, 8).trim_end());
        say!("\npredictions for the training inputs:");
        say!(
            "{}",
            report::format_predictions(
                &self.data.x,
                &self.data.y,
                &report.predictions,
                SHOWN_PREDICTIONS
            )
            .trim_end()
        );
        if let Some(path) = &targets.save {
            match crate::files::save_model(&trained, path) {
                Ok(()) => say!("saved the trained model to {}", path.display()),
                Err(e) => failed.push(e),
            }
        }
        if let Some(path) = &targets.report {
            match report.save(path) {
                Ok(()) => say!("wrote the report to {}", path.display()),
                Err(e) => failed.push(e),
            }
        }
        if let Some(path) = &targets.plot {
            match output::plot(&args.output, path, &report) {
                Ok(()) => say!("wrote the loss plot to {}", path.display()),
                Err(e) => failed.push(e),
            }
        }
        if let Err(e) = output::finish(&report) {
            failed.push(e);
        }
        if failed.is_empty() {
            return Ok(());
        }
        // The trained model outlives any failed output: in the checkpoint, else the fallback.
        let (kept, more) = match kept {
            Some(path) => (Some(path), Vec::new()),
            None => self.keep(targets, &run, &ran.history, asked),
        };
        failed.extend(more);
        Err(with_notes(failed, &kept_note("the trained model", kept)))
    }

    /// A run that stopped before its last epoch (a stop request, a divergence, or a periodic
    /// checkpoint that could not be written: `broken`): the run so far goes to the checkpoint (or
    /// the fallback), the report is written, and the error says why it stopped and where it is.
    fn stopped_early(
        &self,
        targets: &Targets,
        run: &Run,
        history: &History,
        report: &Report,
        outcome: Outcome,
        broken: Option<Error>,
    ) -> Error {
        let (saved, mut failed) = self.keep(targets, run, history, broken.is_some());
        if let Some(path) = &targets.report {
            if let Err(e) = report.save(path) {
                failed.push(e);
            }
        }
        let epochs = run.losses.len();
        if let Some(e) = broken {
            failed.insert(0, e);
            let what = format!("the run so far ({epochs} epochs)");
            return with_notes(failed, &kept_note(&what, saved));
        }
        // The stop or the divergence is the error; it names the checkpoint, or the failed write
        // when nothing could be saved; any other failed output is said on its own line first.
        let saved = match saved {
            Some(path) => Ok(Some(path)),
            None if failed.is_empty() => Ok(None),
            None => Err(failed.remove(0)),
        };
        for e in &failed {
            eprintln!("perturb: could not write {}", super::exit::message(e));
        }
        ended_early(outcome, epochs, saved).unwrap_or_else(|e| e)
    }

    /// Saves `run` where it can: the checkpoint, unless a write of it already failed (`tried`), else
    /// the fallback. Returns where it went, and the writes that failed.
    fn keep(
        &self,
        targets: &Targets,
        run: &Run,
        history: &History,
        tried: bool,
    ) -> (Option<PathBuf>, Vec<Error>) {
        let mut failed = Vec::new();
        let first = self.checkpoint.as_ref().filter(|_| !tried);
        for path in first.into_iter().chain(&targets.fallback) {
            match self.save_checkpoint_to(run, history, path) {
                Ok(()) => return (Some(path.clone()), failed),
                Err(e) => failed.push(e),
            }
        }
        (None, failed)
    }

    /// The report of a run: losses, the trained model, its predictions in the run's precision
    /// for the first `rows` samples (a prediction depends on its own sample only).
    fn report(
        &self,
        trained: &Model,
        run: &Run,
        device: DeviceInfo,
        seconds: f64,
        rows: usize,
    ) -> Result<Report> {
        let (hyper, data) = (&self.hyper, &self.data);
        let shown;
        let predicted = match rows < data.len() {
            true => {
                shown = data.head(rows);
                &shown
            }
            false => data,
        };
        let predictions = match self.settings.precision {
            Precision::F32 => {
                CpuEvaluator::<f32>::new(trained, predicted)?.predict(&trained.params)
            }
            Precision::F64 => {
                CpuEvaluator::<f64>::new(trained, predicted)?.predict(&trained.params)
            }
        };
        Ok(Report {
            losses: run.losses.clone(),
            step_losses: run.step_losses.clone(),
            val: None,
            train_accuracy: Vec::new(),
            model: trained.to_file(),
            predictions,
            device,
            seconds,
            settings: Settings {
                epochs: hyper.epochs,
                lr: hyper.lr,
                eps: hyper.eps,
                precision: self.settings.precision.name().into(),
                samples: data.len(),
                estimator: describe_estimator(hyper),
                loss: self.settings.loss.name().into(),
                batch_size: match self.settings.batching.is_full(data.len()) {
                    true => data.len(),
                    false => self.settings.batching.size,
                },
                optimizer: self.settings.optimizer,
            },
        })
    }

    /// Writes a checkpoint of `run` as it stands (atomically) to the checkpoint
    /// path, or to [`FALLBACK_CHECKPOINT`] when there is none (only runs that end early save
    /// without one). Returns where it went.
    fn save_checkpoint(&self, run: &Run, history: &History) -> Result<Option<PathBuf>> {
        if !self.writes {
            return Ok(None);
        }
        let path = self
            .checkpoint
            .clone()
            .unwrap_or_else(|| PathBuf::from(FALLBACK_CHECKPOINT));
        self.save_checkpoint_to(run, history, &path)?;
        Ok(Some(path))
    }

    /// Writes a checkpoint of `run` as it stands to `path`, atomically.
    fn save_checkpoint_to(&self, run: &Run, history: &History, path: &Path) -> Result<()> {
        let ck = Checkpoint {
            model: self.model.with_params(run.params.clone())?,
            epochs_done: run.losses.len(),
            losses: run.losses.clone(),
            step_losses: run.step_losses.clone(),
            state: run.state.clone(),
            settings: self.settings.clone(),
            history: history.clone(),
        };
        ck.save_atomic(path)
    }
}

/// The data a run trains on: `--data`, else (on resume) the file the checkpoint recorded, which
/// [`Checkpoint::check_resume`] then verifies by size and hash. A run on a pipe cannot be read
/// again from its path, so its resume needs `--data`.
fn resume_data_path(args: &TrainArgs, resumed: Option<&Checkpoint>) -> Result<Option<PathBuf>> {
    if args.net.data.is_some() {
        return Ok(args.net.data.clone());
    }
    let Some(c) = resumed else {
        return Ok(None);
    };
    match &c.settings.data {
        Some(d) if d.stream => Err(Error::invalid(
            Setting::Data,
            format!(
                "the checkpoint trained on a pipe or device ({}, {} bytes, fnv1a64 {}), which cannot be read again: give --data with the same bytes",
                d.path,
                d.bytes,
                d.fnv1a64
            ),
        )),
        Some(d) => Ok(Some(PathBuf::from(&d.path))),
        // Every data form is recorded, pipes included: no record means the book's sample.
        None => Ok(None),
    }
}

/// The settings of a resumed run: the checkpoint's, checked against the flags given again (which
/// must agree with it, except `--epochs`), on the data read now.
fn resumed_settings(
    c: &Checkpoint,
    flags: &RunSettings,
    given: &dyn Fn(&str) -> bool,
) -> Result<RunSettings> {
    let pick = |id: &str| given(id).then_some(());
    let e = &flags.estimator;
    let again = GivenFlags {
        epochs: pick("epochs").map(|_| flags.epochs),
        lr: pick("lr").map(|_| flags.lr),
        eps: pick("eps").map(|_| flags.eps),
        seed: pick("seed").and(flags.seed),
        precision: pick("precision").map(|_| flags.precision),
        method: pick("method").map(|_| flags.method),
        device: pick("device").map(|_| flags.device),
        loop_mode: pick("loop_mode").map(|_| flags.loop_mode),
        // The data trained on now, given again or not, must be the checkpoint's.
        data: flags.data.clone(),
        estimator: pick("estimator").map(|_| e.estimator),
        step: pick("step").map(|_| e.step),
        samples: pick("samples").map(|_| e.samples),
        direction: pick("direction").map(|_| e.direction),
        loss: pick("loss").map(|_| flags.loss),
        batch_size: pick("batch_size").map(|_| flags.batching.size),
        shuffle: pick("no_shuffle").map(|_| flags.batching.shuffle),
        optimizer: ["optimizer", "momentum", "beta1", "beta2", "adam_eps"]
            .iter()
            .any(|id| given(id))
            .then_some(flags.optimizer),
        take: pick("take").map(|_| flags.take),
        val_split: pick("val_split").map(|_| flags.val_split),
    };
    c.check_resume(&again)?;
    Ok(RunSettings {
        epochs: again.epochs.unwrap_or(c.settings.epochs),
        data: flags.data.clone(),
        ..c.settings.clone()
    })
}

/// Refuses combinations of settings that cannot run together.
fn check_combination(args: &TrainArgs, s: &RunSettings, estimator: Estimator) -> Result<()> {
    let resident = s.loop_mode == LoopKind::Resident;
    let refuse = |given: &[(Setting, &str)], what: &str, fix: Fix| {
        Err(Error::refused(given, what, Some(fix)))
    };
    if s.precision == Precision::F64 && s.device == DeviceKind::Gpu {
        return refuse(
            &[(Setting::Precision, "f64")],
            "runs on the CPU only (the GPU computes in float32)",
            Fix::Use(Setting::Device, "cpu"),
        );
    }
    if resident && s.device != DeviceKind::Gpu {
        return refuse(
            &[(Setting::Loop, "resident")],
            "runs the update on the GPU",
            Fix::Use(Setting::Device, "gpu"),
        );
    }
    if matches!(estimator, Estimator::Spsa { .. }) && s.method == Method::Reuse {
        return refuse(
            &[(Setting::Estimator, "spsa"), (Setting::Method, "reuse")],
            "SPSA moves every parameter at once, so there is nothing to reuse",
            Fix::Use(Setting::Method, "naive"),
        );
    }
    if args.allow_divergence && resident {
        return refuse(
            &[(Setting::AllowDivergence, ""), (Setting::Loop, "resident")],
            "continuing past a divergence needs the host loop",
            Fix::Use(Setting::Loop, "host"),
        );
    }
    Ok(())
}

/// The error of a run that diverged or was stopped, saying where it was saved. A divergence
/// stays the error (exit 6) when its checkpoint could not be written, and names that failure;
/// a stopped run whose checkpoint failed reports the failure.
fn ended_early(outcome: Outcome, epochs: usize, saved: Result<Option<PathBuf>>) -> Result<Error> {
    Ok(match outcome {
        Outcome::Diverged { epoch, what } => Error::Diverged {
            epoch,
            what: match saved {
                Ok(Some(p)) => format!(
                    "{what}; the last finite parameters (after epoch {epochs}) are saved in {}",
                    p.display()
                ),
                Ok(None) => what,
                Err(e) => format!(
                    "{what}; the checkpoint of the last finite parameters could not be written: {}",
                    super::exit::message(&e)
                ),
            },
        },
        _ => Error::Interrupted {
            epoch: epochs,
            checkpoint: saved?,
        },
    })
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

/// The update rule the flags ask for.
fn optimizer(args: &TrainArgs) -> Optimizer {
    match args.optimizer {
        OptimizerArg::Sgd => Optimizer::Sgd,
        OptimizerArg::Momentum => Optimizer::Momentum {
            momentum: args.momentum,
        },
        OptimizerArg::Adam => Optimizer::Adam {
            beta1: args.beta1,
            beta2: args.beta2,
            eps: args.adam_eps,
        },
    }
}

/// Appends one epoch's measurements to `history`.
fn record(history: &mut History, val: Option<&Evaluation>, train_accuracy: Option<f64>) {
    if let Some(v) = val {
        history.val_loss.push(v.loss);
        history.val_accuracy.extend(v.accuracy);
    }
    history.train_accuracy.extend(train_accuracy);
}

/// `  train acc 81.20%  val loss 0.51234567  val acc 80.10%` after an epoch's loss (or nothing).
fn epoch_extra(val: Option<&Evaluation>, train_accuracy: Option<f64>) -> String {
    let mut out = String::new();
    if let Some(a) = train_accuracy {
        out += &format!("  train acc {:.2}%", 100.0 * a);
    }
    if let Some(v) = val {
        out += &format!("  val loss {}", report::format_loss(v.loss));
        if let Some(a) = v.accuracy {
            out += &format!("  val acc {:.2}%", 100.0 * a);
        }
    }
    out
}

/// Splits off the validation data: `--val-data` as loaded (its first `--take` samples too), or a
/// seeded `--val-split` fraction of the training data (rows drawn by [`batches::epoch_order`]
/// in a domain no epoch uses, both parts kept in file order).
fn validation(
    args: &TrainArgs,
    data: Dataset,
    model: &Model,
    loss: Loss,
    seed: u64,
    split: Option<f64>,
) -> Result<(Dataset, Option<Dataset>)> {
    if let Some(path) = &args.val_data {
        let (val, _) = super::load_data(path, model, loss, args.net.take)?;
        return Ok((data, Some(val)));
    }
    let Some(f) = split else {
        return Ok((data, None));
    };
    let n = data.len();
    let held = (f * n as f64).round() as usize;
    if !(f > 0.0 && f < 1.0) || held == 0 || held == n {
        return Err(Error::invalid(
            Setting::ValSplit,
            format!("must leave samples on both sides: {f} of {n} samples holds out {held}"),
        ));
    }
    let order = crate::batches::epoch_order(n, seed, VAL_SPLIT_EPOCH, true);
    let mut train: Vec<u32> = order[..n - held].to_vec();
    let mut val: Vec<u32> = order[n - held..].to_vec();
    train.sort_unstable();
    val.sort_unstable();
    Ok((
        crate::train::gather(&data, &train),
        Some(crate::train::gather(&data, &val)),
    ))
}

/// The "epoch" whose order draws the `--val-split` rows: one no training run reaches.
const VAL_SPLIT_EPOCH: u64 = u64::MAX;

/// Predictions the console shows after a run (a report file holds every sample's).
const SHOWN_PREDICTIONS: usize = 10;

/// What a run produced besides its parameters and losses.
struct Ran {
    device: DeviceInfo,
    seconds: f64,
    /// Validation and accuracy of every epoch, the resumed ones included.
    history: History,
    /// The periodic checkpoint write that failed and stopped the run, if one did.
    broken: Option<Error>,
}

/// Where the outputs are written (symbolic links resolved), checked before the run.
struct Targets {
    save: Option<PathBuf>,
    report: Option<PathBuf>,
    plot: Option<PathBuf>,
    /// [`FALLBACK_CHECKPOINT`], where a run saves itself when its checkpoint cannot be written (or
    /// it has none); `None` when that file is another output or an input.
    fallback: Option<PathBuf>,
}

impl Targets {
    /// No outputs at all (MPI ranks other than 0).
    fn none() -> Targets {
        Targets {
            save: None,
            report: None,
            plot: None,
            fallback: None,
        }
    }
}

/// Flag of the checkpoint among the outputs (given, resumed, or next to `--save`).
const CHECKPOINT: &str = "--checkpoint";
/// Name of the fallback checkpoint among the outputs.
const FALLBACK: &str = "the fallback checkpoint";

/// Checks every output against the inputs and each other, and every output directory for
/// writing, before anything runs ([`Outputs::check`]); points the checkpoint at its file and takes
/// its lock.
fn claim_outputs(args: &TrainArgs, setup: &mut Setup) -> Result<(Targets, Option<Lock>)> {
    let inputs: Vec<(&'static str, &Path)> = [
        ("--data", &args.net.data),
        ("--val-data", &args.val_data),
        ("--model", &args.net.model),
        ("--resume", &args.resume),
    ]
    .into_iter()
    .filter_map(|(flag, p)| Some((flag, p.as_deref()?)))
    .collect();
    let fallback = PathBuf::from(FALLBACK_CHECKPOINT);
    let named = [
        ("--report", args.report.as_deref()),
        ("--save", args.save.as_deref()),
        ("--plot", args.output.plot.as_deref()),
        (CHECKPOINT, setup.checkpoint.as_deref()),
    ];
    let mut wants: Vec<Want> = named
        .into_iter()
        .filter_map(|(flag, path)| {
            Some(Want {
                flag,
                path: path?,
                probe: true,
                last_resort: false,
            })
        })
        .collect();
    // Only written when something failed: not probed, and given up (not refused) when it is
    // another output or an input while a checkpoint of the run's own exists.
    wants.push(Want {
        flag: FALLBACK,
        path: &fallback,
        probe: false,
        last_resort: setup.checkpoint.is_some(),
    });
    let outputs = Outputs::check(&inputs, &wants, &[(CHECKPOINT, "--resume")])?;
    let owned = |flag| outputs.target(flag).map(Path::to_path_buf);
    setup.checkpoint = owned(CHECKPOINT);
    let lock = setup.checkpoint.as_deref().map(Lock::take).transpose()?;
    Ok((
        Targets {
            save: owned("--save"),
            report: owned("--report"),
            plot: owned("--plot"),
            fallback: owned(FALLBACK),
        },
        lock,
    ))
}

/// Says on stderr, when it happens, that a periodic checkpoint could not be written, and asks the
/// run to stop after this epoch (it then saves what it can, and fails with that error).
fn checkpoint_failed(e: &Error, epoch: usize) {
    output::abandon();
    eprintln!(
        "perturb: {}; stopping the run after epoch {epoch}",
        super::exit::message(e)
    );
    interrupt::request();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_divergence_whose_checkpoint_fails_stays_a_divergence_naming_the_failure() {
        let failed = Error::io(
            "/full/ck.json",
            std::io::Error::other("No space left on device"),
        );
        let outcome = Outcome::Diverged {
            epoch: 2,
            what: "the loss is inf".into(),
        };
        let e = ended_early(outcome, 1, Err(failed)).unwrap();
        assert!(matches!(e, Error::Diverged { epoch: 2, .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("the loss is inf")
                && text.contains("could not be written")
                && text.contains("/full/ck.json: No space left on device"),
            "{text}"
        );
    }
}
