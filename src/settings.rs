//! The vocabulary of a run that every layer shares: the method, the hyperparameters, why a run
//! ended and what computed it. Pure data; no I/O, no device.

use crate::error::{Error, Fix, Result, Setting};
use crate::estimate::{Estimator, Probe, StepMode};
use crate::model::Loss;
use crate::precision::Precision;
use crate::rng::Direction;
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
    /// With `--shard`: each adapter and the parameters it evaluates (empty otherwise).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardInfo>,
}

/// One adapter of a sharded run and its part of every step, as reports record it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShardInfo {
    /// Adapter name.
    pub adapter: String,
    /// wgpu backend.
    pub backend: String,
    /// The parameters `[start, end)` whose nudges it evaluates (coordinate estimators).
    pub params: [usize; 2],
    /// For SPSA, the direction evaluations `[start, end)` of the step's `2q` it runs instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluations: Option<[usize; 2]>,
    /// Evaluations per second measured once at start, from which the split was sized (`--shard`;
    /// MPI ranks take equal shares).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed: Option<u64>,
}

impl DeviceInfo {
    /// The CPU evaluator with `threads` threads.
    pub fn cpu(threads: usize) -> DeviceInfo {
        DeviceInfo {
            kind: "cpu".into(),
            adapter: format!("CPU reference ({threads} threads)"),
            backend: "native".into(),
            shards: Vec::new(),
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

/// An option whose values have names (what checkpoints store and the command line spells).
pub trait Named: Copy + PartialEq + 'static {
    /// Every value, in the order messages list them.
    const ALL: &'static [Self];
    /// The value's name.
    fn name(self) -> &'static str;
    /// The value named `name`.
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.name() == name)
    }
    /// `"naive or reuse"`: the names, for messages.
    fn choices() -> String {
        let names: Vec<&str> = Self::ALL.iter().map(|v| v.name()).collect();
        names.join(" or ")
    }
}

impl Named for Precision {
    const ALL: &'static [Self] = &[Precision::F32, Precision::F64];
    fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F64 => "f64",
        }
    }
}

impl Named for Method {
    const ALL: &'static [Self] = &[Method::Naive, Method::Reuse];
    fn name(self) -> &'static str {
        Method::name(self)
    }
}

impl Named for StepMode {
    const ALL: &'static [Self] = &[StepMode::Nominal, StepMode::Exact];
    fn name(self) -> &'static str {
        StepMode::name(self)
    }
}

impl Named for Direction {
    const ALL: &'static [Self] = &[Direction::Rademacher, Direction::Gaussian];
    fn name(self) -> &'static str {
        Direction::name(self)
    }
}

impl Named for Loss {
    const ALL: &'static [Self] = &[Loss::Mse, Loss::CrossEntropy];
    fn name(self) -> &'static str {
        Loss::name(self)
    }
}

/// Which kind of device computes the losses, as a run records it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceKind {
    /// wgpu compute shaders.
    #[default]
    Gpu,
    /// The CPU reference.
    Cpu,
}

impl Named for DeviceKind {
    const ALL: &'static [Self] = &[DeviceKind::Gpu, DeviceKind::Cpu];
    fn name(self) -> &'static str {
        match self {
            DeviceKind::Gpu => "gpu",
            DeviceKind::Cpu => "cpu",
        }
    }
}

/// Which loop applies the update, as a run records it (without [`Loop::Resident`]'s batch size).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoopKind {
    /// The host loop.
    #[default]
    Host,
    /// The GPU-resident loop.
    Resident,
}

impl Named for LoopKind {
    const ALL: &'static [Self] = &[LoopKind::Host, LoopKind::Resident];
    fn name(self) -> &'static str {
        match self {
            LoopKind::Host => "host",
            LoopKind::Resident => "resident",
        }
    }
}

/// The gradient estimator's family, without SPSA's parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EstimatorKind {
    /// Forward differences (the book's).
    #[default]
    Forward,
    /// Central differences.
    Central,
    /// Richardson extrapolation of central differences.
    Richardson,
    /// Simultaneous perturbation.
    Spsa,
}

impl Named for EstimatorKind {
    const ALL: &'static [Self] = &[
        EstimatorKind::Forward,
        EstimatorKind::Central,
        EstimatorKind::Richardson,
        EstimatorKind::Spsa,
    ];
    fn name(self) -> &'static str {
        match self {
            EstimatorKind::Forward => "forward",
            EstimatorKind::Central => "central",
            EstimatorKind::Richardson => "richardson",
            EstimatorKind::Spsa => "spsa",
        }
    }
}

/// The estimator options of a run as chosen: the family, the step mode, and SPSA's directions per
/// step and their distribution (recorded whatever the family, as they were given).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EstimatorChoice {
    /// The family.
    pub estimator: EstimatorKind,
    /// What nudges are divided by.
    pub step: StepMode,
    /// SPSA directions per step.
    pub samples: u32,
    /// SPSA direction distribution.
    pub direction: Direction,
}

impl Default for EstimatorChoice {
    fn default() -> Self {
        EstimatorChoice {
            estimator: EstimatorKind::Forward,
            step: StepMode::Nominal,
            samples: 1,
            direction: Direction::Rademacher,
        }
    }
}

impl EstimatorChoice {
    /// The estimator and step mode it stands for.
    pub fn get(&self) -> (Estimator, StepMode) {
        let estimator = match self.estimator {
            EstimatorKind::Forward => Estimator::Forward,
            EstimatorKind::Central => Estimator::Central,
            EstimatorKind::Richardson => Estimator::Richardson,
            EstimatorKind::Spsa => Estimator::Spsa {
                samples: self.samples,
                direction: self.direction,
            },
        };
        (estimator, self.step)
    }
}

/// How an epoch is split into steps: batches of `size` samples (the last holding the remainder)
/// in a fresh seeded order per epoch ([`crate::batches::epoch_order`], keyed by the run's seed), or
/// file order without `shuffle`. A size of 0 or at least the number of samples is the book's full
/// batch: one step per epoch on every sample in file order (shuffling it would only change the
/// order the losses are summed in).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Batching {
    /// Samples per step (0: every sample).
    pub size: usize,
    /// Draw a new order every epoch.
    pub shuffle: bool,
}

impl Batching {
    /// One step per epoch on every sample (the book's).
    pub fn full() -> Batching {
        Batching {
            size: 0,
            shuffle: false,
        }
    }

    /// Whether an epoch of `samples` is one step on all of them.
    pub fn is_full(&self, samples: usize) -> bool {
        self.size == 0 || self.size >= samples
    }
}

/// Who applies the update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Loop {
    /// The host reads the losses back each epoch and applies the update (the book's design).
    #[default]
    Host,
    /// The GPU applies the update; losses come back after each batch of this many epochs (the
    /// book's full-batch sgd), or after every epoch (mini-batches, momentum, Adam, or this many
    /// being 1). Forward differences over the nominal eps only; equal to the host loop bit for bit.
    Resident(usize),
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
            return Err(Error::invalid(
                Setting::Epochs,
                format!("must be between 1 and {MAX_EPOCHS}, got {}", self.epochs),
            ));
        }
        if !(self.lr >= 0.0 && self.lr.is_finite()) {
            return Err(Error::invalid(
                Setting::Lr,
                format!("must be finite and >= 0, got {}", self.lr),
            ));
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return Err(Error::invalid(
                Setting::Eps,
                format!("must be finite and > 0, got {}", self.eps),
            ));
        }
        if !(self.eps as f32).is_finite() {
            return Err(Error::invalid(
                Setting::Eps,
                format!(
                    "{} overflows float32 (largest {:e}); every nudged parameter would be infinite",
                    self.eps,
                    f32::MAX
                ),
            ));
        }
        if (self.eps as f32) < f32::MIN_POSITIVE {
            return Err(Error::invalid(
                Setting::Eps,
                format!(
                    "{:e} is below the smallest normal float32 ({:e}); every nudge would vanish",
                    self.eps,
                    f32::MIN_POSITIVE
                ),
            ));
        }
        if matches!(self.estimator, Estimator::Spsa { .. }) && self.step == StepMode::Exact {
            return Err(Error::refused(
                &[(Setting::Step, "exact"), (Setting::Estimator, "spsa")],
                "exact steps apply to coordinate nudges; SPSA moves all parameters at once",
                Some(Fix::Use(Setting::Step, "nominal")),
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
