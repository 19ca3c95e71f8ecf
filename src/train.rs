//! The training loop of the book, generic over the evaluator that computes the nudged losses.

use crate::error::{Error, Result};
use crate::estimate::{self, Estimator, Probe, StepMode};
use crate::precision::Real;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// [`Control::stop`] was raised; the run stopped after a whole epoch.
    Stopped,
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

/// The book's update of one parameter: `fl32(w − (delta / eps) · lr)`, in the loss's float type.
/// The GPU-resident loop does the same float32 operations in `shaders/nudge.wgsl`.
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
