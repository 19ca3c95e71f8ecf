//! `perturb devices`.

use super::AdapterArgs;
use crate::error::Result;
use crate::gpu::{list_adapters, AdapterSummary, GpuContext};

/// Bytes as `128 MiB` / `2 GiB` (binding limits are powers of two or just under).
fn size(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= MIB {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} B")
    }
}

/// The table's cells: one header row, then one row per adapter.
fn cells(list: &[AdapterSummary]) -> Vec<[String; 8]> {
    let header = [
        "name",
        "backend",
        "type",
        "compute",
        "storage binding",
        "workgroups/dim",
        "invocations/wg",
        "driver",
    ]
    .map(String::from);
    let rows = list.iter().map(|a| {
        [
            a.name.clone(),
            a.backend.clone(),
            a.device_type.clone(),
            if a.compute { "yes" } else { "no" }.into(),
            size(a.max_storage_binding),
            a.max_workgroups_per_dim.to_string(),
            a.max_invocations.to_string(),
            a.driver.clone(),
        ]
    });
    std::iter::once(header).chain(rows).collect()
}

/// Runs `perturb devices`.
pub fn devices(args: &AdapterArgs) -> Result<()> {
    let opts = args.options();
    let list = list_adapters(&opts)?;
    if list.is_empty() {
        say!("no adapters found (install a Vulkan driver, e.g. apt-get install mesa-vulkan-drivers libvulkan1)");
        return Ok(());
    }
    let table = cells(&list);
    let widths: Vec<usize> = (0..8)
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (i, row) in table.iter().enumerate() {
        let mark = if i > 0 && list[i - 1].chosen {
            "*"
        } else {
            " "
        };
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, v)| {
                // Numbers right-aligned, text left-aligned.
                if (4..7).contains(&c) && i > 0 {
                    format!("{v:>w$}", w = widths[c])
                } else {
                    format!("{v:<w$}", w = widths[c])
                }
            })
            .collect();
        say!("{mark} {}", line.join("  ").trim_end());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_sizes_read_as_units() {
        assert_eq!(size(128 << 20), "128 MiB");
        assert_eq!(size(2 << 30), "2 GiB");
        assert_eq!(size((4 << 30) - 4), "4095 MiB");
        assert_eq!(size(1000), "1000 B");
    }
}
