//! The training loop of the book, generic over the evaluator that computes the nudged losses.

use crate::error::{Error, Result};
use crate::estimate;
pub use crate::evaluator::{Evaluator, History};
use crate::precision::Real;
pub use crate::settings::{DeviceInfo, Hyper, Method, Outcome, MAX_EPOCHS};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Parameters whose nudge vanished in float32 during a run (`w + eps == w`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Vanished {
    /// First epoch where it happened (0: never).
    pub first_epoch: usize,
    /// Largest number of parameters affected in one epoch.
    pub max_count: usize,
    /// The first few parameters affected in `first_epoch`: (index, value).
    pub first_params: Vec<(usize, f32)>,
}

/// How many parameters [`Vanished::first_params`] lists.
pub const VANISHED_LISTED: usize = 5;

impl Vanished {
    fn record(&mut self, epoch: usize, which: &[usize], params: &[f32]) {
        if which.is_empty() {
            return;
        }
        if self.first_epoch == 0 {
            self.first_epoch = epoch;
            self.first_params = which
                .iter()
                .take(VANISHED_LISTED)
                .map(|&k| (k, params[k]))
                .collect();
        }
        self.max_count = self.max_count.max(which.len());
    }

    /// Whether any nudge vanished.
    pub fn any(&self) -> bool {
        self.first_epoch > 0
    }
}

/// One run of [`train_runs`]: its hyperparameters and where it stands. A new run starts with
/// `losses` empty; a resumed one with the losses of the epochs already done and their parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// Hyperparameters (`epochs` is the total, resumed epochs included).
    pub hyper: Hyper,
    /// Current parameters.
    pub params: Vec<f32>,
    /// Loss of every completed epoch, measured before its update.
    pub losses: Vec<f64>,
    /// Nudges that vanished.
    pub vanished: Vanished,
    /// Set when the run ends.
    pub outcome: Option<Outcome>,
}

impl Run {
    /// A fresh run from `init`.
    pub fn new(hyper: Hyper, init: Vec<f32>) -> Run {
        Run {
            hyper,
            params: init,
            losses: Vec::new(),
            vanished: Vanished::default(),
            outcome: None,
        }
    }

    /// Completed epochs.
    pub fn epoch(&self) -> usize {
        self.losses.len()
    }

    fn wants_more(&self) -> bool {
        self.outcome.is_none() && self.losses.len() < self.hyper.epochs
    }
}

/// What [`train_runs`] watches besides the runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Control<'a> {
    /// Raised (e.g. by Ctrl-C) to stop every run after the current epoch.
    pub stop: Option<&'a AtomicBool>,
    /// Keep training a run whose loss or parameters stopped being finite.
    pub allow_divergence: bool,
}

/// One finished epoch, as [`train_runs`] reports it.
#[derive(Clone, Copy, Debug)]
pub struct EpochReport<'a> {
    /// Which run.
    pub run: usize,
    /// 1-based epoch.
    pub epoch: usize,
    /// Its loss (before its update).
    pub loss: f64,
    /// Parameters whose nudge vanished in this epoch.
    pub vanished: &'a [usize],
    /// The parameters after this epoch's update (what a checkpoint of this epoch holds).
    pub params: &'a [f32],
}

/// The book's update of one parameter: `fl32(w − (delta / eps) · lr)`, in the loss's float type.
/// The GPU-resident loop does the same float32 operations in `shaders/resident.wgsl`.
pub fn update<R: Real>(w: f32, delta: R, eps: R, lr: R) -> f32 {
    apply(w, delta / eps, lr)
}

/// `fl32(w − grad · lr)` in the loss's float type.
pub fn apply<R: Real>(w: f32, grad: R, lr: R) -> f32 {
    (R::from_f32(w) - grad * lr).to_f32()
}

/// Trains one run by the book's rule (see [`train_runs`]) and returns its history; a divergence is
/// an [`Error::Diverged`]. `on_epoch(epoch, loss)` is called after each epoch (1-based).
pub fn train<E: Evaluator>(
    evaluator: &mut E,
    init: &[f32],
    hyper: &Hyper,
    mut on_epoch: impl FnMut(usize, f64),
) -> Result<History> {
    let start = Instant::now();
    let mut runs = [Run::new(*hyper, init.to_vec())];
    train_runs(evaluator, &mut runs, Control::default(), |e| {
        on_epoch(e.epoch, e.loss)
    })?;
    let [run] = runs;
    if let Some(Outcome::Diverged { epoch, what }) = run.outcome {
        return Err(Error::Diverged { epoch, what });
    }
    Ok(History {
        losses: run.losses,
        params: run.params,
        seconds: start.elapsed().as_secs_f64(),
        outcome: Outcome::Finished,
    })
}

/// Trains several runs of one network side by side, every step of all of them in one
/// [`Evaluator::probe`] call (one set of GPU dispatches). Each epoch of each run: L = loss(params)
/// and the estimator's perturbed losses, `grad` by [`estimate::gradient`], and
/// `new_k = fl32(params_k − grad_k · lr)`, all parameters replaced at once. A run's numbers do not
/// depend on the other runs, so a sweep of N runs equals N separate runs bit for bit.
///
/// Runs continue from their recorded epoch (a resume) until `hyper.epochs`; a run whose loss or
/// parameters become non-finite ends as [`Outcome::Diverged`] keeping its last finite parameters
/// (unless `control.allow_divergence`), the others go on.
pub fn train_runs<E: Evaluator>(
    evaluator: &mut E,
    runs: &mut [Run],
    control: Control<'_>,
    mut on_epoch: impl FnMut(&EpochReport<'_>),
) -> Result<()> {
    let p = evaluator.num_params();
    if runs.is_empty() || runs.len() > evaluator.max_runs() {
        return Err(Error::Config(format!(
            "{} runs for an evaluator of at most {}",
            runs.len(),
            evaluator.max_runs()
        )));
    }
    for run in runs.iter() {
        run.hyper.validate()?;
        if run.params.len() != p {
            return Err(Error::Config(format!(
                "{} initial parameters for an evaluator of {p}",
                run.params.len()
            )));
        }
        if run.losses.len() > run.hyper.epochs {
            return Err(Error::Config(format!(
                "the run has done {} epochs, more than the {} asked for",
                run.losses.len(),
                run.hyper.epochs
            )));
        }
    }
    let n = runs[0].hyper.probe(1).len(p);
    let r = runs.len();
    let mut params = vec![0.0f32; r * p];
    let mut losses = vec![E::Loss::ZERO; r];
    let mut values = vec![E::Loss::ZERO; r * n];
    let mut grad = vec![E::Loss::ZERO; p];
    let mut next = vec![0.0f32; p];
    let mut probes = vec![runs[0].hyper.probe(1); r];
    let mut active = vec![false; r];
    loop {
        for (i, run) in runs.iter_mut().enumerate() {
            if run.wants_more() && control.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                run.outcome = Some(Outcome::Stopped);
            }
            active[i] = run.wants_more();
            if active[i] {
                params[i * p..(i + 1) * p].copy_from_slice(&run.params);
                probes[i] = run.hyper.probe(run.epoch() + 1);
            }
        }
        if !active.contains(&true) {
            break;
        }
        evaluator.probe(&params, &probes, &active, &mut losses, &mut values)?;
        for (i, run) in runs.iter_mut().enumerate().filter(|(i, _)| active[*i]) {
            let h = run.hyper;
            let epoch = run.epoch() + 1;
            let base = losses[i];
            let vanished = estimate::gradient(
                h.estimator,
                h.step,
                h.eps,
                &probes[i],
                &run.params,
                &values[i * n..(i + 1) * n],
                &mut grad,
            );
            run.vanished.record(epoch, &vanished, &run.params);
            let lr = E::Loss::from_f64(h.lr);
            for k in 0..p {
                next[k] = apply(run.params[k], grad[k], lr);
            }
            let diverged = if !base.is_finite() {
                Some(format!("the loss is {:?}", base.to_f64()))
            } else {
                next.iter()
                    .position(|v| !v.is_finite())
                    .map(|k| format!("parameter {k} became {}", next[k]))
            };
            if let Some(what) = diverged {
                if !control.allow_divergence {
                    // Losses stay one per applied update, so the run can be checkpointed as is.
                    run.outcome = Some(Outcome::Diverged { epoch, what });
                    continue;
                }
            }
            run.params.copy_from_slice(&next);
            run.losses.push(base.to_f64());
            on_epoch(&EpochReport {
                run: i,
                epoch,
                loss: base.to_f64(),
                vanished: &vanished,
                params: &run.params,
            });
        }
    }
    for run in runs.iter_mut() {
        if run.outcome.is_none() {
            run.outcome = Some(Outcome::Finished);
        }
    }
    Ok(())
}
