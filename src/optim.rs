//! Optimisers: what a step does with a gradient vector. Plain SGD (the book's rule), SGD with
//! momentum and Adam, with PyTorch's semantics (`torch.optim.SGD` with dampening 0 and no Nesterov;
//! `torch.optim.Adam` with bias correction, no AMSGrad, no weight decay).
//!
//! An optimiser sees only a gradient, never how it was estimated. Parameters and every piece of
//! state are stored as float32; the arithmetic of a step is done in the loss's float type `R`
//! (float32 or float64, see [`Real`]), each stored value rounded to float32 once, where it is
//! stored. [`OptState::step`] spells out the operation order, which the GPU twin and the NumPy
//! transcription (`benches/optim_reference.py`) copy.

use crate::error::{Error, Result};
use crate::precision::Real;
use serde::{Deserialize, Serialize};

/// PyTorch's default momentum factor for `--optimizer momentum`.
pub const DEFAULT_MOMENTUM: f64 = 0.9;
/// PyTorch's default Adam β1.
pub const DEFAULT_BETA1: f64 = 0.9;
/// PyTorch's default Adam β2.
pub const DEFAULT_BETA2: f64 = 0.999;
/// PyTorch's default Adam ε.
pub const DEFAULT_ADAM_EPS: f64 = 1e-8;

/// Which update rule turns a gradient into a parameter change.
/// The book's update of one parameter: `fl32(w − (delta / eps) · lr)`, in the loss's float type.
/// The GPU-resident loop does the same float32 operations in `shaders/resident.wgsl`.
pub fn update<R: Real>(w: f32, delta: R, eps: R, lr: R) -> f32 {
    apply(w, delta / eps, lr)
}

/// `fl32(w − grad · lr)` in the loss's float type: the book's step, and [`Optimizer::Sgd`]'s.
pub fn apply<R: Real>(w: f32, grad: R, lr: R) -> f32 {
    (R::from_f32(w) - grad * lr).to_f32()
}

#[derive(Clone, Copy, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum Optimizer {
    /// The book's rule: `w ← fl32(w − grad·lr)`, exactly [`apply`].
    #[default]
    Sgd,
    /// Heavy-ball momentum (PyTorch's SGD with `momentum`, dampening 0, no Nesterov).
    Momentum {
        /// μ in [0, 1).
        momentum: f64,
    },
    /// Adam with bias correction (Kingma & Ba; PyTorch's defaults otherwise).
    Adam {
        /// Decay of the first moment, in [0, 1).
        beta1: f64,
        /// Decay of the second moment, in [0, 1).
        beta2: f64,
        /// Added to the root of the second moment; positive and finite.
        eps: f64,
    },
}

impl Optimizer {
    /// Momentum with PyTorch's usual factor, [`DEFAULT_MOMENTUM`].
    pub fn momentum() -> Optimizer {
        Optimizer::Momentum {
            momentum: DEFAULT_MOMENTUM,
        }
    }

    /// Adam with PyTorch's defaults ([`DEFAULT_BETA1`], [`DEFAULT_BETA2`], [`DEFAULT_ADAM_EPS`]).
    pub fn adam() -> Optimizer {
        Optimizer::Adam {
            beta1: DEFAULT_BETA1,
            beta2: DEFAULT_BETA2,
            eps: DEFAULT_ADAM_EPS,
        }
    }

    /// `"sgd"`, `"momentum"` or `"adam"`.
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Sgd => "sgd",
            Optimizer::Momentum { .. } => "momentum",
            Optimizer::Adam { .. } => "adam",
        }
    }

    /// Rejects hyperparameters outside their ranges (an [`Error::Config`] naming the value): a
    /// decay of 1 or more never forgets and makes Adam's bias correction divide by zero.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Optimizer::Sgd => Ok(()),
            Optimizer::Momentum { momentum } => unit_interval("momentum", momentum),
            Optimizer::Adam { beta1, beta2, eps } => {
                unit_interval("beta1", beta1)?;
                unit_interval("beta2", beta2)?;
                if eps.is_finite() && eps > 0.0 {
                    Ok(())
                } else {
                    Err(Error::Config(format!(
                        "adam eps must be positive and finite, got {eps}"
                    )))
                }
            }
        }
    }
}

/// `Ok` when `value` is in [0, 1) (NaN is not).
fn unit_interval(what: &str, value: f64) -> Result<()> {
    if (0.0..1.0).contains(&value) {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{what} must be in [0, 1), got {value}"
        )))
    }
}

/// An optimiser's float32 state for one run: empty for SGD, the velocity for momentum, the two
/// moments and the step count for Adam. Serialisable for checkpoints; the float32 values survive
/// a JSON round trip exactly. A deserialised state should be checked with [`OptState::check`].
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct OptState {
    /// Momentum's velocity (one per parameter); empty otherwise.
    #[serde(default)]
    pub velocity: Vec<f32>,
    /// Adam's first moment (one per parameter); empty otherwise.
    #[serde(default)]
    pub m: Vec<f32>,
    /// Adam's second moment (one per parameter); empty otherwise.
    #[serde(default)]
    pub v: Vec<f32>,
    /// Adam's steps taken so far (its bias correction's exponent); 0 otherwise.
    #[serde(default)]
    pub t: u64,
}

impl OptState {
    /// The state before the first step: zeros, as PyTorch starts.
    pub fn new(opt: &Optimizer, num_params: usize) -> OptState {
        let zeros = || vec![0.0f32; num_params];
        match opt {
            Optimizer::Sgd => OptState::default(),
            Optimizer::Momentum { .. } => OptState {
                velocity: zeros(),
                ..OptState::default()
            },
            Optimizer::Adam { .. } => OptState {
                m: zeros(),
                v: zeros(),
                ..OptState::default()
            },
        }
    }

    /// Whether this state (say, read from a checkpoint) belongs to `opt` over `num_params`
    /// parameters; `Err` names the field that does not fit, for the caller to wrap in its error.
    pub fn check(&self, opt: &Optimizer, num_params: usize) -> std::result::Result<(), String> {
        let want = |uses: bool| if uses { num_params } else { 0 };
        let (momentum, adam) = match opt {
            Optimizer::Sgd => (false, false),
            Optimizer::Momentum { .. } => (true, false),
            Optimizer::Adam { .. } => (false, true),
        };
        for (field, len, want) in [
            ("velocity", self.velocity.len(), want(momentum)),
            ("m", self.m.len(), want(adam)),
            ("v", self.v.len(), want(adam)),
        ] {
            if len != want {
                return Err(format!(
                    "optimiser state {field} has {len} values, {} over {num_params} parameters needs {want}",
                    opt.name()
                ));
            }
        }
        if !adam && self.t != 0 {
            return Err(format!(
                "optimiser state t is {}, {} keeps no step count",
                self.t,
                opt.name()
            ));
        }
        Ok(())
    }

    /// One step: updates `params` in place from `grad` at learning rate `lr`. `x̄` is a stored
    /// float32 widened to `R`, `fl32` rounds to float32 storage, hyperparameters are converted
    /// with [`Real::from_f64`], and every expression is evaluated left to right as written:
    ///
    /// - **sgd**: `w ← fl32(w̄ − g·lr)` ([`apply`]).
    /// - **momentum** (μ): `vel ← fl32(μ·vel̄ + g)`, then `w ← fl32(w̄ − lr·vel̄)` with the new
    ///   velocity. From the zero start the first step stores `fl32(g)`, PyTorch's `buf = grad`.
    /// - **adam** (β1, β2, ε): first `t ← t + 1` and, in float64, `p1 = β1^t`, `p2 = β2^t` by
    ///   [`power`] (binary exponentiation), `bc1 = R(1 − p1)`, `bc2 = R(1 − p2)`, `c1 = R(1 − β1)`,
    ///   `c2 = R(1 − β2)` (each difference in float64, then converted). Then per parameter:
    ///   `m ← fl32(R(β1)·m̄ + c1·g)`; `v ← fl32(R(β2)·v̄ + c2·(g·g))`; `m̂ = m̄ / bc1`;
    ///   `v̂ = v̄ / bc2` (the new, stored moments); `d = sqrt(v̂) + R(ε)`;
    ///   `w ← fl32(w̄ − (lr·m̂) / d)`. `sqrt` is correctly rounded in `R`.
    ///
    /// # Panics
    /// If `grad`, `params` and the state (see [`OptState::check`]) differ in length: a
    /// programming error, never a property of user input once the state is checked.
    pub fn step<R: Real>(&mut self, opt: &Optimizer, params: &mut [f32], grad: &[R], lr: R) {
        assert_eq!(params.len(), grad.len(), "one gradient per parameter");
        match *opt {
            Optimizer::Sgd => {
                for (w, &g) in params.iter_mut().zip(grad) {
                    *w = apply(*w, g, lr);
                }
            }
            Optimizer::Momentum { momentum } => {
                assert_eq!(self.velocity.len(), params.len(), "velocity per parameter");
                let mu = R::from_f64(momentum);
                for ((w, vel), &g) in params.iter_mut().zip(&mut self.velocity).zip(grad) {
                    *vel = (mu * R::from_f32(*vel) + g).to_f32();
                    *w = (R::from_f32(*w) - lr * R::from_f32(*vel)).to_f32();
                }
            }
            Optimizer::Adam { beta1, beta2, eps } => {
                self.adam_step(beta1, beta2, eps, params, grad, lr)
            }
        }
    }

    /// Adam's step; see [`OptState::step`] for the order of operations.
    fn adam_step<R: Real>(
        &mut self,
        beta1: f64,
        beta2: f64,
        eps: f64,
        params: &mut [f32],
        grad: &[R],
        lr: R,
    ) {
        assert_eq!(self.m.len(), params.len(), "first moment per parameter");
        assert_eq!(self.v.len(), params.len(), "second moment per parameter");
        self.t += 1;
        let bc1 = R::from_f64(1.0 - power(beta1, self.t));
        let bc2 = R::from_f64(1.0 - power(beta2, self.t));
        let (b1, c1) = (R::from_f64(beta1), R::from_f64(1.0 - beta1));
        let (b2, c2) = (R::from_f64(beta2), R::from_f64(1.0 - beta2));
        let eps = R::from_f64(eps);
        let moments = self.m.iter_mut().zip(&mut self.v);
        for ((w, (m, v)), &g) in params.iter_mut().zip(moments).zip(grad) {
            *m = (b1 * R::from_f32(*m) + c1 * g).to_f32();
            *v = (b2 * R::from_f32(*v) + c2 * (g * g)).to_f32();
            let m_hat = R::from_f32(*m) / bc1;
            let v_hat = R::from_f32(*v) / bc2;
            let d = v_hat.sqrt() + eps;
            *w = (R::from_f32(*w) - (lr * m_hat) / d).to_f32();
        }
    }
}

/// `base^exp` in float64 by right-to-left binary exponentiation: `r = 1; b = base`; for each bit
/// of `exp` from the lowest, `if bit { r = r·b }`, then `b = b·b` (skipped after the top bit).
/// Deterministic on every machine (only IEEE multiplications, unlike `powi`/`powf`) and O(log exp),
/// so a long run's step count costs nothing. `power(β, 0) = 1`.
pub fn power(base: f64, exp: u64) -> f64 {
    let (mut r, mut b, mut e) = (1.0f64, base, exp);
    while e > 0 {
        if e & 1 == 1 {
            r *= b;
        }
        e >>= 1;
        if e > 0 {
            b *= b;
        }
    }
    r
}
