//! `--distributed mpi` (feature `mpi`): `mpirun -n 3 perturb train … --distributed mpi` writes the
//! one-process run's report bit for bit, on the CPU and on lavapipe, with rank 0 alone printing and
//! writing, and the report listing each rank's parameters; a stop that reaches one rank stops all
//! after the same step. Needs OpenMPI's `mpirun` on PATH.
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

/// Ten samples of 3 inputs and 2 targets, in a file of the calling test's own: tests run in
/// parallel threads of one process, and rewriting a shared file could hand another test's ranks
/// a truncated one.
fn data() -> String {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir().join(format!("data-{n}.csv"));
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

/// How long a stopped three-rank run may take to end before the test calls it hung.
const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The pid of the child of `parent` that MPI made rank `rank` (its environment says so).
fn rank_pid(parent: u32, rank: usize) -> Option<u32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        // The parent pid is the second field after the command name's closing parenthesis.
        let ppid: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        let env = std::fs::read(e.path().join("environ")).ok()?;
        let ours = ppid == parent && env.split(|&b| b == 0).any(|v| v == want.as_bytes());
        ours.then_some(pid)
    })
}

/// Waits for `child` up to [`STOP_TIMEOUT`]; kills it and fails the test when it does not end.
fn wait_or_fail(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("poll mpirun") {
            return status;
        }
        if start.elapsed() > STOP_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: the ranks did not end within {STOP_TIMEOUT:?} (one waits in a gather)");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A stop request that reaches one rank only (SIGINT to rank 2, as a scheduler or `kill` may
/// deliver it) stops all three after the same step: every rank reports the same epoch, rank 0
/// alone saves the run to its checkpoint (no other rank writes the fallback checkpoint), the
/// status is Ctrl-C's, and the saved run resumes across the ranks. Without the ranks agreeing,
/// rank 2 left the gathers alone and mpirun aborted the others before rank 0 saved anything.
#[test]
fn a_stop_on_one_rank_stops_every_rank_after_the_same_step() {
    let d = dir().join("stop");
    std::fs::create_dir_all(&d).unwrap();
    let ckpt = d.join("run.ckpt");
    let ck = ckpt.display().to_string();
    let run = with_net(&[
        "--device",
        "cpu",
        "--epochs",
        "100000000",
        "--checkpoint",
        &ck,
        "--checkpoint-every",
        "100",
        "--quiet",
    ]);
    let mpirun = |args: &[&str]| {
        let mut c = Command::new("mpirun");
        c.args(["--allow-run-as-root", "--oversubscribe", "-n", RANKS])
            .arg(env!("CARGO_BIN_EXE_perturb"))
            .args(args)
            .args(["--distributed", "mpi"])
            .current_dir(&d)
            .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
        c
    };
    let mut child = mpirun(&refs(&run))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run mpirun (OpenMPI's openmpi-bin)");
    // The first periodic checkpoint: every rank has its handlers installed and is training.
    let start = std::time::Instant::now();
    while !ckpt.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("mpirun ended before its first checkpoint: {status:?}");
        }
        assert!(start.elapsed() < STOP_TIMEOUT, "no checkpoint was written");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = rank_pid(child.id(), 2).expect("rank 2 among mpirun's children");
    let kill = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success(), "kill -INT {pid}");
    let status = wait_or_fail(&mut child, "SIGINT to rank 2");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "Ctrl-C's status: {err}");
    // mpirun interleaves the ranks' stderr, so the lines are found as substrings.
    let epochs: Vec<&str> = err
        .split("interrupted after epoch ")
        .skip(1)
        .map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next().unwrap())
        .collect();
    assert_eq!(epochs.len(), 3, "every rank stops: {err}");
    assert!(
        epochs.iter().all(|e| *e == epochs[0]),
        "all ranks stop after the same epoch: {epochs:?}"
    );
    assert_eq!(
        err.matches("saved in").count(),
        1,
        "rank 0 alone saves: {err}"
    );
    assert!(
        err.contains(&format!("saved in {ck}")),
        "in the checkpoint: {err}"
    );
    assert!(
        !d.join("perturb.checkpoint.json").exists(),
        "no rank writes the fallback checkpoint: {err}"
    );
    let saved = json(&ckpt);
    let done: usize = epochs[0].parse().unwrap();
    assert_eq!(
        saved["losses"].as_array().map(Vec::len),
        Some(done),
        "{err}"
    );
    let more = (done + 5).to_string();
    let resumed = mpirun(&["train", "--resume", &ck, "--epochs", &more, "--quiet"])
        .output()
        .expect("run mpirun");
    check(&resumed, "the resumed run");
    assert_eq!(
        json(&ckpt)["losses"].as_array().map(Vec::len),
        Some(done + 5)
    );
}
