//! Checkpoints and `--resume`: bitwise equal to one run; Ctrl-C saves; disagreeing flags refused.

use std::path::Path;
use std::process::Command;

use crate::common;
use crate::support::*;

/// Losses and model of a JSON report, for bitwise comparisons (floats round-trip exactly).
fn report_run(path: &Path) -> (serde_json::Value, serde_json::Value) {
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    (r["losses"].clone(), r["model"].clone())
}

/// Trains `epochs` in one go and as `first` epochs plus a resume, on `device`; both must agree
/// bit for bit (losses and parameters).
/// Starts `perturb train ARGS` in `dir`, waits for the line of epoch `epoch`, sends `signal`
/// (`"INT"`, `"TERM"`, `"HUP"`) and returns how the process ended.
fn signal_after_epoch(
    dir: &Path,
    args: &[&str],
    epoch: usize,
    signal: &str,
) -> std::process::Output {
    signal_after_epoch_then(dir, args, epoch, signal, || {})
}

/// [`signal_after_epoch`], running `before` just before the signal is sent.
fn signal_after_epoch_then(
    dir: &Path,
    args: &[&str],
    epoch: usize,
    signal: &str,
    before: impl FnOnce(),
) -> std::process::Output {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_perturb"))
        .arg("train")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until training runs, then signal it.
    let want = format!("epoch {epoch:>6}");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.unwrap().starts_with(&want)));
    before();
    let kill = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    child.wait_with_output().unwrap()
}

fn assert_resume_equals_one_run(device: &str, extra: &[&str], first: usize, epochs: usize) {
    let d = dir(&format!("resume-{device}-{}", extra.join("")));
    let ck = d.join("run.ckpt.json");
    let (whole, resumed) = (d.join("whole.json"), d.join("resumed.json"));
    let run = |args: &[&str]| {
        let mut all = vec!["train", "--device", device];
        all.extend_from_slice(extra);
        all.extend_from_slice(args);
        let o = perturb(&all);
        assert!(o.status.success(), "{all:?}: {}", stderr(&o));
    };
    let (first, epochs) = (first.to_string(), epochs.to_string());
    run(&["--epochs", &epochs, "--report", whole.to_str().unwrap()]);
    run(&["--epochs", &first, "--checkpoint", ck.to_str().unwrap()]);
    let o = perturb(&[
        "train",
        "--device",
        device,
        "--resume",
        ck.to_str().unwrap(),
        "--epochs",
        &epochs,
        "--report",
        resumed.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "resume: {}", stderr(&o));
    assert!(stdout(&o).contains(&format!("resuming after epoch {first}")));
    assert_eq!(
        report_run(&resumed),
        report_run(&whole),
        "{device} {extra:?}"
    );
}

#[test]
fn a_resumed_run_equals_one_uninterrupted_run_bitwise_on_cpu() {
    assert_resume_equals_one_run("cpu", &[], 40, 100);
    assert_resume_equals_one_run(
        "cpu",
        &["--estimator", "spsa", "--samples", "3", "--seed", "5"],
        13,
        50,
    );
    assert_resume_equals_one_run("cpu", &["--method", "reuse", "--precision", "f64"], 1, 30);
}

#[test]
fn a_resumed_run_equals_one_uninterrupted_run_bitwise_on_gpu() {
    if common::gpu().is_none() {
        return;
    }
    assert_resume_equals_one_run("gpu", &[], 40, 100);
    assert_resume_equals_one_run("gpu", &["--estimator", "central", "--step", "exact"], 7, 30);
    assert_resume_equals_one_run("gpu", &["--loop", "resident"], 30, 100);
}

#[test]
fn ctrl_c_saves_the_run_exits_130_and_the_run_resumes_bitwise() {
    let d = dir("sigint");
    let ck = d.join("ck.json");
    let report = d.join("partial.json");
    let (c, r) = (ck.to_str().unwrap(), report.to_str().unwrap());
    let args = [
        "--device",
        "cpu",
        "--epochs",
        "100000000",
        "--checkpoint",
        c,
        "--report",
        r,
    ];
    let out = signal_after_epoch(&d, &args, 5, "INT");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted after epoch") && err.contains("ck.json"),
        "{err}"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ck).unwrap()).unwrap();
    let done = saved["epochs_done"].as_u64().unwrap() as usize;
    assert!(done >= 5, "{done}");
    assert_eq!(report_run(&report).0.as_array().unwrap().len(), done);
    // Resume to a few epochs more; compare with one run of that length.
    let total = (done + 17).to_string();
    let (resumed, whole) = (d.join("resumed.json"), d.join("whole.json"));
    let o = perturb(&[
        "train",
        "--resume",
        ck.to_str().unwrap(),
        "--epochs",
        &total,
        "--device",
        "cpu",
        "--report",
        resumed.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = perturb(&[
        "train",
        "--device",
        "cpu",
        "--epochs",
        &total,
        "--report",
        whole.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(report_run(&resumed), report_run(&whole));
}

#[test]
fn resume_refuses_disagreeing_flags_and_bad_checkpoints() {
    let d = dir("resume-bad");
    let ck = d.join("ck.json");
    let o = perturb(&[
        "train",
        "--device",
        "cpu",
        "--epochs",
        "10",
        "--checkpoint",
        ck.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let c = ck.to_str().unwrap();
    assert_fails(
        &["train", "--device", "cpu", "--resume", c, "--lr", "0.5"],
        &["--lr 0.5 disagrees with the checkpoint's 0.01"],
    );
    assert_fails(
        &["train", "--device", "cpu", "--resume", c, "--epochs", "5"],
        &["--epochs 5", "10 epochs"],
    );
    assert_fails(
        &[
            "train",
            "--device",
            "cpu",
            "--resume",
            c,
            "--estimator",
            "central",
        ],
        &["--estimator"],
    );
    let other = write(&d, "other.csv", "1,1,0\n2,2,1\n");
    assert_fails(
        &["train", "--device", "cpu", "--resume", c, "--data", &other],
        &["--data", "book"],
    );
    let broken = write(&d, "broken.json", "{\"format\": \"perturb-checkpoint\"");
    assert_fails_with(
        EXIT_FILE,
        &["train", "--device", "cpu", "--resume", &broken],
        &["broken.json"],
    );
    assert_fails(
        &["train", "--device", "cpu", "--checkpoint-every", "5"],
        &["--checkpoint-every", "--checkpoint"],
    );
}

/// SIGTERM (schedulers, `timeout`, CI cancellations) and SIGHUP (a closed terminal) stop a run as
/// the first Ctrl-C does: the step finishes, the checkpoint and the report are written, and the
/// status is 128 + the signal.
#[test]
fn sigterm_and_sighup_save_the_run_and_exit_143_and_129() {
    for (signal, status) in [("TERM", 143), ("HUP", 129)] {
        let d = dir(&format!("sig{signal}"));
        let (ck, report) = (d.join("ck.json"), d.join("partial.json"));
        let (c, r) = (ck.to_str().unwrap(), report.to_str().unwrap());
        let args = [
            "--device",
            "cpu",
            "--epochs",
            "100000000",
            "--checkpoint",
            c,
            "--report",
            r,
        ];
        let out = signal_after_epoch(&d, &args, 5, signal);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "SIG{signal}: {err}");
        assert!(
            err.contains("interrupted after epoch"),
            "SIG{signal}: {err}"
        );
        let saved: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&ck).unwrap()).unwrap();
        let done = saved["epochs_done"].as_u64().unwrap() as usize;
        assert!(done >= 5, "SIG{signal}: {done}");
        assert_eq!(report_run(&report).0.as_array().unwrap().len(), done);
    }
}

/// A mini-batch adam run stopped by SIGTERM between two steps of an epoch resumes at its next
/// step: the resumed run's epoch losses, step losses and model equal one uninterrupted run's.
#[test]
fn a_minibatch_run_stopped_mid_epoch_resumes_into_the_uninterrupted_run() {
    let d = dir("mid-epoch");
    let rows: String = (0..40)
        .map(|i| {
            let x = (i as f32 * 0.37).sin();
            format!("{x},{},{}\n", (i as f32 * 0.11).cos(), x * 0.5)
        })
        .collect();
    let data = write(&d, "d.csv", &rows);
    let run = ["--device", "cpu", "--layers", "2,6,1", "--data", &data];
    let mini = ["--batch-size", "3", "--optimizer", "adam", "--lr", "0.01"];
    let ck = d.join("ck.json");
    let mut args = vec![
        "--epochs",
        "100000000",
        "--checkpoint",
        ck.to_str().unwrap(),
    ];
    args.extend(run);
    args.extend(mini);
    let out = signal_after_epoch(&d, &args, 3, "TERM");
    assert_eq!(
        out.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ck).unwrap()).unwrap();
    let done = saved["epochs_done"].as_u64().unwrap() as usize;
    let steps = saved["step_losses"].as_array().unwrap().len();
    eprintln!("stopped after {steps} steps ({done} whole epochs of 14)");
    let total = (done + 2).to_string();
    let (resumed, whole) = (d.join("resumed.json"), d.join("whole.json"));
    let o = perturb(&[
        "train",
        "--resume",
        ck.to_str().unwrap(),
        "--epochs",
        &total,
        "--quiet",
        "--report",
        resumed.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut args = vec![
        "train",
        "--quiet",
        "--epochs",
        &total,
        "--report",
        whole.to_str().unwrap(),
    ];
    args.extend(run);
    args.extend(mini);
    let o = perturb(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let (a, b) = (read(&resumed), read(&whole));
    for key in ["losses", "step_losses", "model"] {
        assert_eq!(a[key], b[key], "{key}");
    }
}

#[test]
fn ctrl_c_with_a_failing_report_exits_130_naming_the_report_and_keeps_the_checkpoint() {
    let d = dir("sigint-report");
    let ck = d.join("ck.json");
    let gone = d.join("gone");
    std::fs::create_dir_all(&gone).unwrap();
    let report = gone.join("partial.json");
    let (c, r) = (ck.to_str().unwrap(), report.to_str().unwrap());
    let args = [
        "--device",
        "cpu",
        "--epochs",
        "100000000",
        "--checkpoint",
        c,
        "--report",
        r,
    ];
    // The report's directory was writable when the run started and is gone when it stops.
    let out = signal_after_epoch_then(&d, &args, 5, "INT", || {
        std::fs::remove_dir_all(&gone).unwrap()
    });
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("partial.json"),
        "the failed report is not named: {err}"
    );
    assert!(
        err.contains("interrupted after epoch") && err.contains("ck.json"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ck).unwrap()).unwrap();
    assert!(saved["epochs_done"].as_u64().unwrap() >= 5);
}
