//! `perturb eval` and `perturb predict`: the loss, accuracy and confusion matrix of a model on
//! data (as text and as JSON), predictions to stdout or a CSV file, and the exit status of each
//! kind of bad input.

use crate::support::*;
use std::path::Path;

/// Exit status of a command-line syntax error (clap's).
const EXIT_USAGE: i32 = 2;

/// 2 inputs → 2 identity outputs with `z = x`: the logits are the inputs.
const PASS_THROUGH: &str =
    r#"{"layers": [{"weights": [[1, 0], [0, 1]], "biases": [0, 0], "activation": "identity"}]}"#;

/// Logits (2,0) (0,1) (1,1) (0,3), labels 0 0 1 1: predictions 0 1 0 (tie → lowest) 1.
const FOUR_LABELS: &str = "x0,x1,class\n2,0,0\n0,1,0\n1,1,1\n0,3,1\n";

fn files(name: &str) -> (String, String) {
    let d = dir(name);
    (
        write(&d, "m.json", PASS_THROUGH),
        write(&d, "labels.csv", FOUR_LABELS),
    )
}

fn json(args: &[&str]) -> serde_json::Value {
    let o = perturb(args);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).expect("stdout is one JSON document")
}

#[test]
fn eval_prints_loss_accuracy_per_class_and_the_confusion_matrix() {
    let (m, d) = files("eval-text");
    let o = perturb(&[
        "eval",
        "--model",
        &m,
        "--data",
        &d,
        "--loss",
        "cross-entropy",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    // Mean of ln(1+e^-2), ln(1+e), ln 2, ln(1+e^-3): 0.5454810…
    for want in [
        "2-2 (identity) network, 4 samples, cross-entropy loss 0.54548106",
        "accuracy 0.5000 (2 of 4)",
        "    0    0.5000        2",
        "confusion matrix (rows: true class, columns: predicted class):",
        "    0 1 1\n    1 1 1",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn eval_json_is_the_four_fields_and_nothing_else() {
    let (m, d) = files("eval-json");
    let v = json(&[
        "eval",
        "--model",
        &m,
        "--data",
        &d,
        "--loss",
        "cross-entropy",
        "--json",
    ]);
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 4, "{v}");
    for k in ["loss", "accuracy", "per_class", "confusion"] {
        assert!(keys.contains(&k), "{v}");
    }
    assert_eq!(v["accuracy"], 0.5);
    assert_eq!(v["per_class"], serde_json::json!([0.5, 0.5]));
    assert_eq!(v["confusion"], serde_json::json!([[1, 1], [1, 1]]));
    // --take keeps the first two samples: both class 0, one right.
    let v = json(&[
        "eval",
        "--model",
        &m,
        "--data",
        &d,
        "--loss",
        "cross-entropy",
        "--take",
        "2",
        "--json",
    ]);
    assert_eq!(v["confusion"], serde_json::json!([[1, 1], [0, 0]]));
    // Targets that are not labels: the accuracy fields are null.
    let dd = dir("eval-json-mse");
    let values = write(&dd, "v.csv", "1,2,0.5,0.5\n");
    let v = json(&["eval", "--model", &m, "--data", &values, "--json"]);
    assert_eq!(v["loss"], 1.25); // ((1 − .5)² + (2 − .5)²) / 2 outputs
    for k in ["accuracy", "per_class", "confusion"] {
        assert!(v[k].is_null(), "{v}");
    }
}

#[test]
fn eval_on_fashion_mnist_takes_the_first_samples() {
    let d = dir("eval-fashion");
    let model = d.join("m.npz");
    let net = perturb::Model::random(
        &[784, 16, 10],
        &[perturb::Activation::Relu, perturb::Activation::Identity],
        0,
    )
    .unwrap();
    perturb::npy::save_npz(&model, &perturb::npy::model_arrays(&net)).unwrap();
    let m = model.to_str().unwrap();
    let v = json(&[
        "eval",
        "--model",
        m,
        "--data",
        "fashion-mnist",
        "--loss",
        "cross-entropy",
        "--take",
        "50",
        "--json",
    ]);
    let confusion = v["confusion"].as_array().unwrap();
    assert_eq!(confusion.len(), 10);
    let total: u64 = confusion
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(total, 50);
    // The test split's first 3 predictions, one per line.
    let o = perturb(&[
        "predict",
        "--model",
        m,
        "--data",
        "fashion-mnist:test",
        "--loss",
        "cross-entropy",
        "--take",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<String> = stdout(&o).lines().map(String::from).collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines.iter().all(|l| l.parse::<u32>().is_ok_and(|c| c < 10)),
        "{lines:?}"
    );
}

#[test]
fn a_missing_fashion_mnist_exits_3_naming_the_package() {
    let (m, _) = files("no-fashion");
    let empty = dir("no-fashion-data");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(["eval", "--model", &m, "--data", "fashion-mnist:test"])
        .env("PERTURB_DATA_DIR", &empty)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(EXIT_FILE), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("t10k-images-idx3-ubyte.gz")
            && err.contains("apt-get install dataset-fashion-mnist"),
        "{err}"
    );
}

#[test]
fn predict_prints_classes_for_cross_entropy_and_outputs_for_mse() {
    let (m, d) = files("predict");
    let o = perturb(&[
        "predict",
        "--model",
        &m,
        "--data",
        &d,
        "--loss",
        "cross-entropy",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "0\n1\n0\n1\n");
    let dd = dir("predict-mse");
    let values = write(&dd, "v.csv", "1,2,0,0\n-0.5,0.25,0,0\n");
    let o = perturb(&["predict", "--model", &m, "--data", &values]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "1,2\n-0.5,0.25\n");
}

#[test]
fn predict_writes_a_csv_file_and_never_over_its_inputs() {
    let (m, d) = files("predict-file");
    let out = Path::new(&d).with_file_name("classes.csv");
    let out_s = out.to_str().unwrap();
    let o = perturb(&[
        "predict",
        "--model",
        &m,
        "--data",
        &d,
        "--loss",
        "cross-entropy",
        "--output",
        out_s,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "0\n1\n0\n1\n");
    for (target, flag) in [(&d, "--data"), (&m, "--model")] {
        assert_fails_with(
            EXIT_CONFIG,
            &["predict", "--model", &m, "--data", &d, "--output", target],
            &["--output", &format!("the {flag} file")],
        );
    }
    assert_eq!(std::fs::read_to_string(&d).unwrap(), FOUR_LABELS);
}

#[test]
fn bad_inputs_exit_with_their_class_and_one_line() {
    let (m, d) = files("eval-bad");
    assert_fails_with(
        EXIT_FILE,
        &["eval", "--model", "missing.json", "--data", &d],
        &["missing.json"],
    );
    let o = perturb(&["eval", "--model", &m, "--data", &d, "--loss", "hinge"]);
    assert_eq!(o.status.code(), Some(EXIT_USAGE), "{}", stderr(&o));
    assert!(stderr(&o).contains("mse, cross-entropy"), "{}", stderr(&o));
    let o = perturb(&["eval", "--model", &m, "--data", &d, "--take", "0"]);
    assert_eq!(o.status.code(), Some(EXIT_USAGE), "{}", stderr(&o));
    let bad = dir("eval-bad-label");
    let label10 = write(&bad, "ten.csv", "x0,x1,c\n0,0,1\n0,0,10\n");
    assert_fails_with(
        EXIT_FILE,
        &[
            "eval",
            "--model",
            &m,
            "--data",
            &label10,
            "--loss",
            "cross-entropy",
        ],
        &["ten.csv:3: label 10 is out of range: the model has 2 classes, 0 … 1"],
    );
    // A label column is one column short of MSE's targets.
    assert_fails_with(
        EXIT_FILE,
        &["eval", "--model", &m, "--data", &d],
        &["labels.csv:1: header has 3 columns, expected 4 (2 inputs + 2 targets)"],
    );
    // Cross-entropy needs the logits of an identity output layer.
    let sig = write(
        &bad,
        "sig.json",
        &PASS_THROUGH.replace("identity", "sigmoid"),
    );
    assert_fails_with(
        EXIT_CONFIG,
        &[
            "eval",
            "--model",
            &sig,
            "--data",
            &d,
            "--loss",
            "cross-entropy",
        ],
        &["identity output layer"],
    );
}
