//! `--shard`: one step's nudged evaluations split over several adapters of this machine.

use super::AdapterArgs;
use crate::error::{Error, Fix, Result, Setting};
use crate::precision::Precision;
use crate::session::Device;
use crate::settings::DeviceKind;
use clap::Args;

/// Splitting a step over adapters.
#[derive(Debug, Args, Clone, Default)]
pub struct ScaleArgs {
    /// Split every step's nudges over several adapters, one context each, in parameter ranges
    /// sized by each adapter's speed measured at start: `all` (every compute adapter on the
    /// --backend list), or comma-separated name substrings as --adapter takes.
    #[arg(long, value_name = "all|NAMES", conflicts_with = "adapter")]
    pub shard: Option<String>,
}

impl ScaleArgs {
    /// The device a run computes on: one adapter, the CPU, or the adapters `--shard` names.
    pub fn device(
        &self,
        kind: DeviceKind,
        adapter: &AdapterArgs,
        precision: Precision,
    ) -> Result<Device> {
        let Some(list) = &self.shard else {
            return Ok(match kind {
                DeviceKind::Gpu => Device::Gpu(adapter.options()),
                DeviceKind::Cpu => Device::Cpu(precision),
            });
        };
        if kind != DeviceKind::Gpu {
            return Err(Error::refused(
                &[(Setting::Shard, list), (Setting::Device, "cpu")],
                "splits steps over GPU adapters; the CPU reference already uses every core",
                Some(Fix::Use(Setting::Device, "gpu")),
            ));
        }
        let names: Vec<String> = list
            .split(',')
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return Err(Error::invalid(
                Setting::Shard,
                "needs `all` or adapter names, comma-separated",
            ));
        }
        let all = names.len() == 1 && names[0].eq_ignore_ascii_case("all");
        Ok(Device::Shards {
            adapters: adapter.options(),
            names: if all { Vec::new() } else { names },
        })
    }
}

/// How a run is spread over processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DistributedArg {
    /// The ranks of `mpirun -n R` (needs perturb built with `--features mpi`).
    Mpi,
}

/// Splitting a step over MPI ranks.
#[derive(Debug, Args, Clone, Default)]
pub struct DistributedArgs {
    /// Split every step over the ranks of `mpirun -n R perturb train …`: each evaluates an equal
    /// contiguous share of the parameters on its adapter (--adapter, else the rank's local index
    /// among the adapters) or the CPU, all gather, every rank applies the same update; rank 0
    /// alone prints and writes files.
    #[arg(long, value_enum, value_name = "mpi", conflicts_with = "shard")]
    pub distributed: Option<DistributedArg>,
}

/// MPI for the run's duration (finalised when dropped), or nothing without `--distributed`.
#[cfg(feature = "mpi")]
pub type Session = Option<crate::distributed::Mpi>;
/// Nothing: this build has no MPI.
#[cfg(not(feature = "mpi"))]
pub type Session = Option<std::convert::Infallible>;

impl DistributedArgs {
    /// Starts MPI when `--distributed mpi` is given; refuses it in a build without MPI.
    pub fn start(&self) -> Result<Session> {
        if self.distributed.is_none() {
            return Ok(None);
        }
        #[cfg(feature = "mpi")]
        {
            crate::distributed::Mpi::init().map(Some)
        }
        #[cfg(not(feature = "mpi"))]
        Err(Error::invalid(
            Setting::Distributed,
            "needs perturb built with MPI: cargo build --release --features mpi",
        ))
    }

    /// This process's rank (0 without `--distributed`).
    pub fn rank(&self, session: &Session) -> usize {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = session {
            return mpi.world().rank;
        }
        let _ = session;
        0
    }

    /// Sets `training` up to split its steps over the ranks, each on its adapter: `--adapter` if
    /// given, else the rank's local index (OpenMPI's or MPICH's local rank, else its rank) among
    /// the compute adapters.
    pub fn attach<'a>(
        &self,
        training: crate::session::Training<'a>,
        kind: DeviceKind,
        adapter: &AdapterArgs,
    ) -> Result<crate::session::Training<'a>> {
        if self.distributed.is_none() {
            return Ok(training);
        }
        #[cfg(feature = "mpi")]
        {
            let world = crate::distributed::World::current();
            let mut training = training.distributed(world);
            if kind == DeviceKind::Gpu && adapter.adapter.is_none() {
                let local = ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID"]
                    .iter()
                    .find_map(|k| std::env::var(k).ok()?.parse().ok())
                    .unwrap_or(world.rank);
                let ctx = crate::gpu::open_adapter_at(&adapter.options(), local)?;
                training = training.backend(crate::session::Backend::Gpu(Box::new(ctx)));
            }
            Ok(training)
        }
        #[cfg(not(feature = "mpi"))]
        {
            let _ = (kind, adapter);
            self.start().map(|_| training)
        }
    }
}
