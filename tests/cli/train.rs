//! `perturb train` runs that succeed: the book's numbers, model and CSV files, methods, estimators.

use crate::common;
use crate::support::*;

const BOOK_MODEL: &str = r#"{"layers": [
 {"weights": [[-0.0053, -0.5820, -0.2723], [0.3793, -0.5204, 0.1896]], "biases": [-0.0140, 0.5607, -0.0628], "activation": "sigmoid"},
 {"weights": [[0.1528], [-0.1745], [-0.1135]], "biases": [-0.5516], "activation": "identity"}]}"#;

#[test]
fn cpu_f64_prints_the_notebook_numbers() {
    let o = perturb(&["train", "--device", "cpu", "--precision", "f64"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("epoch      1  loss 0.33455009"), "{out}");
    assert!(out.contains("[-0.0174781]"), "{out}");
    assert!(out.contains("W1 (2x3)") && out.contains("b2 ="), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("epoch ")).count(), 100);
}

#[test]
fn model_and_csv_files_train() {
    let d = dir("files");
    let model = write(&d, "m.json", BOOK_MODEL);
    let data = write(&d, "d.csv", "x1,x2,y\n1,1,0\n0.5,-1,1\n");
    let o = perturb(&[
        "train", "--device", "cpu", "--model", &model, "--data", &data, "--epochs", "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("2 samples"), "{}", stdout(&o));
    let o = perturb(&[
        "train",
        "--device",
        "cpu",
        "--layers",
        "2,4,4,1",
        "--activations",
        "tanh,relu,identity",
        "--seed",
        "3",
        "--epochs",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("2-4-4-1 (tanh, relu, identity)"));
}

#[test]
fn reuse_method_on_cpu_prints_the_book_curve() {
    let o = perturb(&["train", "--device", "cpu", "--method", "reuse"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("reuse method") && out.contains("epoch      1  loss 0.3345"),
        "{out}"
    );
}

#[test]
fn gpu_cli_trains_the_book_in_both_loops_and_methods() {
    if common::gpu().is_none() {
        return;
    }
    let mut last = Vec::new();
    for (method, mode) in [
        ("naive", "host"),
        ("naive", "resident"),
        ("reuse", "host"),
        ("reuse", "resident"),
    ] {
        let o = perturb(&["train", "--method", method, "--loop", mode]);
        assert!(o.status.success(), "{method} {mode}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(
            out.contains("device: gpu") && out.contains("epoch      1  loss 0.3345"),
            "{out}"
        );
        let line = out
            .lines()
            .find(|l| l.starts_with("epoch    100"))
            .unwrap()
            .to_string();
        last.push((method, line));
    }
    // Host and resident loops print the same last loss.
    assert_eq!(last[0].1, last[1].1);
    assert_eq!(last[2].1, last[3].1);
}

#[test]
fn estimator_options_train_and_bad_combinations_are_refused() {
    for args in [
        &["--estimator", "central", "--step", "exact"][..],
        &["--estimator", "richardson", "--method", "reuse"],
        &[
            "--estimator",
            "spsa",
            "--samples",
            "4",
            "--direction",
            "gaussian",
        ],
    ] {
        let mut all = vec!["train", "--device", "cpu", "--epochs", "3"];
        all.extend_from_slice(args);
        let o = perturb(&all);
        assert!(o.status.success(), "{all:?}: {}", stderr(&o));
        assert!(stdout(&o).contains("estimator:"), "{}", stdout(&o));
    }
    assert_fails(
        &[
            "train",
            "--device",
            "cpu",
            "--estimator",
            "spsa",
            "--samples",
            "0",
        ],
        &["--samples"],
    );
    assert_fails(
        &[
            "train",
            "--device",
            "cpu",
            "--estimator",
            "spsa",
            "--step",
            "exact",
        ],
        &["--step exact"],
    );
    assert_fails(
        &[
            "train",
            "--device",
            "cpu",
            "--estimator",
            "spsa",
            "--method",
            "reuse",
        ],
        &["--method naive"],
    );
    assert_fails(
        &["sweep", "--device", "cpu", "--lr", "0.1,x"],
        &["--lr", "\"x\""],
    );
    assert_fails(&["sweep", "--device", "cpu", "--lr", "0.1,-1"], &["--lr"]);
    assert_fails(&["check", "--device", "gpu"], &["--precision f32"]);
}

#[test]
fn a_vanished_nudge_is_reported_on_stderr() {
    let d = dir("vanish");
    let model = d.join("big.json");
    let o = perturb(&[
        "train",
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--save",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Put the book's lr = 1 weight into the saved model.
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&model).unwrap()).unwrap();
    m["layers"][1]["weights"][0][0] = serde_json::json!(12755.0);
    std::fs::write(&model, m.to_string()).unwrap();
    let o = perturb(&[
        "train",
        "--device",
        "cpu",
        "--epochs",
        "2",
        "--step",
        "exact",
        "--model",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("vanished") && err.contains("12755"),
        "no warning: {err}"
    );
}
