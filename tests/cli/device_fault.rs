//! A device lost mid-run (destroyed through the test hook `PERTURB_TEST_FAULT_AFTER_READBACKS`):
//! exit 5, one line, the completed epochs saved, and the checkpoint resumes to the same end as an
//! uninterrupted run.

use std::process::{Command, Output};

use crate::common;
use crate::support::*;

/// Exit status of a GPU failure during the run.
const EXIT_GPU_FAULT: i32 = 5;
/// Readbacks before the device is destroyed: a few epochs in.
const FAULT_AFTER: &str = "6";
const EPOCHS: &str = "20";

fn train(args: &[&str], fault: bool) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_perturb"));
    c.arg("train").args(args).current_dir(dir("cwd"));
    if fault {
        c.env("PERTURB_TEST_FAULT_AFTER_READBACKS", FAULT_AFTER);
    } else {
        c.env_remove("PERTURB_TEST_FAULT_AFTER_READBACKS");
    }
    c.output().unwrap()
}

fn losses(path: &std::path::Path) -> serde_json::Value {
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    r["losses"].clone()
}

#[test]
fn a_destroyed_device_exits_5_in_one_line_and_its_checkpoint_resumes_to_the_same_end() {
    if common::gpu().is_none() {
        return;
    }
    let d = dir("device-fault");
    let (ck, whole, resumed) = (
        d.join("ck.json"),
        d.join("whole.json"),
        d.join("resumed.json"),
    );
    let ck_s = ck.to_str().unwrap();
    let base = ["--device", "gpu", "--epochs", EPOCHS];
    let o = train(&[&base[..], &["--checkpoint", ck_s]].concat(), true);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(EXIT_GPU_FAULT), "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("XDG_RUNTIME_DIR"))
        .collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].starts_with("perturb: error: "), "{err}");
    assert!(lines[0].contains("ck.json"), "names the checkpoint: {err}");
    // The checkpoint holds the last epoch printed.
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ck).unwrap()).unwrap();
    let done = saved["epochs_done"].as_u64().unwrap() as usize;
    let printed = stdout(&o)
        .lines()
        .filter(|l| l.starts_with("epoch "))
        .count();
    assert!(done >= 1, "{saved}");
    assert_eq!(done, printed, "saved {done} epochs, printed {printed}");
    // Resumed without the fault, it ends where an uninterrupted run ends, bit for bit.
    let o = train(
        &[&base[..], &["--report", whole.to_str().unwrap()]].concat(),
        false,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let args = ["--resume", ck_s, "--report", resumed.to_str().unwrap()];
    let o = train(&args, false);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(losses(&resumed), losses(&whole));
}
