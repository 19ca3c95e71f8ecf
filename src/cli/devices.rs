//! `perturb devices`.

use super::AdapterArgs;
use crate::error::Result;
use crate::gpu::{list_adapters, GpuContext};

/// Runs `perturb devices`.
pub fn devices(args: &AdapterArgs) -> Result<()> {
    let opts = args.options();
    let list = list_adapters(&opts);
    if list.is_empty() {
        say!("no adapters found (install a Vulkan driver, e.g. apt-get install mesa-vulkan-drivers libvulkan1)");
        return Ok(());
    }
    let w = list.iter().map(|a| a.name.len()).max().unwrap_or(4).max(4);
    say!(
        "  {:<w$}  {:<8}  {:<13}  {:<7}  driver",
        "name",
        "backend",
        "type",
        "compute"
    );
    for a in &list {
        say!(
            "{} {:<w$}  {:<8}  {:<13}  {:<7}  {}",
            if a.chosen { "*" } else { " " },
            a.name,
            a.backend,
            a.device_type,
            if a.compute { "yes" } else { "no" },
            a.driver
        );
    }
    match list.iter().find(|a| a.chosen) {
        Some(a) => say!(
            "\n* = what `perturb train` uses: {} ({})",
            a.name,
            a.backend
        ),
        None => {
            // Say why, with the same message train would give.
            if let Err(e) = GpuContext::new(&opts) {
                say!("\nnone selected: {e}");
            }
        }
    }
    Ok(())
}
