//! The command line: `perturb train`, `devices`, `bench`, `check`, `sweep`, `eval`, `predict` and
//! `shaders`, one file each (`eval` and `predict` share one).

use crate::checkpoint::DataRef;
use crate::data::Dataset;
use crate::error::{Error, Result, Setting};
use crate::estimate::{Estimator, StepMode};
use crate::gpu::AdapterOptions;
use crate::model::{Activation, Loss, Model};
use crate::precision::Precision;
use crate::rng::Direction;
use crate::settings::{DeviceKind, EstimatorChoice, EstimatorKind, LoopKind, Method};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

// `println!` that stops printing when stdout is closed or full (`perturb train | head`) instead of
// panicking or ending the run, and prints nothing under `perturb train --quiet` or `--json` (see
// `output`).
macro_rules! say {
    ($($t:tt)*) => {{
        if !$crate::cli::output::silenced() {
            let line = format!($($t)*);
            $crate::cli::output::print_line(&line);
        }
    }};
}

mod bench;
mod bench_process;
mod check;
mod devices;
mod eval;
pub mod exit;
pub mod interrupt;
pub mod output;
pub mod outputs;
mod scale;
mod shaders;
mod sweep;
mod train;

pub use bench::{bench, BenchArgs};
pub use check::{check, CheckArgs};
pub use devices::devices;
pub use eval::{eval, predict, EvalArgs, PredictArgs};
pub use scale::{ScaleArgs, Session};
pub use shaders::{shaders, ShadersArgs, TargetArg};
pub use sweep::{sweep, SweepArgs, SweepReport, SweepRun, MAX_SWEEP_RUNS};
pub use train::{train, TrainArgs};

/// Train neural networks by weight perturbation on the GPU (the book's chapter-1 algorithm).
#[derive(Debug, Parser)]
#[command(name = "perturb", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a network; with no options, the book's 2-3-1 example on the GPU.
    Train(TrainArgs),
    /// List the adapters wgpu sees and mark the one `train` would use.
    Devices(AdapterArgs),
    /// Time training steps over named sizes, methods, devices and loop modes.
    Bench(BenchArgs),
    /// Measure every gradient estimator against backpropagation, with an eps sweep.
    Check(CheckArgs),
    /// Train several runs (lr × eps × seed) side by side, all in one evaluation per epoch.
    Sweep(SweepArgs),
    /// Score a model on data: loss, and for class labels accuracy and the confusion matrix.
    Eval(EvalArgs),
    /// Print a model's predictions: a class per sample (cross-entropy) or its outputs (mse).
    Predict(PredictArgs),
    /// Write every pipeline variant's shader as naga translates it for Vulkan, GL, Metal, DX12.
    Shaders(ShadersArgs),
}

/// Which adapter to use.
#[derive(Debug, Args, Clone, Default)]
pub struct AdapterArgs {
    /// Adapter whose name contains this (case-insensitive) [default: $WGPU_ADAPTER_NAME].
    #[arg(long)]
    pub adapter: Option<String>,
    /// Use a software adapter (lavapipe / llvmpipe).
    #[arg(long)]
    pub force_fallback: bool,
    /// Only these backends, comma-separated: vulkan, gl, metal, dx12 [default: $WGPU_BACKEND, else all].
    #[arg(long, value_name = "LIST")]
    pub backend: Option<String>,
}

impl AdapterArgs {
    fn options(&self) -> AdapterOptions {
        let mut o = AdapterOptions::from_env();
        if self.adapter.is_some() {
            o.name = self.adapter.clone();
        }
        o.force_fallback = self.force_fallback;
        if self.backend.is_some() {
            o.backend = self.backend.clone();
        }
        o
    }
}

/// The command-line name of a `ValueEnum` option value (`value_name(MethodArg::Reuse)` is
/// `"reuse"`); a test holds these equal to the library's names ([`crate::settings::Named`]).
pub fn value_name<T: ValueEnum>(value: T) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string())
}

/// Each flag value is the library value of the same name.
macro_rules! same_values {
    ($arg:ty => $lib:ty { $($a:ident => $l:expr),+ $(,)? }) => {
        impl From<$arg> for $lib {
            fn from(v: $arg) -> $lib {
                match v {
                    $(<$arg>::$a => $l),+
                }
            }
        }
    };
}

same_values!(DeviceArg => DeviceKind { Gpu => DeviceKind::Gpu, Cpu => DeviceKind::Cpu });
same_values!(PrecisionArg => Precision { F32 => Precision::F32, F64 => Precision::F64 });
same_values!(MethodArg => Method { Naive => Method::Naive, Reuse => Method::Reuse });
same_values!(LoopArg => LoopKind { Host => LoopKind::Host, Resident => LoopKind::Resident });
same_values!(LossArg => Loss { Mse => Loss::Mse, CrossEntropy => Loss::CrossEntropy });
same_values!(StepArg => StepMode { Nominal => StepMode::Nominal, Exact => StepMode::Exact });
same_values!(DirectionArg => Direction {
    Rademacher => Direction::Rademacher,
    Gaussian => Direction::Gaussian,
});
same_values!(EstimatorArg => EstimatorKind {
    Forward => EstimatorKind::Forward,
    Central => EstimatorKind::Central,
    Richardson => EstimatorKind::Richardson,
    Spsa => EstimatorKind::Spsa,
});

/// The update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    /// w − lr·g (the book's).
    Sgd,
    /// PyTorch's momentum: v = μv + g; w −= lr·v (see --momentum).
    Momentum,
    /// Adam, bias-corrected (see --beta1, --beta2, --adam-eps).
    Adam,
}

/// Where the losses are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// wgpu compute shaders.
    Gpu,
    /// The CPU reference.
    Cpu,
}

/// What the network minimises (and how data targets are read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LossArg {
    /// Mean squared error over every output (the book's); targets are values.
    Mse,
    /// Softmax cross-entropy of the identity output layer's logits; targets are one class label
    /// or one probability per output.
    CrossEntropy,
}

/// Float type of the forward pass and loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// float32, as on the GPU.
    F32,
    /// float64 with float32 parameters, as the book's NumPy notebook (CPU only).
    F64,
}

/// How nudged losses are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// A full forward pass per nudged parameter (the book).
    Naive,
    /// One stored forward pass; each nudge recomputes only what it changes.
    Reuse,
}

/// Gradient estimator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EstimatorArg {
    /// (L(w + h) − L(w)) / h: the book's.
    Forward,
    /// (L(w + h) − L(w − h)) / 2h.
    Central,
    /// Central differences at h and h/2 combined to cancel the h² error term.
    Richardson,
    /// Simultaneous perturbation along random directions (see --samples, --direction).
    Spsa,
}

/// What nudges are divided by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StepArg {
    /// The nominal eps (the book).
    Nominal,
    /// The step float32 actually applied, fl32(w + eps) − w.
    Exact,
}

/// Distribution of SPSA directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DirectionArg {
    /// ±1.
    Rademacher,
    /// Approximately N(0, 1) (Irwin–Hall sum of 12 uniforms − 6).
    Gaussian,
}

/// How the gradient is estimated.
#[derive(Debug, Args, Clone)]
pub struct EstimatorArgs {
    /// Gradient estimator.
    #[arg(long, value_enum, default_value_t = EstimatorArg::Forward)]
    pub estimator: EstimatorArg,
    /// What each nudge is divided by.
    #[arg(long, value_enum, default_value_t = StepArg::Nominal)]
    pub step: StepArg,
    /// SPSA: random directions per step, evaluated in parallel.
    #[arg(long, default_value_t = 1)]
    pub samples: u32,
    /// SPSA: distribution of the direction's components.
    #[arg(long, value_enum, default_value_t = DirectionArg::Rademacher)]
    pub direction: DirectionArg,
}

impl EstimatorArgs {
    /// The options as given.
    pub fn choice(&self) -> EstimatorChoice {
        EstimatorChoice {
            estimator: self.estimator.into(),
            step: self.step.into(),
            samples: self.samples,
            direction: self.direction.into(),
        }
    }

    /// The estimator and step mode asked for.
    pub fn get(&self) -> (Estimator, StepMode) {
        self.choice().get()
    }
}

/// The network and the data it trains on.
#[derive(Debug, Args, Clone)]
pub struct NetArgs {
    /// Model file (JSON, or NumPy .npz with W1, b1, …) to start from [default: the book's network].
    #[arg(long, conflicts_with_all = ["layers", "activations"])]
    pub model: Option<PathBuf>,
    /// Random network: widths from input to output, e.g. 2,3,1 (seeded by --seed).
    #[arg(long)]
    pub layers: Option<String>,
    /// One activation per layer (sigmoid, tanh, relu, identity) [default: sigmoid…, identity].
    #[arg(long, requires = "layers")]
    pub activations: Option<String>,
    /// Data: a CSV file (inputs then targets per row), NumPy .npz (x, y), .npy (rows like the
    /// CSV), x.npy,y.npy, IMAGES,LABELS (two IDX files), or fashion-mnist[:train|:test]
    /// [default: the book's one sample, inputs 1, 1 and target 0].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Use only the first N samples of the data (all of them when there are fewer).
    #[arg(long, value_name = "N")]
    pub take: Option<NonZeroUsize>,
}

impl NetArgs {
    /// The model: the file, a random network of `--layers` drawn with `seed`, or the book's.
    pub fn model(&self, seed: u64) -> Result<Model> {
        if let Some(path) = &self.model {
            return crate::files::load_model(path);
        }
        let Some(layers) = &self.layers else {
            return Ok(Model::book());
        };
        let widths = parse_list(layers, Setting::Layers, |p| {
            p.parse::<usize>().ok().filter(|&w| w > 0)
        })?;
        let activations = match &self.activations {
            Some(a) => a
                .split(',')
                .map(Activation::parse)
                .collect::<Result<Vec<_>>>()?,
            None => (1..widths.len())
                .map(|l| {
                    if l + 1 == widths.len() {
                        Activation::Identity
                    } else {
                        Activation::Sigmoid
                    }
                })
                .collect(),
        };
        Model::random(&widths, &activations, seed)
    }

    /// The data (its targets as `loss` takes them), or the book's one sample when it fits the
    /// model; `--take` applied.
    pub fn data(&self, model: &Model, loss: Loss) -> Result<Dataset> {
        match &self.data {
            Some(path) => Ok(self.data_referenced(path, model, loss)?.0),
            None => {
                let book = Dataset::book();
                book.check_fits(model, "the book's data (x = [1, 1], y = [0])")
                    .map_err(|e| Error::Config(format!("{e}; give --data for this model")))?;
                Ok(book)
            }
        }
    }

    /// The data at `path` for `model` and `loss` with its reference (as checkpoints record it),
    /// `--take` applied after loading and the widths checked against the model.
    pub fn data_referenced(
        &self,
        path: &Path,
        model: &Model,
        loss: Loss,
    ) -> Result<(Dataset, Option<DataRef>)> {
        load_data(path, model, loss, self.take)
    }
}

/// The data at `path` for `model` and `loss`, its first `take` samples, checked to fit the model.
pub(crate) fn load_data(
    path: &Path,
    model: &Model,
    loss: Loss,
    take: Option<NonZeroUsize>,
) -> Result<(Dataset, Option<DataRef>)> {
    let (mut data, reference) = crate::files::load_data_referenced(path, model, loss)?;
    if let Some(n) = take {
        data = data.take(n);
    }
    data.check_fits(model, &path.display().to_string())?;
    Ok((data, reference))
}

/// Who applies the update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoopArg {
    /// The host reads the losses back each epoch and applies the update.
    Host,
    /// The GPU applies the update; losses come back once per batch of epochs (once per epoch with
    /// mini-batches, momentum, adam, validation or --checkpoint-every).
    Resident,
}

pub(crate) fn parse_list<T>(
    s: &str,
    what: Setting,
    f: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>> {
    s.split(',')
        .map(|part| {
            f(part.trim())
                .ok_or_else(|| Error::invalid(what, format!("cannot read {part:?} in {s:?}")))
        })
        .collect()
}

pub(crate) fn pick<T>(
    list: &str,
    what: &str,
    all: &[&str],
    f: impl Fn(&str) -> T,
) -> Result<Vec<T>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if all.contains(&s) {
                Ok(f(s))
            } else {
                Err(Error::Config(format!(
                    "--{what}: unknown {s:?} (expected {})",
                    all.join(", ")
                )))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Named;

    fn names<T: ValueEnum>() -> Vec<String> {
        T::value_variants()
            .iter()
            .cloned()
            .map(value_name)
            .collect()
    }

    fn same<A: ValueEnum + Into<L>, L: Named>() {
        let flags = names::<A>();
        let lib: Vec<String> = L::ALL.iter().map(|v| v.name().to_string()).collect();
        assert_eq!(flags, lib, "{}", std::any::type_name::<A>());
        for a in A::value_variants() {
            assert_eq!(value_name(a.clone()), a.clone().into().name());
        }
    }

    #[test]
    fn the_flags_values_are_the_names_checkpoints_store() {
        same::<PrecisionArg, Precision>();
        same::<MethodArg, Method>();
        same::<DeviceArg, DeviceKind>();
        same::<LoopArg, LoopKind>();
        same::<EstimatorArg, EstimatorKind>();
        same::<StepArg, StepMode>();
        same::<DirectionArg, Direction>();
        same::<LossArg, Loss>();
    }
}
