//! The library's front door: train a model on a device with options, read the losses and the
//! trained model, without the command line.
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
use crate::gpu::{AdapterOptions, GpuContext, GpuEvaluator, GpuOptions};
use crate::model::Model;
use crate::precision::Precision;
use crate::train::{self, Control, DeviceInfo, EpochReport, Evaluator, Hyper, Method};
use crate::train::{Outcome, Run, Vanished};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// Where the perturbed losses are computed.
#[derive(Clone, Debug, PartialEq)]
pub enum Device {
    /// wgpu compute shaders on the adapter these options pick (float32).
    Gpu(AdapterOptions),
    /// The CPU reference in this precision, on every core.
    Cpu(Precision),
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

/// Who applies the update on the GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Loop {
    /// The host reads the losses back each epoch and applies the update (the book's design).
    #[default]
    Host,
    /// The GPU applies the update; losses come back after each batch of this many epochs.
    /// Forward differences over the nominal eps only; equal to the host loop bit for bit.
    Resident(usize),
}

/// A callback after every epoch.
type EpochHook<'a> = Box<dyn FnMut(&EpochReport<'_>) + 'a>;

/// A training run to set up and [`Training::run`].
pub struct Training<'a> {
    model: Model,
    data: Dataset,
    device: Device,
    method: Method,
    hyper: Hyper,
    looping: Loop,
    start: Option<(Vec<f32>, Vec<f64>)>,
    control: Control<'a>,
    on_epoch: Option<EpochHook<'a>>,
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

impl<'a> Training<'a> {
    /// `model` (its parameters are the starting point) trained on `data` with the book's settings
    /// on the GPU; change any of them with the methods below.
    pub fn new(model: Model, data: Dataset) -> Training<'a> {
        Training {
            model,
            data,
            device: Device::gpu(),
            method: Method::Naive,
            hyper: Hyper::book(),
            looping: Loop::Host,
            start: None,
            control: Control::default(),
            on_epoch: None,
        }
    }

    /// Where to compute.
    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
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

    /// Trains. Errors are bad settings, data that does not fit the model, or device failures; a
    /// divergence or a stop is an [`Outcome`], with the parameters of the last good epoch kept.
    pub fn run(mut self) -> Result<Trained> {
        self.hyper.validate()?;
        self.data.check_fits(&self.model, "data")?;
        let (params, losses) = self
            .start
            .take()
            .unwrap_or_else(|| (self.model.params.clone(), Vec::new()));
        let mut run = Run::new(self.hyper, params);
        run.losses = losses;
        let mut on_epoch = self.on_epoch.take();
        let mut report = |e: &EpochReport<'_>| {
            if let Some(f) = on_epoch.as_mut() {
                f(e)
            }
        };
        let (model, data, method) = (&self.model, &self.data, self.method);
        let (run, device, seconds) = match (&self.device, self.looping) {
            (Device::Gpu(opts), looping) => {
                let ctx = GpuContext::new(opts)?;
                let gpu_opts = GpuOptions {
                    method,
                    shape: self.hyper.estimator.shape(),
                    ..Default::default()
                };
                let mut gpu = GpuEvaluator::with_options(ctx, model, data, gpu_opts)?;
                match looping {
                    Loop::Host => drive(&mut gpu, run, self.control, &mut report)?,
                    Loop::Resident(per_submit) => {
                        resident(&mut gpu, run, self.control, per_submit, &mut report)?
                    }
                }
            }
            (Device::Cpu(_), Loop::Resident(_)) => {
                return Err(Error::Config(
                    "the resident loop runs the update on the GPU; it needs a GPU device".into(),
                ))
            }
            (Device::Cpu(Precision::F32), _) => {
                let mut cpu = CpuEvaluator::<f32>::with_method(model, data, method)?;
                drive(&mut cpu, run, self.control, &mut report)?
            }
            (Device::Cpu(Precision::F64), _) => {
                let mut cpu = CpuEvaluator::<f64>::with_method(model, data, method)?;
                drive(&mut cpu, run, self.control, &mut report)?
            }
        };
        Ok(Trained {
            model: self.model.with_params(run.params)?,
            losses: run.losses,
            outcome: run.outcome.unwrap_or_default(),
            vanished: run.vanished,
            device,
            seconds,
        })
    }
}

fn drive<E: Evaluator>(
    ev: &mut E,
    run: Run,
    control: Control<'_>,
    report: &mut dyn FnMut(&EpochReport<'_>),
) -> Result<(Run, DeviceInfo, f64)> {
    let start = Instant::now();
    let mut runs = [run];
    train::train_runs(ev, &mut runs, control, report)?;
    let [run] = runs;
    Ok((run, ev.device(), start.elapsed().as_secs_f64()))
}

fn resident(
    gpu: &mut GpuEvaluator,
    mut run: Run,
    control: Control<'_>,
    per_submit: usize,
    report: &mut dyn FnMut(&EpochReport<'_>),
) -> Result<(Run, DeviceInfo, f64)> {
    if !run.losses.is_empty() || control.allow_divergence {
        return Err(Error::Config(
            "the resident loop does not resume or continue past a divergence; use the host loop"
                .into(),
        ));
    }
    let start = Instant::now();
    // The resident loop keeps the parameters on the GPU: epochs report no parameters.
    let history = gpu.train_resident(
        &run.params,
        &run.hyper,
        per_submit,
        control.stop,
        |epoch, loss| {
            report(&EpochReport {
                run: 0,
                epoch,
                loss,
                vanished: &[],
                params: &[],
            })
        },
    )?;
    run.outcome = Some(match history.outcome {
        Outcome::Finished if history.losses.len() < run.hyper.epochs => Outcome::Stopped,
        outcome => outcome,
    });
    run.params = history.params;
    run.losses = history.losses;
    Ok((run, gpu.device(), start.elapsed().as_secs_f64()))
}
