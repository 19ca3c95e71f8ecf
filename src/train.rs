//! The training loop of the book, generic over the evaluator that computes the nudged losses.

use crate::batches::{batches, epoch_order, num_batches};
use crate::data::Dataset;
use crate::error::{Error, Fix, Result, Setting};
use crate::estimate;
pub use crate::evaluator::{Evaluator, History};
use crate::evaluator::{ResidentBatches, ResidentJob};
use crate::metrics::Evaluation;
use crate::optim::{OptState, Optimizer};
use crate::precision::Real;
pub use crate::settings::{Batching, DeviceInfo, Hyper, Loop, Method, Outcome, MAX_EPOCHS};
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
    /// The update rule.
    pub optimizer: Optimizer,
    /// Its state after the last applied step (float32).
    pub state: OptState,
    /// Loss of every applied step (one per epoch for full batches), before its update.
    pub step_losses: Vec<f64>,
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
            optimizer: Optimizer::Sgd,
            state: OptState::default(),
            step_losses: Vec::new(),
        }
    }

    /// The run with this update rule, its state fresh.
    pub fn with_optimizer(mut self, optimizer: Optimizer) -> Run {
        self.state = OptState::new(&optimizer, self.params.len());
        self.optimizer = optimizer;
        self
    }

    /// Takes one step from `grad` (the gradient at the current parameters, whose loss is `loss`):
    /// the optimiser's update into `next`, then, unless the loss or a parameter stopped being
    /// finite (returned as the divergence's description), the parameters, the optimiser state and
    /// the step's loss are committed. `next` is scratch of the parameters' length.
    fn step<R: Real>(
        &mut self,
        grad: &[R],
        loss: R,
        next: &mut [f32],
        allow_divergence: bool,
    ) -> Option<String> {
        let lr = R::from_f64(self.hyper.lr);
        next.copy_from_slice(&self.params);
        let mut state = self.state.clone();
        state.step(&self.optimizer, next, grad, lr);
        let diverged = if !loss.is_finite() {
            Some(format!("the loss is {:?}", loss.to_f64()))
        } else {
            next.iter()
                .position(|v| !v.is_finite())
                .map(|k| format!("parameter {k} became {}", next[k]))
        };
        if diverged.is_none() || allow_divergence {
            self.params.copy_from_slice(next);
            self.state = state;
            self.step_losses.push(loss.to_f64());
        }
        diverged
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
    /// Every epoch's loss so far, this one's last (a checkpoint holds them).
    pub losses: &'a [f64],
    /// Every step's loss so far (a checkpoint holds them).
    pub step_losses: &'a [f64],
    /// The optimiser's state after this epoch (a checkpoint holds it).
    pub state: &'a OptState,
    /// The trained network on the validation data after this epoch, when there is some (the
    /// session fills it in).
    pub val: Option<&'a Evaluation>,
    /// Accuracy on the training data after this epoch, for class labels (the session fills it in).
    pub train_accuracy: Option<f64>,
}

pub use crate::optim::{apply, update};

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
            if let Some(what) = run.step(&grad, base, &mut next, control.allow_divergence) {
                if !control.allow_divergence {
                    // Losses stay one per applied update, so the run can be checkpointed as is.
                    run.outcome = Some(Outcome::Diverged { epoch, what });
                    continue;
                }
            }
            run.losses.push(base.to_f64());
            on_epoch(&EpochReport {
                run: i,
                epoch,
                loss: base.to_f64(),
                vanished: &vanished,
                params: &run.params,
                losses: &run.losses,
                step_losses: &run.step_losses,
                state: &run.state,
                val: None,
                train_accuracy: None,
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

/// Checks runs before any is trained: settings and optimiser state in range, and a resident loop
/// with one run that does not go on past a divergence.
pub fn check_runs(runs: &[Run], looping: Loop, control: Control<'_>) -> Result<()> {
    for run in runs {
        run.hyper.validate()?;
        run.optimizer.validate()?;
        run.state
            .check(&run.optimizer, run.params.len())
            .map_err(|m| Error::Config(format!("optimiser state: {m}")))?;
    }
    if let Loop::Resident(_) = looping {
        if runs.len() != 1 {
            return Err(Error::Config(format!(
                "the resident loop trains one run, not {}",
                runs.len()
            )));
        }
        if control.allow_divergence {
            return Err(Error::refused(
                &[(Setting::AllowDivergence, ""), (Setting::Loop, "resident")],
                "the resident loop cannot continue past a divergence (it keeps the parameters on the GPU)",
                Some(Fix::Use(Setting::Loop, "host")),
            ));
        }
    }
    Ok(())
}

/// The one driver of full-batch runs: trains `runs` with `ev` in the host loop ([`train_runs`])
/// or in the evaluator's own loop, reporting each epoch the same way and leaving each run in the
/// same shape: losses of the completed epochs, their parameters, the outcome. The book's sgd with
/// several epochs per submission runs [`Evaluator::resident_loop`] (whose epochs report no
/// parameters: they stay on the GPU until the loop ends); any other optimiser, or one epoch per
/// submission, runs [`Evaluator::resident_steps`], which reports every epoch's parameters and
/// optimiser state. A resumed run continues from its recorded epoch in either loop. On an error
/// the runs hold their last completed epoch.
pub fn drive<E: Evaluator>(
    ev: &mut E,
    runs: &mut [Run],
    looping: Loop,
    control: Control<'_>,
    mut on_epoch: impl FnMut(&EpochReport<'_>),
) -> Result<()> {
    check_runs(runs, looping, control)?;
    let Loop::Resident(per_submit) = looping else {
        return train_runs(ev, runs, control, on_epoch);
    };
    let run = &mut runs[0];
    if run.optimizer != Optimizer::Sgd || per_submit <= 1 {
        return drive_steps(ev, None, None, run, control, on_epoch);
    }
    let done = run.losses.len();
    // The resident loop counts its own epochs from 1.
    let remaining = Hyper {
        epochs: run.hyper.epochs - done,
        ..run.hyper
    };
    let empty = OptState::default();
    let history = ev.resident_loop(
        &run.params,
        &remaining,
        per_submit,
        control.stop,
        &mut |epoch, loss| {
            on_epoch(&EpochReport {
                run: 0,
                epoch: done + epoch,
                loss,
                vanished: &[],
                params: &[],
                losses: &[],
                step_losses: &[],
                state: &empty,
                val: None,
                train_accuracy: None,
            })
        },
    )?;
    run.outcome = Some(match history.outcome {
        Outcome::Finished if history.losses.len() < remaining.epochs => Outcome::Stopped,
        Outcome::Diverged { epoch, what } => Outcome::Diverged {
            epoch: done + epoch,
            what,
        },
        outcome => outcome,
    });
    run.step_losses.extend_from_slice(&history.losses);
    run.losses.extend(history.losses);
    run.params = history.params;
    Ok(())
}

/// The one driver of mini-batch runs: [`train_batched`] in the host loop, or one run in the
/// evaluator's resident step loop ([`Evaluator::resident_steps`], the last shorter batch on
/// `evs.rest`), which gives the same steps, losses, parameters and optimiser state bit for bit.
/// A stop is honoured between steps in the host loop and between epochs in the resident one.
pub fn drive_batched<E: Evaluator>(
    evs: &mut BatchEvaluators<E>,
    data: &Dataset,
    batching: Batching,
    runs: &mut [Run],
    looping: Loop,
    control: Control<'_>,
    on_epoch: impl FnMut(&EpochReport<'_>),
) -> Result<()> {
    if looping == Loop::Host {
        return train_batched(evs, data, batching, runs, control, on_epoch);
    }
    check_runs(runs, looping, control)?;
    let BatchEvaluators { full, rest } = evs;
    drive_steps(
        full,
        rest.as_mut(),
        Some(ResidentBatches { data, batching }),
        &mut runs[0],
        control,
        on_epoch,
    )
}

/// Trains `run` in [`Evaluator::resident_steps`] from where it stands (its completed epochs and
/// the steps of the next one already taken), keeping it as the host loop keeps it: after every
/// epoch the parameters, the optimiser state, each step's loss and the epoch's loss, the mean of
/// its steps' losses summed in float64 in step order as [`train_batched`] sums them.
fn drive_steps<E: Evaluator>(
    ev: &mut E,
    rest: Option<&mut E>,
    batches: Option<ResidentBatches<'_>>,
    run: &mut Run,
    control: Control<'_>,
    mut on_epoch: impl FnMut(&EpochReport<'_>),
) -> Result<()> {
    let per_epoch = batches.map_or(1, |b| num_batches(b.data.len(), b.batching.size));
    let done = run.losses.len();
    let skip = match batches {
        // A full-batch run's step losses are its epoch losses (older checkpoints hold none).
        None => 0,
        Some(_) => run
            .step_losses
            .len()
            .checked_sub(done * per_epoch)
            .filter(|&s| s < per_epoch)
            .ok_or_else(|| {
                Error::Config(format!(
                    "the run records {} step losses for {done} epochs of {per_epoch} steps",
                    run.step_losses.len()
                ))
            })?,
    };
    let (init, state, hyper) = (run.params.clone(), run.state.clone(), run.hyper);
    let job = ResidentJob {
        init: &init,
        hyper: &hyper,
        optimizer: run.optimizer,
        state: &state,
        first_epoch: done,
        skip_steps: skip,
        batches,
        stop: control.stop,
    };
    let history = ev.resident_steps(rest, &job, &mut |e| {
        run.params.copy_from_slice(e.params);
        run.state.clone_from(e.state);
        run.step_losses
            .extend(e.step_losses.iter().map(|&l| f64::from(l)));
        let taken = &run.step_losses[run.losses.len() * per_epoch..];
        let loss = taken.iter().sum::<f64>() / taken.len() as f64;
        run.losses.push(loss);
        on_epoch(&EpochReport {
            run: 0,
            epoch: e.epoch,
            loss,
            vanished: &[],
            params: &run.params,
            losses: &run.losses,
            step_losses: &run.step_losses,
            state: &run.state,
            val: None,
            train_accuracy: None,
        });
    })?;
    run.outcome = Some(match history.outcome {
        Outcome::Diverged { epoch, what } => {
            run.params = history.params;
            run.state = history.state;
            run.step_losses
                .extend(history.tail_steps.iter().map(|&l| f64::from(l)));
            Outcome::Diverged { epoch, what }
        }
        _ if run.losses.len() < run.hyper.epochs => Outcome::Stopped,
        outcome => outcome,
    });
    Ok(())
}

/// The evaluators of a mini-batch run: one built for the full batches, and one for the last,
/// shorter batch of an epoch when the batch size does not divide the samples.
pub struct BatchEvaluators<E> {
    /// Built for `batching.size` samples.
    pub full: E,
    /// Built for the remainder, if there is one.
    pub rest: Option<E>,
}

/// The rows `rows` of `data`, in that order.
pub fn gather(data: &Dataset, rows: &[u32]) -> Dataset {
    let idx: Vec<usize> = rows.iter().map(|&r| r as usize).collect();
    Dataset {
        x: data.x.select(ndarray::Axis(0), &idx),
        y: data.y.select(ndarray::Axis(0), &idx),
    }
}

/// Trains runs in mini-batches ([`Batching`]): each epoch visits every sample once in batches
/// in the epoch's order; each step evaluates the batch (loss and the estimator's nudges, the
/// probe keyed by the step's 1-based number), feeds the gradient to the run's optimiser and
/// records the step's loss. An epoch's loss is the mean of its steps' losses (for one step, that
/// step's loss exactly). A stop is honoured between steps; a run stopped mid-epoch resumes at its
/// next step (the order is drawn again from the seed and the epoch) and gives what one
/// uninterrupted run gives, bit for bit.
///
/// Several runs (a sweep) step through the same batches together, one evaluation per step for
/// all of them: the order of every epoch is drawn from the FIRST run's seed, so a run equals the
/// same run trained alone bit for bit when its seed is the first run's (each run's own seed still
/// keys its SPSA directions). The runs must stand at the same step (a fresh sweep does).
pub fn train_batched<E: Evaluator>(
    evs: &mut BatchEvaluators<E>,
    data: &Dataset,
    batching: Batching,
    runs: &mut [Run],
    control: Control<'_>,
    mut on_epoch: impl FnMut(&EpochReport<'_>),
) -> Result<()> {
    check_runs(runs, Loop::Host, control)?;
    let Some(first) = runs.first() else {
        return Err(Error::Config("no runs to train".into()));
    };
    let (n, p, order_seed) = (data.len(), first.params.len(), first.hyper.seed);
    let per_epoch = num_batches(n, batching.size);
    let at = first.step_losses.len();
    for run in runs.iter() {
        if run.step_losses.len() < run.epoch() * per_epoch || run.step_losses.len() != at {
            return Err(Error::Config(format!(
                "the runs record {} step losses for {} epochs of {per_epoch} steps; runs of one \
                 mini-batch sweep stand at the same step ({at})",
                run.step_losses.len(),
                run.epoch()
            )));
        }
        if run.params.len() != p {
            return Err(Error::Config("runs of one sweep share the model".into()));
        }
    }
    let r = runs.len();
    if r > evs.full.max_runs() {
        return Err(Error::Config(format!(
            "{r} runs for an evaluator of at most {}",
            evs.full.max_runs()
        )));
    }
    let nv = first.hyper.probe(1).len(p);
    let (mut next, mut grad) = (vec![0.0f32; p], vec![E::Loss::ZERO; p]);
    let (mut losses, mut values) = (vec![E::Loss::ZERO; r], vec![E::Loss::ZERO; r * nv]);
    let (mut params, mut active) = (vec![0.0f32; r * p], vec![false; r]);
    let mut probes = vec![first.hyper.probe(1); r];
    // Steps done in all (the runs move in lockstep); epoch = steps / per_epoch.
    let mut steps = at;
    while runs.iter().any(Run::wants_more) {
        let epoch = steps / per_epoch + 1;
        let order = epoch_order(n, order_seed, (epoch - 1) as u64, batching.shuffle);
        let done = steps - (epoch - 1) * per_epoch;
        for range in batches(n, batching.size).skip(done) {
            let stop = control.stop.is_some_and(|s| s.load(Ordering::Relaxed));
            for (i, run) in runs.iter_mut().enumerate() {
                if stop && run.wants_more() {
                    run.outcome = Some(Outcome::Stopped);
                }
                active[i] = run.wants_more();
                if active[i] {
                    params[i * p..(i + 1) * p].copy_from_slice(&run.params);
                    probes[i] = run.hyper.probe(run.step_losses.len() + 1);
                }
            }
            if !active.contains(&true) {
                break;
            }
            let batch = gather(data, &order[range]);
            let ev = match &mut evs.rest {
                Some(rest) if batch.len() != evs.full.batch_len() => rest,
                _ => &mut evs.full,
            };
            ev.set_batch(&batch)?;
            ev.probe(&params, &probes, &active, &mut losses, &mut values)?;
            for (i, run) in runs.iter_mut().enumerate().filter(|(i, _)| active[*i]) {
                let h = run.hyper;
                let vanished = estimate::gradient(
                    h.estimator,
                    h.step,
                    h.eps,
                    &probes[i],
                    &run.params,
                    &values[i * nv..(i + 1) * nv],
                    &mut grad,
                );
                run.vanished.record(epoch, &vanished, &run.params);
                if let Some(what) = run.step(&grad, losses[i], &mut next, control.allow_divergence)
                {
                    if !control.allow_divergence {
                        run.outcome = Some(Outcome::Diverged { epoch, what });
                    }
                }
            }
            steps += 1;
        }
        for (i, run) in runs.iter_mut().enumerate() {
            // A run that stopped or diverged this epoch keeps its steps but no epoch loss.
            if !active[i] || run.outcome.is_some() || run.losses.len() + 1 != epoch {
                continue;
            }
            let taken = &run.step_losses[run.epoch() * per_epoch..];
            let mean = taken.iter().sum::<f64>() / taken.len() as f64;
            run.losses.push(mean);
            on_epoch(&EpochReport {
                run: i,
                epoch,
                loss: mean,
                vanished: &[],
                params: &run.params,
                losses: &run.losses,
                step_losses: &run.step_losses,
                state: &run.state,
                val: None,
                train_accuracy: None,
            });
        }
    }
    // A stop ends the runs it caught as Stopped (set above); the others finished.
    for run in runs.iter_mut() {
        run.outcome.get_or_insert(Outcome::Finished);
    }
    Ok(())
}
