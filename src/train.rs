//! The training loop of the book, generic over the evaluator that computes the nudged losses.

use crate::error::{Error, Result};
use crate::precision::Real;
use serde::Serialize;
use std::time::Instant;

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

/// Computes, for given float32 parameters, the loss and the change of the loss when each parameter
/// alone is nudged.
///
/// This is the seam between the trainer and the hardware: the CPU reference and the GPU implement
/// it, and the trainer does not know which one it drives.
pub trait Evaluator {
    /// The float type losses come back in.
    type Loss: Real;

    /// Number of parameters P.
    fn num_params(&self) -> usize;

    /// Returns `L(params)` and fills `deltas` (length P) with
    /// `deltas[k] = L(params with params[k] replaced by fl32(params[k] + eps)) − L(params)`.
    fn evaluate(
        &mut self,
        params: &[f32],
        eps: f32,
        deltas: &mut [Self::Loss],
    ) -> Result<Self::Loss>;

    /// What computed the losses.
    fn device(&self) -> DeviceInfo;
}

/// The error for an [`Evaluator::evaluate`] call whose slices do not fit the model.
pub(crate) fn check_lengths(params: usize, deltas: usize, num_params: usize) -> Result<()> {
    if params != num_params || deltas != num_params {
        return Err(Error::Config(format!(
            "evaluate: {params} params and {deltas} delta slots for a model of {num_params} parameters"
        )));
    }
    Ok(())
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
}

/// Largest epoch count accepted (a typo guard; the book runs 100).
pub const MAX_EPOCHS: usize = 100_000_000;

impl Hyper {
    /// The book's: 100 epochs, lr = 0.01, eps = 0.0001.
    pub fn book() -> Hyper {
        Hyper {
            epochs: 100,
            lr: 0.01,
            eps: 0.0001,
        }
    }

    /// Rejects values that cannot train: epochs 0 or absurd, lr < 0 or non-finite, eps ≤ 0, non-finite
    /// or so small that it vanishes in float32.
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
        Ok(())
    }
}

/// What a training run produced.
#[derive(Clone, Debug, PartialEq)]
pub struct History {
    /// Loss of each epoch, measured before that epoch's update.
    pub losses: Vec<f64>,
    /// Trained parameters.
    pub params: Vec<f32>,
    /// Wall time of the training loop in seconds.
    pub seconds: f64,
}

/// The book's update of one parameter: `fl32(w − (delta / eps) · lr)`, in the loss's float type.
/// The GPU-resident loop does the same float32 operations in `shaders/nudge.wgsl`.
pub fn update<R: Real>(w: f32, delta: R, eps: R, lr: R) -> f32 {
    let grad = delta / eps;
    (R::from_f32(w) - grad * lr).to_f32()
}

/// Trains by the book's rule. Each epoch: L = loss(params); for every k,
/// `grad_k = (L_k − L) / eps` (`delta_k / eps`) with the nominal eps in the evaluator's float type, and
/// `new_k = fl32(params_k − grad_k · lr)`; all parameters are replaced at once.
/// `on_epoch(epoch, loss)` is called after each epoch (1-based).
pub fn train<E: Evaluator>(
    evaluator: &mut E,
    init: &[f32],
    hyper: &Hyper,
    mut on_epoch: impl FnMut(usize, f64),
) -> Result<History> {
    hyper.validate()?;
    let p = evaluator.num_params();
    if init.len() != p {
        return Err(Error::Config(format!(
            "{} initial parameters for an evaluator of {p}",
            init.len()
        )));
    }
    let start = Instant::now();
    let eps32 = hyper.eps as f32;
    let eps = E::Loss::from_f64(hyper.eps);
    let lr = E::Loss::from_f64(hyper.lr);
    let mut params = init.to_vec();
    let mut next = vec![0.0f32; p];
    let mut deltas = vec![E::Loss::ZERO; p];
    let mut losses = Vec::with_capacity(hyper.epochs);
    for epoch in 1..=hyper.epochs {
        let base = evaluator.evaluate(&params, eps32, &mut deltas)?;
        if !base.is_finite() {
            return Err(Error::Diverged {
                epoch,
                what: format!("the loss is {:?}", base.to_f64()),
            });
        }
        for k in 0..p {
            next[k] = update(params[k], deltas[k], eps, lr);
        }
        if let Some(k) = next.iter().position(|v| !v.is_finite()) {
            return Err(Error::Diverged {
                epoch,
                what: format!("parameter {k} became {}", next[k]),
            });
        }
        std::mem::swap(&mut params, &mut next);
        losses.push(base.to_f64());
        on_epoch(epoch, base.to_f64());
    }
    Ok(History {
        losses,
        params,
        seconds: start.elapsed().as_secs_f64(),
    })
}
