//! `perturb check`: every estimator against backprop and the eps sweep.

use crate::support::*;

#[test]
fn check_reports_every_estimator_and_the_eps_sweep() {
    let d = dir("check");
    let json = d.join("check.json");
    let svg = d.join("check.svg");
    let o = perturb(&[
        "check",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(drawn.contains("Gradient error against eps") && drawn.contains("central/exact"));
    let out = stdout(&o);
    for want in [
        "loss 0.33455009",
        "forward     nominal",
        "central     exact",
        "richardson  exact",
        "spsa        nominal",
        "relative error against backprop over eps",
        "1e-7",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = report["estimators"].as_array().unwrap();
    let err = |est: &str, step: &str| {
        rows.iter()
            .find(|r| r["estimator"] == est && r["step"] == step)
            .unwrap()["overall"]["max_error"]
            .as_f64()
            .unwrap()
    };
    // The measurement on the book's network, float64 loss, eps 1e-4: nominal central is no
    // better than forward (~2e-4 vs ~1e-4); exact central is ~3e-11.
    assert!(err("central", "nominal") > err("forward", "nominal"));
    assert!(
        err("central", "exact") < 1e-9,
        "{}",
        err("central", "exact")
    );
    assert_eq!(report["backprop"].as_array().unwrap().len(), 13);
    assert_eq!(report["sweep"].as_array().unwrap().len(), 6 * 7);
}

/// Exact-step central differences in float64 agree with this error of the cross-entropy backprop
/// gradient: both are float64, so only truncation (O(eps²)) and rounding (~1e-16/eps) remain.
const CROSS_ENTROPY_CENTRAL_EXACT_MAX_ERROR: f64 = 1e-8;

/// `perturb check --loss cross-entropy` differentiates softmax cross-entropy of class labels: the
/// float64 estimators agree with the cross-entropy backprop, per layer too, and the report says
/// which loss it measured.
#[test]
fn check_takes_cross_entropy_with_class_labels() {
    let d = dir("check-xent");
    let data = write(
        &d,
        "labels.csv",
        "0.5,-1.0,0\n1.0,0.25,2\n-0.5,0.75,1\n0.0,-0.25,2\n",
    );
    let json = d.join("check.json");
    let o = perturb(&[
        "check",
        "--loss",
        "cross-entropy",
        "--layers",
        "2,4,3",
        "--activations",
        "tanh,identity",
        "--data",
        &data,
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("cross-entropy loss"), "{out}");
    assert!(out.contains("layer 2"), "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    // 3 classes, 4 samples: the loss of near-uniform softmax is near ln 3.
    let loss = report["loss"].as_f64().unwrap();
    assert!((loss - 3f64.ln()).abs() < 1.0, "loss {loss}");
    let row = report["estimators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["estimator"] == "central" && r["step"] == "exact")
        .unwrap();
    let max = row["overall"]["max_error"].as_f64().unwrap();
    assert!(
        max < CROSS_ENTROPY_CENTRAL_EXACT_MAX_ERROR,
        "central/exact max error {max} against the cross-entropy backprop"
    );
    assert_eq!(row["layers"].as_array().unwrap().len(), 2);
}

/// Cross-entropy needs an identity output layer in `check` as in `train`.
#[test]
fn check_refuses_cross_entropy_behind_a_sigmoid_output_layer() {
    let d = dir("check-xent-sigmoid");
    let data = write(&d, "labels.csv", "0.5,-1.0,0\n1.0,0.25,1\n");
    assert_fails(
        &[
            "check",
            "--loss",
            "cross-entropy",
            "--layers",
            "2,3,2",
            "--activations",
            "tanh,sigmoid",
            "--data",
            &data,
        ],
        &["--loss cross-entropy", "identity output layer"],
    );
}
