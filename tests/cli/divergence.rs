//! Diverging runs: a named error, exit 6 and the last finite parameters saved, in both loops.

use crate::common;
use crate::support::*;

#[test]
fn a_huge_learning_rate_diverges_or_finishes_never_hangs() {
    // float32: the loss overflows at epoch 2, a named divergence.
    assert_fails_with(
        EXIT_DIVERGED,
        &["train", "--device", "cpu", "--lr", "1e30"],
        &["training diverged at epoch 2", "the loss is inf"],
    );
    // float64: the loss stays finite (about 3e60) and the parameters, now near 1e30, no longer
    // feel a nudge of 1e-4 in float32, so training stalls and ends normally after 100 epochs.
    let o = perturb(&[
        "train",
        "--device",
        "cpu",
        "--precision",
        "f64",
        "--lr",
        "1e30",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("epoch    100  loss 3379274963181663"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_diverging_run_saves_its_last_finite_parameters_and_exits_6() {
    let d = dir("diverge-ck");
    let ck = d.join("ck.json");
    assert_fails_with(
        EXIT_DIVERGED,
        &[
            "train",
            "--device",
            "cpu",
            "--lr",
            "1e30",
            "--checkpoint",
            ck.to_str().unwrap(),
        ],
        &["diverged at epoch 2", "last finite parameters", "ck.json"],
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ck).unwrap()).unwrap();
    assert_eq!(saved["epochs_done"], 1);
    // --allow-divergence runs every epoch instead.
    let o = perturb(&[
        "train",
        "--device",
        "cpu",
        "--lr",
        "1e30",
        "--allow-divergence",
        "--epochs",
        "5",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn the_resident_loop_saves_the_same_last_finite_state_as_the_host_loop() {
    if common::gpu().is_none() {
        return;
    }
    let d = dir("diverge-resident");
    let save = |mode: &str| {
        let ck = d.join(format!("{mode}.json"));
        assert_fails_with(
            EXIT_DIVERGED,
            &[
                "train",
                "--lr",
                "1e30",
                "--loop",
                mode,
                "--epochs-per-submit",
                "1",
                "--checkpoint",
                ck.to_str().unwrap(),
            ],
            &["diverged at epoch 2", "after epoch 1"],
        );
        let c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&ck).unwrap()).unwrap();
        (
            c["epochs_done"].clone(),
            c["losses"].clone(),
            c["model"].clone(),
        )
    };
    let host = save("host");
    assert_eq!(host.0, 1);
    assert_eq!(save("resident"), host);
}
