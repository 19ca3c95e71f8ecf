//! The seam between the trainer and the hardware: the [`Evaluator`] trait both backends implement,
//! and what an evaluator's own loop (the GPU-resident one) returns.

use crate::data::Dataset;
use crate::error::{Error, Fix, Result, Setting};
use crate::estimate::Probe;
use crate::optim::{OptState, Optimizer};
use crate::precision::Real;
use crate::settings::{Batching, DeviceInfo, Hyper, Outcome};
use std::sync::atomic::AtomicBool;

/// Computes perturbed losses for given float32 parameters.
///
/// This is the seam between the trainer and the hardware: the CPU reference and the GPU implement
/// it, and the trainer does not know which one it drives. An evaluator may hold several runs of the
/// same network (a sweep): their parameters are laid end to end and evaluated together.
pub trait Evaluator {
    /// The float type losses come back in.
    type Loss: Real;

    /// Number of parameters P of one run.
    fn num_params(&self) -> usize;

    /// Most runs one [`Evaluator::probe`] call may hold.
    fn max_runs(&self) -> usize {
        1
    }

    /// For every run r with `active[r]`: `losses[r] = L(params_r)` and
    /// `values[r·n .. (r+1)·n]` = the differences `probes[r]` asks for (see [`Probe`]), where
    /// `params_r = params[r·P .. (r+1)·P]` and `n = probes[0].len(P)`. All probes must have the same
    /// shape; inactive runs are skipped and their slots left as they were.
    fn probe(
        &mut self,
        params: &[f32],
        probes: &[Probe],
        active: &[bool],
        losses: &mut [Self::Loss],
        values: &mut [Self::Loss],
    ) -> Result<()>;

    /// Returns `L(params)` and fills `deltas` (length P) with
    /// `deltas[k] = L(params with params[k] replaced by fl32(params[k] + eps)) − L(params)`.
    fn evaluate(
        &mut self,
        params: &[f32],
        eps: f32,
        deltas: &mut [Self::Loss],
    ) -> Result<Self::Loss> {
        let mut loss = [Self::Loss::ZERO];
        self.probe(
            params,
            &[Probe::coordinates(&[eps])],
            &[true],
            &mut loss,
            deltas,
        )?;
        Ok(loss[0])
    }

    /// What computed the losses.
    fn device(&self) -> DeviceInfo;

    /// Samples per evaluation: the batch the evaluator was built for.
    fn batch_len(&self) -> usize;

    /// Replaces the data with `data` (a mini-batch) of the same shape as the evaluator was built
    /// for; later probes evaluate on it, exactly as a new evaluator built on `data` would.
    fn set_batch(&mut self, data: &Dataset) -> Result<()>;

    /// A remark on how the losses are computed, for benchmark rows (the GPU's reuse kernel).
    fn kernel_note(&self) -> Option<String> {
        None
    }

    /// Trains one run from `init` for `hyper.epochs` epochs in the evaluator's own loop, the update
    /// applied on the device (the GPU-resident loop), calling `on_epoch(epoch, loss)` for each
    /// epoch (1-based). Evaluators without such a loop refuse; the host loop
    /// ([`crate::train::drive`]) then is the only one.
    fn resident_loop(
        &mut self,
        init: &[f32],
        hyper: &Hyper,
        epochs_per_submit: usize,
        stop: Option<&AtomicBool>,
        on_epoch: &mut dyn FnMut(usize, f64),
    ) -> Result<History> {
        let _ = (init, hyper, epochs_per_submit, stop, on_epoch);
        Err(Error::refused(
            &[(Setting::Loop, "resident")],
            "runs the update on the GPU",
            Some(Fix::Use(Setting::Device, "gpu")),
        ))
    }

    /// Trains one run in the evaluator's own loop with any optimiser and, with
    /// [`ResidentJob::batches`], in mini-batches: one submission per epoch, each step on the
    /// device (the batch's losses, the estimator's gradient, the optimiser's update), the same
    /// float32 arithmetic as [`crate::train::train_batched`]. When the batch size does not divide
    /// the samples, `rest` is the evaluator built for the last, shorter batch (as
    /// [`crate::train::BatchEvaluators::rest`], on the same device). After every epoch `on_epoch`
    /// gets its step losses, parameters and optimiser state. Evaluators without such a loop
    /// refuse.
    fn resident_steps(
        &mut self,
        rest: Option<&mut Self>,
        job: &ResidentJob<'_>,
        on_epoch: &mut dyn FnMut(&ResidentEpoch<'_>),
    ) -> Result<ResidentHistory>
    where
        Self: Sized,
    {
        let _ = (rest, job, on_epoch);
        Err(Error::refused(
            &[(Setting::Loop, "resident")],
            "runs the update on the GPU",
            Some(Fix::Use(Setting::Device, "gpu")),
        ))
    }
}

/// The mini-batches of a [`ResidentJob`]: every sample, in the order
/// [`crate::batches::epoch_order`] draws for each epoch.
#[derive(Clone, Copy, Debug)]
pub struct ResidentBatches<'a> {
    /// Every training sample (the evaluator holds one batch).
    pub data: &'a Dataset,
    /// Batch size and shuffle.
    pub batching: Batching,
}

/// What [`Evaluator::resident_steps`] trains.
#[derive(Clone, Copy, Debug)]
pub struct ResidentJob<'a> {
    /// Parameters to start from.
    pub init: &'a [f32],
    /// Hyperparameters; `epochs` is the run's total.
    pub hyper: &'a Hyper,
    /// The update rule.
    pub optimizer: Optimizer,
    /// Its state at `init`.
    pub state: &'a OptState,
    /// Epochs already completed (0-based index of the first epoch to run: the shuffle's epoch).
    pub first_epoch: usize,
    /// Steps of the first epoch already taken (a resume in the middle of an epoch).
    pub skip_steps: usize,
    /// `None`: one step per epoch on the data the evaluator holds (full batch).
    pub batches: Option<ResidentBatches<'a>>,
    /// Raised to stop after the current epoch.
    pub stop: Option<&'a AtomicBool>,
}

/// One epoch of [`Evaluator::resident_steps`].
#[derive(Clone, Copy, Debug)]
pub struct ResidentEpoch<'a> {
    /// 1-based epoch of the run.
    pub epoch: usize,
    /// The losses of the steps taken in this epoch by this job, before each step's update.
    pub step_losses: &'a [f32],
    /// Parameters after the epoch.
    pub params: &'a [f32],
    /// Optimiser state after the epoch.
    pub state: &'a OptState,
}

/// How [`Evaluator::resident_steps`] ended.
#[derive(Clone, Debug, PartialEq)]
pub struct ResidentHistory {
    /// Parameters after the last applied step.
    pub params: Vec<f32>,
    /// Optimiser state after the last applied step.
    pub state: OptState,
    /// Losses of the steps applied in an epoch that did not complete (a divergence).
    pub tail_steps: Vec<f32>,
    /// Why it ended ([`Outcome::Finished`] also when stopped: the caller counts the epochs).
    pub outcome: Outcome,
}

/// Checks the slices of an [`Evaluator::probe`] call against the evaluator's shape; returns the
/// number of runs and the values per run.
pub(crate) fn check_probe(
    p: usize,
    max_runs: usize,
    params: usize,
    probes: &[Probe],
    active: &[bool],
    losses: usize,
    values: usize,
) -> Result<(usize, usize)> {
    let runs = probes.len();
    let bad = |what: String| Err(Error::Config(format!("probe: {what}")));
    if runs == 0 || runs > max_runs {
        return bad(format!(
            "{runs} runs for an evaluator of at most {max_runs}"
        ));
    }
    if params != runs * p || active.len() != runs || losses != runs {
        return bad(format!(
            "{params} params, {} flags and {losses} loss slots for {runs} runs of {p} parameters",
            active.len()
        ));
    }
    if probes.iter().any(|q| q.shape() != probes[0].shape()) {
        return bad("runs of one call must probe the same shape".into());
    }
    let n = probes[0].len(p);
    if values != runs * n {
        return bad(format!("{values} value slots for {runs} runs of {n}"));
    }
    Ok((runs, n))
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
    /// Why it ended.
    pub outcome: Outcome,
}

/// Refuses a batch whose shape differs from the evaluator's.
pub(crate) fn check_batch(
    data: &Dataset,
    samples: usize,
    inputs: usize,
    outputs: usize,
) -> Result<()> {
    let got = (data.len(), data.x.ncols(), data.y.ncols());
    if got != (samples, inputs, outputs) {
        return Err(Error::Config(format!(
            "a batch of {} samples × ({} inputs, {} targets) for an evaluator of {samples} × ({inputs}, {outputs})",
            got.0, got.1, got.2
        )));
    }
    Ok(())
}
