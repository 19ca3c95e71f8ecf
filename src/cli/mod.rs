//! The command line: `perturb train`, `perturb devices` and `perturb bench`, one file each.

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::estimate::{Estimator, StepMode};
use crate::gpu::AdapterOptions;
use crate::model::{Activation, Model};
use crate::rng::Direction;
use crate::train::Method;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

// `println!` that ends the process quietly when stdout is closed (`perturb train | head`) instead
// of panicking, and prints nothing under `perturb train --quiet` or `--json` (see `output`).
macro_rules! say {
    ($($t:tt)*) => {{
        if !$crate::cli::output::silenced() {
            let line = format!($($t)*);
            $crate::cli::output::print_line(&line);
        }
    }};
}

mod bench;
mod check;
mod devices;
pub mod output;
mod sweep;
mod train;

pub use bench::{bench, BenchArgs};
pub use check::{check, CheckArgs};
pub use devices::devices;
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
/// `"reuse"`), as checkpoints store it ([`crate::checkpoint::SETTING_VALUES`]).
pub fn value_name<T: ValueEnum>(value: T) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string())
}

/// Where the losses are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceKind {
    /// wgpu compute shaders.
    Gpu,
    /// The CPU reference.
    Cpu,
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

impl From<MethodArg> for Method {
    fn from(m: MethodArg) -> Method {
        match m {
            MethodArg::Naive => Method::Naive,
            MethodArg::Reuse => Method::Reuse,
        }
    }
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
    /// The options as a checkpoint records them (flag name → value name); missing ones take their
    /// defaults.
    pub fn from_names(names: &std::collections::BTreeMap<String, String>) -> Result<EstimatorArgs> {
        fn get<T: ValueEnum>(
            names: &std::collections::BTreeMap<String, String>,
            key: &str,
            default: T,
        ) -> Result<T> {
            match names.get(key) {
                None => Ok(default),
                Some(v) => T::from_str(v, false).map_err(|_| {
                    Error::Config(format!(
                        "the checkpoint's --{key} {v:?} is not a known value"
                    ))
                }),
            }
        }
        let samples = match names.get("samples") {
            None => 1,
            Some(v) => v.parse().map_err(|_| {
                Error::Config(format!("the checkpoint's --samples {v:?} is not a number"))
            })?,
        };
        Ok(EstimatorArgs {
            estimator: get(names, "estimator", EstimatorArg::Forward)?,
            step: get(names, "step", StepArg::Nominal)?,
            samples,
            direction: get(names, "direction", DirectionArg::Rademacher)?,
        })
    }

    /// The estimator and step mode asked for.
    pub fn get(&self) -> (Estimator, StepMode) {
        let estimator = match self.estimator {
            EstimatorArg::Forward => Estimator::Forward,
            EstimatorArg::Central => Estimator::Central,
            EstimatorArg::Richardson => Estimator::Richardson,
            EstimatorArg::Spsa => Estimator::Spsa {
                samples: self.samples,
                direction: match self.direction {
                    DirectionArg::Rademacher => Direction::Rademacher,
                    DirectionArg::Gaussian => Direction::Gaussian,
                },
            },
        };
        let step = match self.step {
            StepArg::Nominal => StepMode::Nominal,
            StepArg::Exact => StepMode::Exact,
        };
        (estimator, step)
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
    /// Data file: CSV (inputs then targets per row), NumPy .npz (x, y), .npy (rows like the CSV) or
    /// x.npy,y.npy [default: the book's one sample, inputs 1, 1 and target 0].
    #[arg(long)]
    pub data: Option<PathBuf>,
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
        let widths = parse_list(layers, "--layers", |p| {
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

    /// The data file, or the book's one sample when it fits the model.
    pub fn data(&self, model: &Model) -> Result<Dataset> {
        let data = match &self.data {
            Some(path) => crate::files::load_data(path, model)?,
            None => {
                let book = Dataset::book();
                book.check_fits(model, "the book's data (x = [1, 1], y = [0])")
                    .map_err(|e| Error::Config(format!("{e}; give --data for this model")))?;
                book
            }
        };
        let origin = self
            .data
            .as_ref()
            .map_or("data".to_string(), |p| p.display().to_string());
        data.check_fits(model, &origin)?;
        Ok(data)
    }
}

/// Who applies the update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoopArg {
    /// The host reads the losses back each epoch and applies the update.
    Host,
    /// The GPU applies the update; losses come back once per batch of epochs.
    Resident,
}

pub(crate) fn parse_list<T>(s: &str, what: &str, f: impl Fn(&str) -> Option<T>) -> Result<Vec<T>> {
    s.split(',')
        .map(|part| {
            f(part.trim())
                .ok_or_else(|| Error::Config(format!("{what}: cannot read {part:?} in {s:?}")))
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

    fn names<T: ValueEnum>() -> Vec<String> {
        T::value_variants()
            .iter()
            .cloned()
            .map(value_name)
            .collect()
    }

    #[test]
    fn the_flags_values_are_the_names_checkpoints_store() {
        for (field, stored) in crate::checkpoint::SETTING_VALUES {
            let flags = match field {
                "precision" => names::<PrecisionArg>(),
                "method" => names::<MethodArg>(),
                "device" => names::<DeviceKind>(),
                "loop" => names::<LoopArg>(),
                other => panic!("no flag for setting {other}"),
            };
            assert_eq!(flags, stored, "{field}");
        }
    }
}
