//! The vocabulary of a run that every layer shares: the method, the hyperparameters, why a run
//! ended and what computed it. Pure data; no I/O, no device.

use crate::error::{Error, Result};
use crate::estimate::{Estimator, Probe, StepMode};
use serde::Serialize;

/// Where losses were computed, as written into reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    /// `"gpu"` or `"cpu"`.
    pub kind: String,
    /// Adapter name (GPU) or a description of the CPU run.
    pub adapter: String,
    /// wgpu backend (`"vulkan"`, `"gl"`, …) or `"native"` for the CPU.
    pub backend: String,
}

impl DeviceInfo {
    /// The CPU evaluator with `threads` threads.
    pub fn cpu(threads: usize) -> DeviceInfo {
        DeviceInfo {
            kind: "cpu".into(),
            adapter: format!("CPU reference ({threads} threads)"),
            backend: "native".into(),
        }
    }
}

/// How the nudged losses are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Method {
    /// A full forward pass per nudged parameter (the book): `delta_k = L_k − L`.
    #[default]
    Naive,
    /// One unperturbed forward pass whose pre-activations and outputs are kept; each nudge then
    /// recomputes only what it changes (its unit, the next layer by a rank-one update, full passes
    /// only for the layers after that) and sums the per-sample change of the squared error, so
    /// `delta_k` is computed directly instead of as a difference of two rounded losses.
    Reuse,
}

impl Method {
    /// `"naive"` or `"reuse"`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Naive => "naive",
            Method::Reuse => "reuse",
        }
    }
}

/// Hyperparameters of a training run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hyper {
    /// Number of epochs (full-batch steps).
    pub epochs: usize,
    /// Learning rate.
    pub lr: f64,
    /// Nudge added to each parameter (rounded to float32 when added).
    pub eps: f64,
    /// Gradient estimator.
    pub estimator: Estimator,
    /// What nudges are divided by.
    pub step: StepMode,
    /// Seed of the SPSA directions (other estimators draw nothing).
    pub seed: u64,
}

/// Largest epoch count accepted (a typo guard; the book runs 100).
pub const MAX_EPOCHS: usize = 100_000_000;

impl Hyper {
    /// The book's: 100 epochs, lr = 0.01, eps = 0.0001, forward differences over the nominal eps.
    pub fn book() -> Hyper {
        Hyper {
            epochs: 100,
            lr: 0.01,
            eps: 0.0001,
            estimator: Estimator::Forward,
            step: StepMode::Nominal,
            seed: 0,
        }
    }

    /// Rejects values that cannot train: epochs 0 or absurd, lr < 0 or non-finite, eps ≤ 0, non-finite
    /// or so small that it vanishes in float32, an SPSA estimator without directions.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.epochs > MAX_EPOCHS {
            return Err(Error::Config(format!(
                "--epochs must be between 1 and {MAX_EPOCHS}, got {}",
                self.epochs
            )));
        }
        if !(self.lr >= 0.0 && self.lr.is_finite()) {
            return Err(Error::Config(format!(
                "--lr must be finite and >= 0, got {}",
                self.lr
            )));
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return Err(Error::Config(format!(
                "--eps must be finite and > 0, got {}",
                self.eps
            )));
        }
        if !(self.eps as f32).is_finite() {
            return Err(Error::Config(format!(
                "--eps {} overflows float32 (largest {:e}); every nudged parameter would be infinite",
                self.eps,
                f32::MAX
            )));
        }
        if (self.eps as f32) < f32::MIN_POSITIVE {
            return Err(Error::Config(format!(
                "--eps {} is below the smallest normal float32 ({:e}); every nudge would vanish",
                self.eps,
                f32::MIN_POSITIVE
            )));
        }
        if matches!(self.estimator, Estimator::Spsa { .. }) && self.step == StepMode::Exact {
            return Err(Error::Config(
                "--step exact applies to coordinate nudges; SPSA moves all parameters at once (use --step nominal)".into(),
            ));
        }
        self.estimator.validate()
    }

    /// The probe of 1-based `epoch`.
    pub fn probe(&self, epoch: usize) -> Probe {
        self.estimator
            .probe(self.eps as f32, self.seed, (epoch - 1) as u32)
    }
}

/// Why a run ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Outcome {
    /// Every epoch ran.
    #[default]
    Finished,
    /// The loss or a parameter stopped being finite at 1-based `epoch`; the run kept the last
    /// finite parameters.
    Diverged {
        /// The epoch.
        epoch: usize,
        /// What became non-finite, naming the first parameter.
        what: String,
    },
    /// [`crate::train::Control::stop`] was raised; the run stopped after a whole epoch.
    Stopped,
}
