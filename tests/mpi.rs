//! `--distributed mpi` (feature `mpi`): `mpirun -n 3 perturb train … --distributed mpi` writes the
//! one-process run's report bit for bit, on the CPU and on lavapipe, with rank 0 alone printing and
//! writing, and the report listing each rank's parameters. Needs OpenMPI's `mpirun` on PATH.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const RANKS: &str = "3";

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("perturb-mpi-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn check(o: &Output, what: &str) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{what} failed ({:?}):\nstdout: {out}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn one_process(args: &[&str], report: &Path) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(args)
        .arg("--report")
        .arg(report)
        .output()
        .expect("run perturb");
    check(&o, "the one-process run")
}

fn ranks(args: &[&str], report: &Path) -> String {
    let o = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-n", RANKS])
        .arg(env!("CARGO_BIN_EXE_perturb"))
        .args(args)
        .args(["--distributed", "mpi", "--report"])
        .arg(report)
        // Containers often forbid the cross-memory attach OpenMPI's shared memory tries first.
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .output()
        .expect("run mpirun (OpenMPI's openmpi-bin)");
    check(&o, "mpirun")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Runs `args` in one process and over three ranks; the reports agree in every field but the
/// device and the time, rank 0 alone printed, and the ranks' parameters tile [0, P).
fn assert_ranks_equal_one_process(name: &str, args: &[&str]) {
    let d = dir();
    let (a, b) = (
        d.join(format!("{name}-1.json")),
        d.join(format!("{name}-3.json")),
    );
    let alone = one_process(args, &a);
    let spread = ranks(args, &b);
    let (one, three) = (json(&a), json(&b));
    for key in ["losses", "step_losses", "model", "predictions", "settings"] {
        assert_eq!(one[key], three[key], "{name}: report field {key:?}");
    }
    let done = |out: &str| {
        out.lines()
            .filter(|l| l.starts_with("wrote the report"))
            .count()
    };
    assert_eq!(done(&alone), 1, "{name}: one process: {alone}");
    assert_eq!(done(&spread), 1, "{name}: only rank 0 prints: {spread}");
    let shards = three["device"]["shards"].as_array().expect("device.shards");
    assert_eq!(shards.len(), 3, "{name}: {shards:?}");
    let p = one["model"]["params"].as_array().map(Vec::len);
    let mut at = 0;
    for (q, s) in shards.iter().enumerate() {
        let r = s["params"].as_array().unwrap();
        let (start, end) = (r[0].as_u64().unwrap(), r[1].as_u64().unwrap());
        assert_eq!(
            start, at,
            "{name}: rank {q} starts at {start}, not {at}: {shards:?}"
        );
        assert!(end >= start, "{name}: rank {q}: {shards:?}");
        at = end;
        assert!(
            s["adapter"]
                .as_str()
                .unwrap()
                .starts_with(&format!("rank {q}")),
            "{name}: {s}"
        );
    }
    if let Some(p) = p {
        assert_eq!(at as usize, p, "{name}: ranks end at {at}, not P");
    }
}

/// Ten samples of 3 inputs and 2 targets, written once per test process.
fn data() -> String {
    let path = dir().join("data.csv");
    let rows: Vec<String> = (0..10)
        .map(|i| {
            let f = |k: usize| (((i * 7 + k * 3) % 11) as f32 / 5.5 - 1.0).to_string();
            (0..5).map(f).collect::<Vec<_>>().join(",")
        })
        .collect();
    std::fs::write(&path, rows.join("\n") + "\n").unwrap();
    path.display().to_string()
}

fn with_net(rest: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["train", "--layers", "3,7,5,2", "--activations"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(["tanh,sigmoid,identity".into(), "--data".into(), data()]);
    v.extend(rest.iter().map(|s| s.to_string()));
    v
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn three_cpu_ranks_write_the_one_process_report() {
    let args = with_net(&[
        "--device",
        "cpu",
        "--method",
        "reuse",
        "--estimator",
        "central",
        "--epochs",
        "6",
        "--seed",
        "4",
    ]);
    assert_ranks_equal_one_process("cpu-reuse", &refs(&args));
    let args = with_net(&[
        "--device",
        "cpu",
        "--estimator",
        "spsa",
        "--samples",
        "4",
        "--epochs",
        "3",
        "--batch-size",
        "3",
        "--optimizer",
        "adam",
        "--seed",
        "2",
    ]);
    assert_ranks_equal_one_process("cpu-spsa-minibatch", &refs(&args));
}

#[test]
fn three_lavapipe_ranks_write_the_one_process_report() {
    let args = with_net(&[
        "--backend",
        "vulkan",
        "--method",
        "reuse",
        "--estimator",
        "richardson",
        "--epochs",
        "5",
        "--batch-size",
        "3",
    ]);
    assert_ranks_equal_one_process("lavapipe-reuse", &refs(&args));
}

#[test]
fn the_resident_loop_is_refused_across_ranks() {
    let o = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-n", "2"])
        .arg(env!("CARGO_BIN_EXE_perturb"))
        .args(["train", "--loop", "resident", "--distributed", "mpi"])
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .output()
        .expect("run mpirun");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "mpirun should fail: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("--distributed") && err.contains("--loop host"),
        "the refusal names --distributed and the fix: {err}"
    );
}
