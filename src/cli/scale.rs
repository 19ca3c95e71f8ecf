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
