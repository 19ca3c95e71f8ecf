//! `perturb bench`'s whole-process rows: `perturb train` runs timed from outside, start-up
//! included (instance, device, pipelines, shader compilation, the run, exit), each the median of
//! `--process-runs` spawns of this same binary, beside the step rows of the same bench run.

use super::AdapterArgs;
use crate::bench::{self, Row, Size};
use crate::error::{Error, Result};
use crate::train::Method;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// One `perturb train` command line to time.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Case {
    size: Size,
    method: Method,
    /// `cpu` or `gpu`.
    device: &'static str,
    epochs: usize,
    /// The arguments after `perturb`.
    args: Vec<String>,
    /// What the row's note says the command is.
    label: &'static str,
}

/// The flags that make a child pick the adapter this bench picked.
fn adapter_flags(adapter: &AdapterArgs) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(a) = &adapter.adapter {
        out.extend(["--adapter".to_string(), a.clone()]);
    }
    if let Some(b) = &adapter.backend {
        out.extend(["--backend".to_string(), b.clone()]);
    }
    if adapter.force_fallback {
        out.push("--force-fallback".into());
    }
    out
}

/// The commands for the sizes, methods and devices asked for: the README's `perturb train` (the
/// book, 100 epochs; on the CPU with `--device cpu`), 2,000 book epochs by the host loop and by the
/// resident loop (GPU), and 10 epochs of medium by reuse (`medium_csv`: its data).
pub(super) fn cases(
    sizes: &[Size],
    methods: &[Method],
    (cpu, gpu): (bool, bool),
    adapter: &AdapterArgs,
    medium_csv: &Path,
) -> Vec<Case> {
    let has = |name: &str| sizes.iter().find(|s| s.name == name).copied();
    let flags = adapter_flags(adapter);
    let gpu_args = |extra: &[&str]| {
        let mut a: Vec<String> = ["train"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect();
        a.extend(flags.iter().cloned());
        a
    };
    let cpu_args = |extra: &[&str]| {
        ["train", "--device", "cpu"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    let mut out = Vec::new();
    let mut add = |size, method, device, epochs, args, label| {
        out.push(Case {
            size,
            method,
            device,
            epochs,
            args,
            label,
        })
    };
    if let Some(book) = has("book").filter(|_| methods.contains(&Method::Naive)) {
        if cpu {
            add(
                book,
                Method::Naive,
                "cpu",
                100,
                cpu_args(&[]),
                "perturb train --device cpu",
            );
        }
        if gpu {
            add(
                book,
                Method::Naive,
                "gpu",
                100,
                gpu_args(&[]),
                "perturb train (README)",
            );
            for (mode, label) in [
                ("host", "--epochs 2000 --loop host"),
                ("resident", "--epochs 2000 --loop resident"),
            ] {
                let args = gpu_args(&["--epochs", "2000", "--loop", mode]);
                add(book, Method::Naive, "gpu", 2000, args, label);
            }
        }
    }
    if let Some(medium) = has("medium").filter(|_| methods.contains(&Method::Reuse)) {
        let csv = medium_csv.display().to_string();
        let extra = [
            "--layers",
            "64,128,10",
            "--data",
            &csv,
            "--method",
            "reuse",
            "--epochs",
            "10",
        ];
        let label = "--layers 64,128,10 --method reuse --epochs 10";
        if cpu {
            add(medium, Method::Reuse, "cpu", 10, cpu_args(&extra), label);
        }
        if gpu {
            add(medium, Method::Reuse, "gpu", 10, gpu_args(&extra), label);
        }
    }
    out
}

/// `size`'s data as CSV, inputs then targets per row (f32 `Display` reads back exactly).
pub(super) fn write_csv(size: &Size, path: &Path) -> Result<()> {
    let (_, data) = size.build();
    let mut text = String::new();
    for (x, y) in data.x.rows().into_iter().zip(data.y.rows()) {
        let cells: Vec<String> = x.iter().chain(y.iter()).map(|v| v.to_string()).collect();
        text.push_str(&cells.join(","));
        text.push('\n');
    }
    crate::fileio::write_atomic(path, text.as_bytes())
}

/// The adapter a run's `device:` line names (`device: gpu — NAME (backend), float32, …`; NAME
/// may hold commas).
pub(super) fn adapter_of(stdout: &str) -> Option<String> {
    let line = stdout.lines().find_map(|l| l.strip_prefix("device: "))?;
    let (rest, _) = line.split_once(", float")?;
    Some(rest.split_once(" — ")?.1.to_string())
}

/// Spawns `exe` with each case's arguments `runs` times (in `dir`), each row the median.
pub(super) fn rows(
    exe: &Path,
    dir: &Path,
    cases: &[Case],
    runs: usize,
    mut progress: impl FnMut(&Row),
) -> Result<Vec<Row>> {
    let mut out = Vec::new();
    for case in cases {
        let mut times = Vec::with_capacity(runs);
        let mut adapter = String::from("?");
        for i in 0..runs {
            let t = Instant::now();
            let o = Command::new(exe)
                .args(&case.args)
                .current_dir(dir)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| Error::Config(format!("could not run {}: {e}", exe.display())))?;
            times.push(t.elapsed().as_secs_f64());
            if !o.status.success() {
                return Err(Error::Config(format!(
                    "the whole-process row `perturb {}` failed ({}): {}",
                    case.args.join(" "),
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                )));
            }
            if i == 0 {
                adapter = adapter_of(&String::from_utf8_lossy(&o.stdout)).unwrap_or(adapter);
            }
        }
        let note = format!("whole process: {}, median of {runs}", case.label);
        let row = bench::process_row(
            &case.size,
            case.method,
            (case.device, &adapter),
            case.epochs,
            &mut times,
            note,
        );
        progress(&row);
        out.push(row);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_adapter_is_read_from_the_device_line_even_with_commas_in_its_name() {
        let out = "perturb: 2-3-1 …\ndevice: gpu — llvmpipe (LLVM 15.0.6, 256 bits) (vulkan), float32, naive method\n";
        assert_eq!(
            adapter_of(out).as_deref(),
            Some("llvmpipe (LLVM 15.0.6, 256 bits) (vulkan)")
        );
        let cpu = "device: cpu — CPU reference (2 threads) (native), float64, reuse method, x";
        assert_eq!(
            adapter_of(cpu).as_deref(),
            Some("CPU reference (2 threads) (native)")
        );
        assert_eq!(adapter_of("no device line"), None);
    }

    #[test]
    fn cases_follow_the_sizes_methods_devices_and_adapter_asked_for() {
        let sizes = [Size::named("book").unwrap(), Size::named("medium").unwrap()];
        let adapter = AdapterArgs {
            adapter: None,
            force_fallback: false,
            backend: Some("gl".into()),
        };
        let csv = Path::new("m.csv");
        let all = cases(
            &sizes,
            &[Method::Naive, Method::Reuse],
            (true, true),
            &adapter,
            csv,
        );
        assert_eq!(all.len(), 6, "{all:#?}");
        let readme = all
            .iter()
            .find(|c| c.label == "perturb train (README)")
            .unwrap();
        assert_eq!(readme.args, ["train", "--backend", "gl"]);
        assert!(all
            .iter()
            .filter(|c| c.device == "cpu")
            .all(|c| !c.args.contains(&"--backend".to_string())));
        let cpu_only = cases(&sizes[..1], &[Method::Naive], (true, false), &adapter, csv);
        assert_eq!(cpu_only.len(), 1);
        assert_eq!(cpu_only[0].args, ["train", "--device", "cpu"]);
        assert!(
            cases(&sizes, &[Method::Reuse], (false, true), &adapter, csv)
                .iter()
                .all(|c| c.size.name == "medium")
        );
    }
}
