//! Outputs never destroy a file or lose a run (issue 13, items 1, 2, 3, 5 and 9): an output that is
//! an input or another output is refused, as is one that is not a regular file or cannot be written,
//! all before training; every output is written atomically and each on its own, with the trained
//! model kept in a checkpoint when one fails; a periodic checkpoint that fails stops the run at once;
//! a closed or full stdout stops printing only; one run per checkpoint.
//!
//! A full disk is imitated by a file size limit (`ulimit -f`, SIGXFSZ ignored): writes past it fail
//! with EFBIG as they would with ENOSPC, while the empty files of the before-training checks pass.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// The book's data, one sample.
const BOOK_CSV: &str = "x1,x2,y\n1,1,0\n";
/// How long a test waits for a background run to reach a state before failing.
const PATIENCE: Duration = Duration::from_secs(60);

/// Runs `perturb ARGS` in `cwd` (where a fallback checkpoint would go).
fn perturb_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run perturb")
}

/// Runs `perturb ARGS` in `cwd` with files limited to `kib` KiB (SIGXFSZ ignored, so a write past
/// the limit fails with EFBIG instead of killing the process).
fn perturb_limited(cwd: &Path, kib: u32, args: &[&str]) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(format!("trap '' XFSZ; ulimit -f {kib}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_perturb"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run perturb under bash")
}

/// A fresh scratch directory (emptied first) holding the book's data as d.csv.
fn scratch(name: &str) -> (PathBuf, String) {
    let d = dir(&format!("outsafe-{name}"));
    std::fs::remove_dir_all(&d).unwrap();
    std::fs::create_dir_all(&d).unwrap();
    let data = write(&d, "d.csv", BOOK_CSV);
    (d, data)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The names in `d`, sorted.
fn names(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn assert_status(o: &Output, code: i32, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}: stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

#[test]
fn outputs_that_are_an_input_are_refused_and_the_input_kept() {
    let (d, data) = scratch("input");
    let model = d.join("m.json");
    let o = perturb_in(
        &d,
        &[
            "train",
            "--device",
            "cpu",
            "--epochs",
            "2",
            "--save",
            s(&model),
        ],
    );
    assert_status(&o, 0, "writing the model");
    let model_text = std::fs::read_to_string(&model).unwrap();
    // The same file by another spelling and through a link too.
    std::os::unix::fs::symlink(&data, d.join("link.csv")).unwrap();
    let cases: [(&str, &str, &str); 6] = [
        ("--report", data.as_str(), "--data"),
        ("--save", data.as_str(), "--data"),
        ("--checkpoint", data.as_str(), "--data"),
        ("--report", "./d.csv", "--data"),
        ("--report", "link.csv", "--data"),
        ("--save", s(&model), "--model"),
    ];
    for (flag, out, input) in cases {
        let mut args = vec!["train", "--device", "cpu", "--epochs", "2", "--data", &data];
        if input == "--model" {
            args.extend(["--model", s(&model)]);
        }
        args.extend([flag, out]);
        let o = perturb_in(&d, &args);
        assert_status(&o, EXIT_CONFIG, &format!("{flag} {out}"));
        let err = stderr(&o);
        assert!(
            err.contains(flag) && err.contains(input) && err.contains("never replaces an input"),
            "{flag} {out}: {err}"
        );
        assert!(!stdout(&o).contains("epoch"), "{flag} {out} trained first");
    }
    assert_eq!(std::fs::read_to_string(&data).unwrap(), BOOK_CSV);
    assert_eq!(std::fs::read_to_string(&model).unwrap(), model_text);
}

#[test]
fn two_outputs_on_one_file_are_refused() {
    let (d, data) = scratch("twice");
    let c = d.join("c.json");
    let o = perturb_in(
        &d,
        &[
            "train",
            "--device",
            "cpu",
            "--data",
            &data,
            "--checkpoint",
            s(&c),
            "--report",
            s(&c),
        ],
    );
    assert_status(&o, EXIT_CONFIG, "--checkpoint c --report c");
    let err = stderr(&o);
    assert!(err.contains("are one file"), "{err}");
    assert!(!c.exists(), "nothing is written");
}

#[test]
fn an_output_that_is_not_a_regular_file_is_refused_and_kept() {
    let (d, data) = scratch("special");
    let fifo = d.join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let sub = d.join("sub");
    std::fs::create_dir(&sub).unwrap();
    for (flag, out, kind) in [
        ("--checkpoint", &fifo, "a FIFO"),
        ("--report", &sub, "a directory"),
    ] {
        let o = perturb_in(
            &d,
            &["train", "--device", "cpu", "--data", &data, flag, s(out)],
        );
        assert_status(&o, EXIT_FILE, &format!("{flag} {}", out.display()));
        let err = stderr(&o);
        assert!(err.contains(s(out)) && err.contains(kind), "{err}");
    }
    let t = std::fs::symlink_metadata(&fifo).unwrap().file_type();
    assert!(t.is_fifo(), "the FIFO was replaced");
    assert!(sub.is_dir());
}

#[test]
fn a_symlinked_output_is_written_through_to_its_target() {
    let (d, data) = scratch("symlink");
    let (real, real_ck) = (write(&d, "real.json", "old"), write(&d, "real.ck", "old"));
    let (link, link_ck) = (d.join("link.json"), d.join("link.ck"));
    std::os::unix::fs::symlink(&real, &link).unwrap();
    std::os::unix::fs::symlink(&real_ck, &link_ck).unwrap();
    let o = perturb_in(
        &d,
        &[
            "train",
            "--device",
            "cpu",
            "--data",
            &data,
            "--report",
            s(&link),
            "--checkpoint",
            s(&link_ck),
        ],
    );
    assert_status(&o, 0, "--report and --checkpoint through links");
    for (link, real, key) in [
        (&link, &real, "\"losses\""),
        (&link_ck, &real_ck, "\"epochs_done\""),
    ] {
        let t = std::fs::symlink_metadata(link).unwrap().file_type();
        assert!(t.is_symlink(), "{} was replaced", link.display());
        let text = std::fs::read_to_string(real).unwrap();
        assert!(
            text.contains(key),
            "{real} does not hold the output: {text}"
        );
    }
}

#[test]
fn an_unwritable_output_directory_is_refused_before_training() {
    let (d, data) = scratch("unwritable");
    let report = d.join("r.json");
    // Root writes anywhere chmod allows nothing; no one creates a file under a regular file.
    let bad = format!("{data}/sub/m.json");
    let o = perturb_in(
        &d,
        &[
            "train",
            "--device",
            "cpu",
            "--data",
            &data,
            "--report",
            s(&report),
            "--save",
            &bad,
        ],
    );
    assert_status(&o, EXIT_FILE, "--save under a file");
    assert!(stderr(&o).contains(&bad), "{}", stderr(&o));
    assert!(!stdout(&o).contains("epoch"), "trained before refusing");
    assert!(!report.exists());
}

#[test]
fn a_failed_output_keeps_the_others_and_the_model_in_a_checkpoint() {
    let (d, data) = scratch("onefails");
    let (model, report, plot) = (d.join("m.json"), d.join("r.json"), d.join("p.png"));
    // A PNG chart is far larger than the book's model, report or checkpoint after 10 epochs.
    const LIMIT_KIB: u32 = 16;
    let o = perturb_limited(
        &d,
        LIMIT_KIB,
        &[
            "train",
            "--device",
            "cpu",
            "--data",
            &data,
            "--epochs",
            "10",
            "--plot",
            s(&plot),
            "--save",
            s(&model),
            "--report",
            s(&report),
        ],
    );
    assert_status(&o, EXIT_FILE, "a plot past the size limit");
    let err = stderr(&o);
    let ck = d.join("m.checkpoint.json");
    assert!(err.contains(s(&plot)), "names the failed output: {err}");
    assert!(
        err.contains(&format!("the trained model is saved in {}", ck.display())),
        "{err}"
    );
    assert!(
        !err.contains("perturb-tmp"),
        "names a temporary file: {err}"
    );
    assert!(model.exists() && report.exists(), "the others are written");
    assert!(!plot.exists(), "no partial plot");
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ck).unwrap()).unwrap();
    assert_eq!(c["epochs_done"], 10);
    assert!(
        !names(&d).iter().any(|n| n.contains("perturb-tmp")),
        "{:?}",
        names(&d)
    );
}

#[test]
fn a_failed_write_leaves_the_old_file_whole() {
    let (d, data) = scratch("atomic");
    let old = "{\"old\": true}\n";
    let report = write(&d, "r.json", old);
    // 3,000 losses make a report of tens of KiB.
    let o = perturb_limited(
        &d,
        8,
        &[
            "train", "--device", "cpu", "--data", &data, "--epochs", "3000", "--report", &report,
        ],
    );
    assert_status(&o, EXIT_FILE, "a report past the size limit");
    assert!(stderr(&o).contains(&report), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&report).unwrap(), old);
    assert!(
        !names(&d).iter().any(|n| n.contains("perturb-tmp")),
        "{:?}",
        names(&d)
    );
}

#[test]
fn a_failing_periodic_checkpoint_stops_the_run_when_it_happens() {
    let (d, data) = scratch("midrun");
    let ck = d.join("c.json");
    const EPOCHS: usize = 1_000_000;
    // Each checkpoint holds every loss so far: past some hundreds of epochs it outgrows 4 KiB.
    let o = perturb_limited(
        &d,
        4,
        &[
            "train",
            "--device",
            "cpu",
            "--data",
            &data,
            "--epochs",
            &EPOCHS.to_string(),
            "--checkpoint",
            s(&ck),
            "--checkpoint-every",
            "1",
            "--quiet",
        ],
    );
    assert_status(&o, EXIT_FILE, "a checkpoint past the size limit");
    let err = stderr(&o);
    assert!(
        !err.contains("perturb-tmp"),
        "names a temporary file: {err}"
    );
    let stopped = err
        .lines()
        .find(|l| l.contains(s(&ck)) && l.contains("stopping the run after epoch"))
        .unwrap_or_else(|| panic!("no report when it happened: {err}"));
    let epoch: usize = stopped.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        epoch < 10_000,
        "stopped at epoch {epoch} of {EPOCHS}: {err}"
    );
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with("perturb: error: ") && last.contains(s(&ck)),
        "{err}"
    );
    // The last checkpoint that fitted is whole.
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ck).unwrap()).unwrap();
    assert_eq!(c["epochs_done"].as_u64(), Some(epoch as u64 - 1));
    assert!(
        !names(&d).iter().any(|n| n.contains("perturb-tmp")),
        "{:?}",
        names(&d)
    );
}

/// The id of a process that has ended.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn temporary_files_of_dead_writers_are_removed_by_the_next_write() {
    let (d, data) = scratch("strays");
    let ck = d.join("c.json");
    let dead = format!(".perturb-tmp-{}-0.c.json", dead_pid());
    let live = format!(".perturb-tmp-{}-0.c.json", std::process::id());
    let other = format!(".perturb-tmp-{}-0.other.json", dead_pid());
    for n in [&dead, &live, &other] {
        write(&d, n, "partial");
    }
    let o = perturb_in(
        &d,
        &[
            "train",
            "--device",
            "cpu",
            "--data",
            &data,
            "--checkpoint",
            s(&ck),
        ],
    );
    assert_status(&o, 0, "a run with a checkpoint");
    let left = names(&d);
    assert!(
        !left.contains(&dead),
        "a dead writer's file stays: {left:?}"
    );
    assert!(
        left.contains(&live),
        "a live writer's file was removed: {left:?}"
    );
    assert!(
        left.contains(&other),
        "another file's was removed: {left:?}"
    );
}

/// Spawns `perturb train ARGS` in `cwd` with stdout sent to `out`.
fn train_with_stdout(cwd: &Path, out: Stdio, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_perturb"))
        .arg("train")
        .args(args)
        .current_dir(cwd)
        .stdout(out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .unwrap()
}

#[test]
fn a_full_or_closed_stdout_stops_printing_not_saving() {
    let (d, data) = scratch("stdout");
    let full = || {
        Stdio::from(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        )
    };
    let closed = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        Stdio::from(writer)
    };
    for (what, out) in [("/dev/full", full()), ("a closed pipe", closed())] {
        let (model, report, plot) = (d.join("m.json"), d.join("r.json"), d.join("p.svg"));
        for f in [&model, &report, &plot] {
            let _ = std::fs::remove_file(f);
        }
        let o = train_with_stdout(
            &d,
            out,
            &[
                "--device",
                "cpu",
                "--data",
                &data,
                "--save",
                s(&model),
                "--report",
                s(&report),
                "--plot",
                s(&plot),
            ],
        );
        assert_status(&o, 0, what);
        assert!(
            stderr(&o).contains("stdout cannot be written"),
            "{what}: {}",
            stderr(&o)
        );
        for f in [&model, &report, &plot] {
            assert!(f.exists(), "{what}: {} not written", f.display());
        }
    }
    // Under --json stdout is an output: losing it fails the run, after the files are written.
    let report = d.join("json-r.json");
    let o = train_with_stdout(
        &d,
        full(),
        &[
            "--device",
            "cpu",
            "--data",
            &data,
            "--json",
            "--report",
            s(&report),
        ],
    );
    assert_status(&o, EXIT_FILE, "--json to /dev/full");
    assert!(stderr(&o).contains("--json"), "{}", stderr(&o));
    assert!(report.exists());
}

/// A child process killed (SIGKILL) and reaped when dropped, a failed assertion included.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `path` exists.
fn wait_for(path: &Path) {
    let t0 = Instant::now();
    while !path.exists() {
        assert!(t0.elapsed() < PATIENCE, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn one_run_per_checkpoint_and_a_dead_runs_lock_is_taken_over() {
    let (d, data) = scratch("lock");
    let ck = d.join("c.json");
    let lock = d.join("c.json.lock");
    let first = Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args([
            "train",
            "--device",
            "cpu",
            "--data",
            &data,
            "--epochs",
            "100000000",
        ])
        .args(["--checkpoint", s(&ck), "--quiet"])
        .current_dir(&d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = first.id();
    let first = KillOnDrop(first);
    wait_for(&lock);
    let o = perturb_in(
        &d,
        &[
            "train",
            "--device",
            "cpu",
            "--data",
            &data,
            "--checkpoint",
            s(&ck),
        ],
    );
    drop(first);
    assert_status(&o, EXIT_FILE, "a second run on a held checkpoint");
    let err = stderr(&o);
    assert!(
        err.contains(s(&ck)) && err.contains(&format!("in use by another run (process {pid}")),
        "{err}"
    );
    // Killed, the first run left its lock file; the next run takes it over and removes it at the end.
    assert!(lock.exists(), "a killed run leaves its lock file");
    let o = perturb_in(
        &d,
        &[
            "train",
            "--device",
            "cpu",
            "--data",
            &data,
            "--checkpoint",
            s(&ck),
        ],
    );
    assert_status(&o, 0, "a run after a dead one");
    let err = stderr(&o);
    assert!(
        err.contains("took over") && err.contains(&format!("process {pid}")),
        "{err}"
    );
    assert!(!lock.exists(), "the lock is removed at the end");
}
