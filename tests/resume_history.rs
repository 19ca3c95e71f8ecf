//! A resumed run reports every epoch's validation loss and accuracy and training accuracy, not
//! only the epochs it ran itself: the checkpoint carries them (its `"history"`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("perturb-history-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the CLI in `dir`; panics with its stderr unless it succeeds.
fn perturb(dir: &Path, args: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run perturb");
    assert!(
        o.status.success(),
        "perturb {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// 3 classes from 2 inputs, 24 rows, labels last.
fn labelled_csv(dir: &Path) -> String {
    let mut text = String::new();
    for i in 0..24 {
        let (a, b) = (
            (i * 7 % 11) as f32 / 5.0 - 1.0,
            (i * 5 % 13) as f32 / 6.0 - 1.0,
        );
        let label = if a + b > 0.3 {
            2
        } else if a > b {
            1
        } else {
            0
        };
        text += &format!("{a},{b},{label}\n");
    }
    let p = dir.join("train.csv");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// Stopped after 2 of 5 epochs and resumed to the end, a mini-batch cross-entropy run with a
/// validation split reports exactly the validation and accuracy arrays of the run that went
/// straight through (every epoch's, bit for bit), and the checkpoint holds them.
#[test]
fn resumed_report_carries_every_epochs_validation_history() {
    let d = scratch("resume");
    let data = labelled_csv(&d);
    let common = [
        "train",
        "--device",
        "cpu",
        "--data",
        &data,
        "--layers",
        "2,4,3",
        "--activations",
        "tanh,identity",
        "--loss",
        "cross-entropy",
        "--batch-size",
        "5",
        "--val-split",
        "0.25",
        "--optimizer",
        "momentum",
        "--lr",
        "0.2",
        "--quiet",
    ];
    let straight = d.join("straight.json");
    let mut args = common.to_vec();
    args.extend(["--epochs", "5", "--report", straight.to_str().unwrap()]);
    perturb(&d, &args);

    let ck = d.join("run.checkpoint.json");
    let mut args = common.to_vec();
    args.extend(["--epochs", "2", "--checkpoint", ck.to_str().unwrap()]);
    perturb(&d, &args);
    let saved = report(&ck);
    assert_eq!(
        saved["history"]["val_loss"].as_array().map(Vec::len),
        Some(2),
        "the checkpoint records both epochs' validation loss: {}",
        saved["history"]
    );
    let resumed = d.join("resumed.json");
    perturb(
        &d,
        &[
            "train",
            "--resume",
            ck.to_str().unwrap(),
            "--epochs",
            "5",
            "--report",
            resumed.to_str().unwrap(),
            "--quiet",
        ],
    );
    let (a, b) = (report(&straight), report(&resumed));
    for key in ["losses", "train_accuracy"] {
        assert_eq!(a[key], b[key], "{key}: straight vs resumed");
    }
    for key in ["loss", "accuracy"] {
        let (x, y) = (&a["val"][key], &b["val"][key]);
        assert_eq!(x.as_array().map(Vec::len), Some(5), "val.{key}: {x}");
        assert_eq!(x, y, "val.{key}: straight vs resumed");
    }
}

/// Trains 2 epochs of the labelled data with a validation split in `d`; returns the checkpoint.
fn two_epoch_checkpoint(d: &Path) -> PathBuf {
    let data = labelled_csv(d);
    let ck = d.join("run.checkpoint.json");
    perturb(
        d,
        &[
            "train",
            "--device",
            "cpu",
            "--data",
            &data,
            "--layers",
            "2,4,3",
            "--activations",
            "tanh,identity",
            "--loss",
            "cross-entropy",
            "--val-split",
            "0.25",
            "--epochs",
            "2",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--quiet",
        ],
    );
    ck
}

/// A checkpoint without `"history"` (written before it was recorded) still loads and resumes;
/// its report then holds only the resumed epochs' validation values.
#[test]
fn a_checkpoint_without_history_still_resumes() {
    let d = scratch("old");
    let ck = two_epoch_checkpoint(&d);
    let mut saved = report(&ck);
    assert!(saved["history"].is_object(), "{saved}");
    saved.as_object_mut().unwrap().remove("history");
    // An edited checkpoint without its checksum loads unchecked, as one from before checksums.
    saved.as_object_mut().unwrap().remove("checksum");
    std::fs::write(&ck, saved.to_string()).unwrap();
    let resumed = d.join("resumed.json");
    perturb(
        &d,
        &[
            "train",
            "--resume",
            ck.to_str().unwrap(),
            "--epochs",
            "4",
            "--report",
            resumed.to_str().unwrap(),
            "--quiet",
        ],
    );
    let r = report(&resumed);
    assert_eq!(
        r["val"]["loss"].as_array().map(Vec::len),
        Some(2),
        "{}",
        r["val"]
    );
}

/// A history longer than the completed epochs is a broken checkpoint, refused with the field named.
#[test]
fn a_history_longer_than_the_epochs_done_is_refused() {
    let d = scratch("long");
    let ck = two_epoch_checkpoint(&d);
    let mut saved = report(&ck);
    saved["history"]["val_loss"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(0.5));
    // An edited checkpoint without its checksum loads unchecked, as one from before checksums.
    saved.as_object_mut().unwrap().remove("checksum");
    std::fs::write(&ck, saved.to_string()).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(["train", "--resume", ck.to_str().unwrap(), "--epochs", "4"])
        .current_dir(&d)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a broken checkpoint resumed");
    assert!(
        err.contains("history.val_loss has 3 entries for 2 completed epochs"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
