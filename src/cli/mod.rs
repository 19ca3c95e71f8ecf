//! The command line: `perturb train`, `perturb devices` and `perturb bench`, one file each.

use crate::error::{Error, Result};
use crate::gpu::AdapterOptions;
use crate::train::Method;
use clap::{Args, Parser, Subcommand, ValueEnum};

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
mod devices;
pub mod output;
mod train;

pub use bench::{bench, BenchArgs};
pub use devices::devices;
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
