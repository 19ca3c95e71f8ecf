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

/// Computes, for given float32 parameters, the baseline loss and one loss per nudged parameter.
///
/// This is the seam between the trainer and the hardware: the CPU reference and the GPU implement
/// it, and the trainer does not know which one it drives.
pub trait Evaluator {
    /// The float type losses come back in.
    type Loss: Real;

    /// Number of parameters P.
    fn num_params(&self) -> usize;

    /// Fills `losses` (length P + 1): `losses[0] = L(params)` and, for every k,
    /// `losses[k + 1] = L(params with params[k] replaced by fl32(params[k] + eps))`.
    fn nudged_losses(&mut self, params: &[f32], eps: f32, losses: &mut [Self::Loss]) -> Result<()>;

    /// What computed the losses.
    fn device(&self) -> DeviceInfo;
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

/// Trains by the book's rule. Each epoch: L = loss(params); for every k,
/// `grad_k = (L_k − L) / eps` with the nominal eps in the evaluator's float type, and
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
    let mut nudged = vec![E::Loss::ZERO; p + 1];
    let mut losses = Vec::with_capacity(hyper.epochs);
    for epoch in 1..=hyper.epochs {
        evaluator.nudged_losses(&params, eps32, &mut nudged)?;
        let base = nudged[0];
        if !base.is_finite() {
            return Err(Error::Diverged {
                epoch,
                what: format!("the loss is {:?}", base.to_f64()),
            });
        }
        for k in 0..p {
            let grad = (nudged[k + 1] - base) / eps;
            next[k] = (E::Loss::from_f32(params[k]) - grad * lr).to_f32();
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
