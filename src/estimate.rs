//! Gradient estimators: which perturbed losses a step needs ([`Probe`]) and how they combine into a
//! gradient ([`gradient`]).
//!
//! Every estimator works from differences `d = L(perturbed) − L(params)` that the evaluators return.
//! With the naive method `d` is the difference of two rounded losses (exact by Sterbenz's lemma when
//! they are within a factor of two); with the reuse method it is summed directly from per-sample
//! changes.

use crate::error::{Error, Result, Setting};
use crate::precision::Real;
use crate::rng::{direction, Direction, DirectionKey};
use serde::Serialize;

/// Most coordinate offsets one step may evaluate (Richardson needs four).
pub const MAX_OFFSETS: usize = 4;

/// Most SPSA directions per step.
pub const MAX_SPSA_SAMPLES: u32 = 1024;

/// How a step turns perturbed losses into a gradient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Estimator {
    /// `(L(w + h·e_k) − L(w)) / h`: the book's forward difference, one nudge per parameter.
    #[default]
    Forward,
    /// `(L(w + h·e_k) − L(w − h·e_k)) / 2h`: error O(h²) instead of O(h), two nudges per parameter.
    Central,
    /// `(4·D(h/2) − D(h)) / 3` with D the central difference: cancels the h² term, four nudges.
    Richardson,
    /// Simultaneous perturbation: `q` random directions z per step (never stored; regenerated from
    /// a counter-based RNG), gradient `mean_i ((L(w + h·z_i) − L(w − h·z_i)) / 2h) · z_i`.
    Spsa {
        /// Directions per step (q).
        samples: u32,
        /// Distribution of z's components.
        direction: Direction,
    },
}

impl Estimator {
    /// `"forward"`, `"central"`, `"richardson"` or `"spsa"`.
    pub fn name(self) -> &'static str {
        match self {
            Estimator::Forward => "forward",
            Estimator::Central => "central",
            Estimator::Richardson => "richardson",
            Estimator::Spsa { .. } => "spsa",
        }
    }

    /// Rejects what cannot run: SPSA without directions or with more than [`MAX_SPSA_SAMPLES`].
    pub fn validate(self) -> Result<()> {
        if let Estimator::Spsa { samples, .. } = self {
            if samples == 0 || samples > MAX_SPSA_SAMPLES {
                return Err(Error::invalid(
                    Setting::Samples,
                    format!("must be between 1 and {MAX_SPSA_SAMPLES}, got {samples}"),
                ));
            }
        }
        Ok(())
    }

    /// The coordinate offsets this estimator nudges each parameter by (empty for SPSA).
    pub fn offsets(self, eps: f32) -> Vec<f32> {
        match self {
            Estimator::Forward => vec![eps],
            Estimator::Central => vec![eps, -eps],
            Estimator::Richardson => vec![eps, -eps, eps / 2.0, -eps / 2.0],
            Estimator::Spsa { .. } => Vec::new(),
        }
    }

    /// What a step at `step` (0-based) evaluates for a run with nudge `eps` and `seed`.
    pub fn probe(self, eps: f32, seed: u64, step: u32) -> Probe {
        match self {
            Estimator::Spsa { samples, direction } => Probe::Directions {
                eps,
                seed,
                step,
                samples,
                direction,
            },
            _ => Probe::coordinates(&self.offsets(eps)),
        }
    }
}

/// Which step each nudge is divided by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepMode {
    /// The nominal eps, as the book does.
    #[default]
    Nominal,
    /// The step float32 actually applied, `fl32(w + eps) − w`: the nominal eps differs from it by
    /// up to half an ulp of w, which dominates the central difference's error.
    Exact,
}

impl StepMode {
    /// `"nominal"` or `"exact"`.
    pub fn name(self) -> &'static str {
        match self {
            StepMode::Nominal => "nominal",
            StepMode::Exact => "exact",
        }
    }
}

/// How many values of which kind a probe yields: what a GPU evaluator is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// This many coordinate offsets per parameter.
    Coordinates(usize),
    /// This many SPSA directions, each evaluated at ±eps.
    Directions(u32),
}

impl Estimator {
    /// The shape of this estimator's probes.
    pub fn shape(self) -> Shape {
        match self {
            Estimator::Forward => Shape::Coordinates(1),
            Estimator::Central => Shape::Coordinates(2),
            Estimator::Richardson => Shape::Coordinates(4),
            Estimator::Spsa { samples, .. } => Shape::Directions(samples),
        }
    }
}

impl Shape {
    /// Values per run for `p` parameters.
    pub fn len(self, p: usize) -> usize {
        match self {
            Shape::Coordinates(count) => count * p,
            Shape::Directions(samples) => 2 * samples as usize,
        }
    }

    /// Whether it yields nothing.
    pub fn is_empty(self, p: usize) -> bool {
        self.len(p) == 0
    }
}

/// The perturbed losses one step of one run needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Probe {
    /// Each parameter alone moved by each offset: value `j·P + k` is
    /// `L(w with w_k → fl32(w_k + offsets[j])) − L(w)`.
    Coordinates {
        /// The offsets (the first `count` are used).
        offsets: [f32; MAX_OFFSETS],
        /// How many.
        count: usize,
    },
    /// Every parameter moved along ± one random direction: values `2i` and `2i + 1` are
    /// `L(fl32(w + fl32(eps·z_i))) − L(w)` and `L(fl32(w + fl32(−eps·z_i))) − L(w)`.
    Directions {
        /// Step along each direction.
        eps: f32,
        /// Run seed (the RNG key).
        seed: u64,
        /// 0-based step.
        step: u32,
        /// Directions (q).
        samples: u32,
        /// Distribution of the components.
        direction: Direction,
    },
}

impl Probe {
    /// Coordinate offsets (at most [`MAX_OFFSETS`]; extra ones are dropped by a debug assertion).
    pub fn coordinates(offsets: &[f32]) -> Probe {
        debug_assert!(offsets.len() <= MAX_OFFSETS);
        let mut o = [0.0; MAX_OFFSETS];
        let count = offsets.len().min(MAX_OFFSETS);
        o[..count].copy_from_slice(&offsets[..count]);
        Probe::Coordinates { offsets: o, count }
    }

    /// Values this probe yields for `p` parameters.
    pub fn len(&self, p: usize) -> usize {
        self.shape().len(p)
    }

    /// Whether it yields nothing.
    pub fn is_empty(&self, p: usize) -> bool {
        self.len(p) == 0
    }

    /// Its shape.
    pub fn shape(&self) -> Shape {
        match *self {
            Probe::Coordinates { count, .. } => Shape::Coordinates(count),
            Probe::Directions { samples, .. } => Shape::Directions(samples),
        }
    }

    /// The key of direction `sample` (SPSA only).
    pub fn key(&self, sample: u32) -> Option<DirectionKey> {
        match *self {
            Probe::Directions { seed, step, .. } => Some(DirectionKey { seed, step, sample }),
            Probe::Coordinates { .. } => None,
        }
    }

    /// The parameters of perturbed evaluation `i` of a direction probe: `fl32(w + fl32(±eps·z))`.
    pub fn perturbed(&self, params: &[f32], i: usize, out: &mut [f32]) {
        if let Probe::Directions {
            eps,
            seed,
            step,
            direction: dist,
            ..
        } = *self
        {
            let key = DirectionKey {
                seed,
                step,
                sample: (i / 2) as u32,
            };
            let h = if i.is_multiple_of(2) { eps } else { -eps };
            for (k, (o, &w)) in out.iter_mut().zip(params).enumerate() {
                *o = w + h * direction(key, k as u32, dist);
            }
        }
    }
}

/// The float32 step a nudge of `w` by `h` really makes: `fl32(w + h) − w` (exact in float32).
pub fn applied_step(w: f32, h: f32) -> f32 {
    (w + h) - w
}

/// Turns one run's probe values into a gradient (length P) in the loss's float type, for the
/// probe `estimator.probe(eps, seed, step)` evaluated at `params`.
///
/// Returns the parameters whose nudge vanished in float32 (`w + eps == w`, as for the book's weight
/// of 12,755 at lr = 1): a nominal forward difference reads 0 there without a word; here they are
/// reported, their gradient is 0, and Richardson falls back to the full-step central difference
/// when only its half step vanishes.
pub fn gradient<R: Real>(
    estimator: Estimator,
    step: StepMode,
    eps: f64,
    probe: &Probe,
    params: &[f32],
    values: &[R],
    grad: &mut [R],
) -> Vec<usize> {
    let p = params.len();
    let eps32 = eps as f32;
    let eps_r = R::from_f64(eps);
    let mut vanished = Vec::new();
    // Central difference of offset pair j (offsets ±h) for parameter k; None if the step vanished.
    let central = |j: usize, k: usize, h: f32, nominal: R| -> Option<R> {
        let (dp, dm) = (values[2 * j * p + k], values[(2 * j + 1) * p + k]);
        let (hp, hm) = (applied_step(params[k], h), applied_step(params[k], -h));
        if hp == hm {
            return None;
        }
        Some(match step {
            StepMode::Nominal => (dp - dm) / nominal,
            StepMode::Exact => (dp - dm) / (R::from_f32(hp) - R::from_f32(hm)),
        })
    };
    match estimator {
        Estimator::Forward => {
            for k in 0..p {
                let h = applied_step(params[k], eps32);
                grad[k] = if h == 0.0 {
                    vanished.push(k);
                    R::ZERO
                } else {
                    match step {
                        StepMode::Nominal => values[k] / eps_r,
                        StepMode::Exact => values[k] / R::from_f32(h),
                    }
                };
            }
        }
        Estimator::Central => {
            for (k, g) in grad.iter_mut().enumerate() {
                *g = central(0, k, eps32, eps_r + eps_r).unwrap_or_else(|| {
                    vanished.push(k);
                    R::ZERO
                });
            }
        }
        Estimator::Richardson => {
            for (k, g) in grad.iter_mut().enumerate() {
                let full = central(0, k, eps32, eps_r + eps_r);
                let half = central(1, k, eps32 / 2.0, eps_r);
                if half.is_none() {
                    vanished.push(k);
                }
                *g = match (full, half) {
                    (Some(d1), Some(d2)) => (R::from_f64(4.0) * d2 - d1) / R::from_f64(3.0),
                    (Some(d1), None) => d1,
                    (None, _) => R::ZERO,
                };
            }
        }
        Estimator::Spsa {
            samples,
            direction: dist,
        } => {
            grad.fill(R::ZERO);
            let two_eps = eps_r + eps_r;
            for i in 0..samples {
                let key = probe.key(i).expect("SPSA steps use a direction probe");
                let i = i as usize;
                let c = (values[2 * i] - values[2 * i + 1]) / two_eps;
                for (k, g) in grad.iter_mut().enumerate() {
                    *g = *g + c * R::from_f32(direction(key, k as u32, dist));
                }
            }
            let q = R::from_f64(f64::from(samples));
            for g in grad.iter_mut() {
                *g = *g / q;
            }
        }
    }
    vanished
}
