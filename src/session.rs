//! The library's front door: train a model on a device with options, read the losses and the
//! trained model, without the command line. Also the one place that matches on the device
//! ([`Backend::with`]): `perturb train`, `sweep`, `check` and `bench` all build their evaluators
//! through it, and all training goes through [`crate::train::drive`].
//!
//! ```
//! use perturb::{Device, Hyper, Training, Model, Dataset};
//! let run = Training::new(Model::book(), Dataset::book())
//!     .device(Device::cpu_f64()) // Device::gpu() on a machine with an adapter
//!     .hyper(Hyper { epochs: 100, ..Hyper::book() })
//!     .run()
//!     .unwrap();
//! assert_eq!(format!("{:.8}", run.losses[0]), "0.33455009");
//! assert!(run.losses[99] < 0.001);
//! let trained = run.model; // a Model with the trained parameters
//! # let _ = trained;
//! ```

use crate::cpu::CpuEvaluator;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::estimate::{Estimator, StepMode};
use crate::evaluator::Evaluator;
use crate::gpu::{open_adapters, AdapterOptions, GpuContext, GpuEvaluator, GpuOptions};
use crate::metrics::{self, Evaluation};
use crate::model::Loss;
use crate::model::Model;
use crate::optim::Optimizer;
use crate::precision::{Precision, Real};
pub use crate::settings::Loop;
use crate::settings::{Batching, DeviceInfo, Hyper, Method, Outcome};
use crate::shard::{build_sharded, refuse_resident, ShardPlan, ShardedEvaluator};
use crate::train::{self, BatchEvaluators, Control, EpochReport, Run, Vanished};
use std::cell::OnceCell;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// Where the perturbed losses are computed.
#[derive(Clone, Debug, PartialEq)]
pub enum Device {
    /// wgpu compute shaders on the adapter these options pick (float32).
    Gpu(AdapterOptions),
    /// The CPU reference in this precision, on every core.
    Cpu(Precision),
    /// Every step split over several adapters (`--shard`): each compute adapter on the backends
    /// the options allow whose name contains one of `names` (all when empty), one context each.
    Shards {
        /// Backends and software-only filter (the name is ignored: `names` picks).
        adapters: AdapterOptions,
        /// Case-insensitive substrings of adapter names; empty for all.
        names: Vec<String>,
    },
}

impl Device {
    /// The GPU chosen as `perturb train` would choose it (`WGPU_ADAPTER_NAME`, `WGPU_POWER_PREF`).
    pub fn gpu() -> Device {
        Device::Gpu(AdapterOptions::from_env())
    }

    /// The CPU in float32: bit for bit what the GPU computes on lavapipe.
    pub fn cpu() -> Device {
        Device::Cpu(Precision::F32)
    }

    /// The CPU in float64 with float32 parameters: the book's NumPy notebook.
    pub fn cpu_f64() -> Device {
        Device::Cpu(Precision::F64)
    }
}

/// A [`Device`] made ready: the GPU's context opened once and shared by every evaluator built on
/// it (a check builds one per estimator, a bench one per row).
#[derive(Clone)]
pub enum Backend {
    /// The CPU reference in this precision.
    Cpu(Precision),
    /// An open GPU context (boxed: it is far larger than a precision).
    Gpu(Box<GpuContext>),
    /// One open context per adapter a step is split over.
    Shards(Vec<GpuContext>),
}

/// Builds evaluators of one concrete type; what [`Backend::with`] hands to a [`Job`].
pub trait Build {
    /// The evaluator built.
    type E: Evaluator;
    /// An evaluator of `model` on `data` (the CPU uses only `opts.method`).
    fn build(&self, model: &Model, data: &Dataset, opts: &GpuOptions) -> Result<Self::E>;
    /// What the evaluators it builds compute on.
    fn device(&self) -> DeviceInfo;
}

/// Work generic over the evaluator type, run by [`Backend::with`] with the backend's [`Build`].
pub trait Job {
    /// What the work returns.
    type Output;
    /// Does the work, building evaluators with `build`.
    fn run<B: Build>(self, build: &B) -> Self::Output;
}

struct CpuBuild<R>(std::marker::PhantomData<R>);

impl<R: Real> Build for CpuBuild<R> {
    type E = CpuEvaluator<R>;
    fn build(&self, model: &Model, data: &Dataset, opts: &GpuOptions) -> Result<CpuEvaluator<R>> {
        let mut ev = CpuEvaluator::<R>::with_options(model, data, opts.method, opts.loss)?;
        ev.set_share(opts.share);
        Ok(ev)
    }
    fn device(&self) -> DeviceInfo {
        DeviceInfo::cpu(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

struct GpuBuild<'c>(&'c GpuContext);

impl Build for GpuBuild<'_> {
    type E = GpuEvaluator;
    fn build(&self, model: &Model, data: &Dataset, opts: &GpuOptions) -> Result<GpuEvaluator> {
        GpuEvaluator::with_options(self.0.clone(), model, data, *opts)
    }
    fn device(&self) -> DeviceInfo {
        self.0.device_info()
    }
}

/// Builds [`ShardedEvaluator`]s over several contexts; the speeds are measured at the first build
/// and kept for the others.
struct ShardBuild<'c> {
    ctxs: &'c [GpuContext],
    speeds: OnceCell<Vec<u64>>,
}

impl Build for ShardBuild<'_> {
    type E = ShardedEvaluator<GpuEvaluator>;
    fn build(&self, model: &Model, data: &Dataset, opts: &GpuOptions) -> Result<Self::E> {
        let plan = ShardPlan {
            count: self.ctxs.len(),
            p: model.num_params(),
            runs: opts.runs,
            shape: opts.shape,
            params: &model.params,
        };
        build_sharded(&plan, &self.speeds, |i, share| {
            let opts = GpuOptions { share, ..*opts };
            GpuEvaluator::with_options(self.ctxs[i].clone(), model, data, opts)
        })
    }
    fn device(&self) -> DeviceInfo {
        let names: Vec<DeviceInfo> = self.ctxs.iter().map(GpuContext::device_info).collect();
        let join = |f: fn(&DeviceInfo) -> &str, sep: &str| {
            names.iter().map(f).collect::<Vec<_>>().join(sep)
        };
        DeviceInfo {
            kind: "gpu".into(),
            adapter: join(|d| &d.adapter, " + "),
            backend: join(|d| &d.backend, "+"),
            shards: Vec::new(),
        }
    }
}

impl Backend {
    /// Opens `device` (for a GPU: the adapter, the device, the error sink).
    pub fn open(device: &Device) -> Result<Backend> {
        Ok(match device {
            Device::Cpu(p) => Backend::Cpu(*p),
            Device::Gpu(opts) => Backend::Gpu(Box::new(GpuContext::new(opts)?)),
            Device::Shards { adapters, names } => Backend::Shards(open_adapters(adapters, names)?),
        })
    }

    /// Runs `job` with this backend's evaluator type: the one match on the device.
    pub fn with<J: Job>(&self, job: J) -> J::Output {
        match self {
            Backend::Cpu(Precision::F32) => job.run(&CpuBuild::<f32>(Default::default())),
            Backend::Cpu(Precision::F64) => job.run(&CpuBuild::<f64>(Default::default())),
            Backend::Gpu(ctx) => job.run(&GpuBuild(ctx)),
            Backend::Shards(ctxs) => job.run(&ShardBuild {
                ctxs,
                speeds: OnceCell::new(),
            }),
        }
    }

    /// `"float32"` or `"float64"`: what the losses are computed in.
    pub fn precision(&self) -> Precision {
        match self {
            Backend::Cpu(p) => *p,
            Backend::Gpu(_) | Backend::Shards(_) => Precision::F32,
        }
    }
}

/// A callback after every epoch.
type EpochHook<'a> = Box<dyn FnMut(&EpochReport<'_>) + 'a>;
/// A callback once the evaluator is built, before the first epoch.
type ReadyHook<'a> = Box<dyn FnMut(&DeviceInfo) + 'a>;

/// A training run (or several side by side, a sweep) to set up and [`Training::run`].
pub struct Training<'a> {
    model: Model,
    data: Dataset,
    device: Device,
    backend: Option<Backend>,
    method: Method,
    hyper: Hyper,
    loss: Loss,
    optimizer: Optimizer,
    batching: Batching,
    looping: Loop,
    start: Option<(Vec<f32>, Vec<f64>)>,
    runs: Option<Vec<Run>>,
    val: Option<Dataset>,
    control: Control<'a>,
    on_epoch: Option<EpochHook<'a>>,
    on_ready: Option<ReadyHook<'a>>,
    #[cfg(feature = "mpi")]
    world: Option<crate::distributed::World>,
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct Trained {
    /// The model with the trained parameters (the last finite ones if the run diverged).
    pub model: Model,
    /// Loss of every epoch (resumed epochs included), measured before its update.
    pub losses: Vec<f64>,
    /// Why the run ended.
    pub outcome: Outcome,
    /// Nudges that vanished in float32, if any.
    pub vanished: Vanished,
    /// What computed the losses.
    pub device: DeviceInfo,
    /// Wall time of the training loop in seconds (without building the evaluator).
    pub seconds: f64,
}

/// What [`Training::run_all`] produced: every run as it stands.
#[derive(Debug)]
pub struct Finished {
    /// The runs, each at its last completed epoch, with its outcome set unless `fault` is.
    pub runs: Vec<Run>,
    /// What computed the losses.
    pub device: DeviceInfo,
    /// Wall time of the training loop in seconds (without building the evaluator).
    pub seconds: f64,
    /// A device failure that ended training early; the runs hold what completed before it.
    pub fault: Option<Error>,
    /// The first run on the validation data after each of its epochs (empty without
    /// [`Training::validation`]).
    pub val: Vec<Evaluation>,
    /// The first run's accuracy on the training data after each epoch, for class labels.
    pub train_accuracy: Vec<f64>,
}

impl<'a> Training<'a> {
    /// `model` (its parameters are the starting point) trained on `data` with the book's settings
    /// on the GPU; change any of them with the methods below.
    pub fn new(model: Model, data: Dataset) -> Training<'a> {
        Training {
            model,
            data,
            device: Device::gpu(),
            backend: None,
            method: Method::Naive,
            hyper: Hyper::book(),
            loss: Loss::Mse,
            optimizer: Optimizer::Sgd,
            batching: Batching::full(),
            looping: Loop::Host,
            start: None,
            runs: None,
            val: None,
            control: Control::default(),
            on_epoch: None,
            on_ready: None,
            #[cfg(feature = "mpi")]
            world: None,
        }
    }

    /// Where to compute.
    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// Compute on a backend already open (its GPU context is shared, not opened again).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Naive (the book) or reuse.
    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// Epochs, lr, eps, estimator, step mode, seed.
    pub fn hyper(mut self, hyper: Hyper) -> Self {
        self.hyper = hyper;
        self
    }

    /// The loss (mse, the book's, or cross-entropy).
    pub fn loss(mut self, loss: Loss) -> Self {
        self.loss = loss;
        self
    }

    /// The update rule (sgd, the book's, momentum or adam); ignored by [`Training::runs`], whose
    /// runs carry their own.
    pub fn optimizer(mut self, optimizer: Optimizer) -> Self {
        self.optimizer = optimizer;
        self
    }

    /// Mini-batches (default: the full batch, the book's).
    pub fn batching(mut self, batching: Batching) -> Self {
        self.batching = batching;
        self
    }

    /// Shorthand for the estimator and step mode of [`Training::hyper`].
    pub fn estimator(mut self, estimator: Estimator, step: StepMode) -> Self {
        self.hyper.estimator = estimator;
        self.hyper.step = step;
        self
    }

    /// Host or GPU-resident loop.
    pub fn looping(mut self, looping: Loop) -> Self {
        self.looping = looping;
        self
    }

    /// Continue a run: `params` after `losses.len()` epochs with these losses; training goes on to
    /// `hyper.epochs` in total and gives what one uninterrupted run gives, bit for bit.
    pub fn resume(mut self, params: Vec<f32>, losses: Vec<f64>) -> Self {
        self.start = Some((params, losses));
        self
    }

    /// Train these runs of the model's shape side by side instead (a sweep: each its own
    /// hyperparameters and starting parameters, all evaluated together each epoch). Only
    /// [`Training::run_all`] returns them all.
    pub fn runs(mut self, runs: Vec<Run>) -> Self {
        self.runs = Some(runs);
        self
    }

    /// Evaluate the network on `val` after every epoch ([`crate::metrics::evaluate`]: loss in
    /// float64, and accuracy for class labels), reported in [`EpochReport::val`] and
    /// [`Finished::val`]; with class labels the training data's accuracy is tracked too.
    pub fn validation(mut self, val: Dataset) -> Self {
        self.val = Some(val);
        self
    }

    /// Stop after the current epoch when `flag` is raised (e.g. by Ctrl-C).
    pub fn stop_on(mut self, flag: &'a AtomicBool) -> Self {
        self.control.stop = Some(flag);
        self
    }

    /// Keep going when the loss or a parameter stops being finite.
    pub fn allow_divergence(mut self, allow: bool) -> Self {
        self.control.allow_divergence = allow;
        self
    }

    /// Called after every epoch.
    pub fn on_epoch(mut self, f: impl FnMut(&EpochReport<'_>) + 'a) -> Self {
        self.on_epoch = Some(Box::new(f));
        self
    }

    /// Called once the evaluator is built, with what will compute the losses.
    pub fn on_ready(mut self, f: impl FnMut(&DeviceInfo) + 'a) -> Self {
        self.on_ready = Some(Box::new(f));
        self
    }

    /// Split every step over the ranks of `world` (MPI must be initialised, see
    /// [`crate::distributed::Mpi`]): each rank evaluates its share on this device and all
    /// gather, so every rank trains the same parameters as one process would.
    #[cfg(feature = "mpi")]
    pub fn distributed(mut self, world: crate::distributed::World) -> Self {
        self.world = Some(world);
        self
    }

    /// Trains. Errors are bad settings, data that does not fit the model, or device failures; a
    /// divergence or a stop is an [`Outcome`], with the parameters of the last good epoch kept.
    pub fn run(self) -> Result<Trained> {
        let model = self.model.clone();
        let done = self.run_all()?;
        if let Some(e) = done.fault {
            return Err(e);
        }
        let run = done.runs.into_iter().next().expect("one run");
        Ok(Trained {
            model: model.with_params(run.params)?,
            losses: run.losses,
            outcome: run.outcome.unwrap_or_default(),
            vanished: run.vanished,
            device: done.device,
            seconds: done.seconds,
        })
    }

    /// Trains every run. Errors are what stops training from starting (bad settings, data that
    /// does not fit, no device); a device failure during training is [`Finished::fault`], with
    /// every run kept at its last completed epoch so that it can be saved.
    pub fn run_all(mut self) -> Result<Finished> {
        self.data.check_fits(&self.model, "data")?;
        let runs = match self.runs.take() {
            Some(runs) => runs,
            None => {
                let (params, losses) = self
                    .start
                    .take()
                    .unwrap_or_else(|| (self.model.params.clone(), Vec::new()));
                let mut run = Run::new(self.hyper, params).with_optimizer(self.optimizer);
                run.losses = losses;
                vec![run]
            }
        };
        self.loss.check(&self.model)?;
        train::check_runs(&runs, self.looping, self.control)?;
        if let Some(val) = &self.val {
            val.check_fits(&self.model, "validation data")?;
        }
        let sharded = matches!(self.device, Device::Shards { .. })
            || matches!(self.backend, Some(Backend::Shards(_)));
        if sharded && self.looping != Loop::Host {
            return Err(refuse_resident());
        }
        let backend = match self.backend.take() {
            Some(b) => b,
            None => Backend::open(&self.device)?,
        };
        let opts = GpuOptions {
            method: self.method,
            loss: self.loss,
            runs: runs.len(),
            shape: runs
                .first()
                .map_or(Hyper::book(), |r| r.hyper)
                .estimator
                .shape(),
            ..Default::default()
        };
        #[cfg(feature = "mpi")]
        if let Some(world) = self.world {
            if self.looping != Loop::Host {
                return Err(crate::distributed::refuse_resident());
            }
            // The ranks stop together: the trainer watches their agreed flag, and this rank's own
            // goes to the gathers.
            let stop = self.control.stop.replace(crate::distributed::agreed_stop());
            let job = Drive {
                training: self,
                runs,
                opts,
            };
            return backend.with(mpi_build::OverMpi { job, world, stop });
        }
        backend.with(Drive {
            training: self,
            runs,
            opts,
        })
    }
}

/// A [`Job`] run with every evaluator split over MPI ranks.
#[cfg(feature = "mpi")]
mod mpi_build {
    use super::{Build, Job};
    use crate::data::Dataset;
    use crate::distributed::{MpiEvaluator, World};
    use crate::error::Result;
    use crate::gpu::GpuOptions;
    use crate::model::Model;
    use crate::settings::DeviceInfo;
    use std::sync::atomic::AtomicBool;

    /// `job` with each evaluator built for this rank's share and gathered over `world`, sharing
    /// `stop` (this rank's own flag; the job's trainer watches the ranks' agreed one).
    pub(super) struct OverMpi<'s, J> {
        pub(super) job: J,
        pub(super) world: World,
        pub(super) stop: Option<&'s AtomicBool>,
    }

    struct MpiBuild<'b, B> {
        inner: &'b B,
        world: World,
        stop: Option<&'b AtomicBool>,
    }

    impl<'b, B: Build> Build for MpiBuild<'b, B> {
        type E = MpiEvaluator<'b, B::E>;
        fn build(&self, model: &Model, data: &Dataset, opts: &GpuOptions) -> Result<Self::E> {
            let share = self.world.shares(model.num_params(), opts.shape)[self.world.rank];
            let local = self
                .inner
                .build(model, data, &GpuOptions { share, ..*opts })?;
            Ok(MpiEvaluator::new(local, self.world, opts.shape, self.stop))
        }
        fn device(&self) -> DeviceInfo {
            self.inner.device()
        }
    }

    impl<J: Job> Job for OverMpi<'_, J> {
        type Output = J::Output;
        fn run<B: Build>(self, build: &B) -> J::Output {
            self.job.run(&MpiBuild {
                inner: build,
                world: self.world,
                stop: self.stop,
            })
        }
    }
}

/// [`Training::run_all`] once the backend is chosen: build the evaluator, drive the runs.
struct Drive<'a> {
    training: Training<'a>,
    runs: Vec<Run>,
    opts: GpuOptions,
}

impl Job for Drive<'_> {
    type Output = Result<Finished>;

    fn run<B: Build>(mut self, build: &B) -> Result<Finished> {
        let t = &mut self.training;
        let (n, size) = (t.data.len(), t.batching.size);
        let mini = !t.batching.is_full(n);
        // Mini-batch evaluators are built on a batch's worth of rows and given each step's batch.
        let first = |rows: usize| train::gather(&t.data, &(0..rows as u32).collect::<Vec<_>>());
        let mut evs = BatchEvaluators {
            full: match mini {
                true => build.build(&t.model, &first(size), &self.opts)?,
                false => build.build(&t.model, &t.data, &self.opts)?,
            },
            rest: match mini && n % size != 0 {
                true => Some(build.build(&t.model, &first(n % size), &self.opts)?),
                false => None,
            },
        };
        let device = evs.full.device();
        if let Some(f) = t.on_ready.as_mut() {
            f(&device);
        }
        let mut on_epoch = t.on_epoch.take();
        let mut watch = Watch::new(&t.model, &t.data, t.val.as_ref(), t.loss);
        // Validation and accuracy need every epoch's parameters: one epoch per submission.
        let looping = match t.looping {
            Loop::Resident(_) if watch.measures() => Loop::Resident(1),
            looping => looping,
        };
        let report = |e: &EpochReport<'_>| {
            let (val, train_accuracy) = watch.epoch(e);
            let e = EpochReport {
                val: val.as_ref(),
                train_accuracy,
                ..*e
            };
            if let Some(f) = on_epoch.as_mut() {
                f(&e)
            }
        };
        let start = Instant::now();
        let result = match mini {
            true => train::drive_batched(
                &mut evs,
                &t.data,
                t.batching,
                &mut self.runs,
                looping,
                t.control,
                report,
            ),
            false => train::drive(&mut evs.full, &mut self.runs, looping, t.control, report),
        };
        let seconds = start.elapsed().as_secs_f64();
        Ok(Finished {
            runs: self.runs,
            device,
            seconds,
            fault: result.err(),
            val: watch.val,
            train_accuracy: watch.train_accuracy,
        })
    }
}

/// What is measured after every epoch of the first run besides its loss: the validation data's
/// loss and accuracy, and the training data's accuracy when its targets are class labels.
struct Watch<'m> {
    model: &'m Model,
    train: Option<&'m Dataset>,
    val_data: Option<&'m Dataset>,
    loss: Loss,
    val: Vec<Evaluation>,
    train_accuracy: Vec<f64>,
}

impl<'m> Watch<'m> {
    fn new(model: &'m Model, train: &'m Dataset, val: Option<&'m Dataset>, loss: Loss) -> Self {
        Watch {
            model,
            train: train.labels().is_some().then_some(train),
            val_data: val,
            loss,
            val: Vec::new(),
            train_accuracy: Vec::new(),
        }
    }

    /// Whether anything is measured after an epoch (which then needs its parameters).
    fn measures(&self) -> bool {
        self.train.is_some() || self.val_data.is_some()
    }

    /// The measurements after epoch `e` (nothing for the other runs of a sweep, or without
    /// parameters: the resident loop keeps them on the GPU).
    fn epoch(&mut self, e: &EpochReport<'_>) -> (Option<Evaluation>, Option<f64>) {
        if e.run != 0 || e.params.is_empty() {
            return (None, None);
        }
        let Ok(net) = self.model.with_params(e.params.to_vec()) else {
            return (None, None);
        };
        let eval = |d: &Dataset| metrics::evaluate(&net, d, self.loss).ok();
        let val = self.val_data.and_then(eval);
        let acc = self.train.and_then(eval).and_then(|t| t.accuracy);
        if let Some(v) = &val {
            self.val.push(v.clone());
        }
        if let Some(a) = acc {
            self.train_accuracy.push(a);
        }
        (val, acc)
    }
}
