//! `--precision f64` CPU training of mini-batch softmax cross-entropy (shuffled, sgd, momentum,
//! adam) against an independent float64 NumPy transcription of the rules
//! (benches/numpy_xent.py, fixture tests/fixtures/xent_numpy.json).

use perturb::optim::Optimizer;
use perturb::settings::Batching;
use perturb::train::Run;
use perturb::{Activation, Dataset, Device, Hyper, Loss, Model, Precision, Training};
use serde_json::Value;

/// Losses agree to float64 rounding of differently ordered sums (NumPy's matrix products and
/// means against perturb's loops): ~1e-16 relative per loss, grown by the trajectory to well
/// under this.
const LOSS_TOLERANCE: f64 = 1e-9;
/// Parameters are float32. The gradient's float64 rounding (~1e-13 for eps 1e-3) can, rarely,
/// round an update to the neighbouring float32; that one-ulp step (~6e-8 at magnitude 1) then
/// feeds the later steps. A wrong rule (loss, order, estimator, optimiser) moves them by ≥ 1e-3.
const PARAM_TOLERANCE: f64 = 1e-5;

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn assert_close(what: &str, rust: &[f64], numpy: &[f64], tolerance: f64) {
    assert_eq!(rust.len(), numpy.len(), "{what}: lengths");
    let (k, err) = rust
        .iter()
        .zip(numpy)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold((0, 0.0f64), |w, (k, e)| if e > w.1 { (k, e) } else { w });
    assert!(
        err <= tolerance,
        "{what}: worst index {k}: perturb {} vs NumPy {} (error {err:e} > {tolerance:e})",
        rust[k],
        numpy[k]
    );
}

#[test]
fn f64_minibatch_cross_entropy_training_matches_the_numpy_transcription() {
    let case: Value =
        serde_json::from_str(include_str!("fixtures/xent_numpy.json")).expect("fixture parses");
    let widths: Vec<usize> = floats(&case["widths"])
        .iter()
        .map(|&w| w as usize)
        .collect();
    let params: Vec<f32> = floats(&case["params"]).iter().map(|&p| p as f32).collect();
    let model = Model::random(&widths, &[Activation::Tanh, Activation::Identity], 0)
        .unwrap()
        .with_params(params)
        .unwrap();
    let x: Vec<f32> = case["x"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| floats(r).into_iter().map(|v| v as f32))
        .collect();
    let labels = floats(&case["labels"]);
    let (n, classes) = (labels.len(), widths[widths.len() - 1]);
    let x = ndarray::Array2::from_shape_vec((n, widths[0]), x).unwrap();
    let y = ndarray::Array2::from_shape_fn((n, classes), |(s, j)| {
        f32::from(u8::from(labels[s] as usize == j))
    });
    let data = Dataset::new(x, y).unwrap();
    let hyper = Hyper {
        epochs: case["epochs"].as_u64().unwrap() as usize,
        lr: case["lr"].as_f64().unwrap(),
        eps: case["eps"].as_f64().unwrap(),
        seed: case["seed"].as_u64().unwrap(),
        ..Hyper::book()
    };
    for expected in case["runs"].as_array().unwrap() {
        let opt: Optimizer = serde_json::from_value(expected["optimizer"].clone()).unwrap();
        let run = Run::new(hyper, model.params.clone()).with_optimizer(opt);
        let done = Training::new(model.clone(), data.clone())
            .device(Device::Cpu(Precision::F64))
            .loss(Loss::CrossEntropy)
            .batching(Batching {
                size: case["batch_size"].as_u64().unwrap() as usize,
                shuffle: true,
            })
            .runs(vec![run])
            .run_all()
            .unwrap();
        let run = &done.runs[0];
        let what = opt.name();
        assert_close(
            &format!("{what} step losses"),
            &run.step_losses,
            &floats(&expected["step_losses"]),
            LOSS_TOLERANCE,
        );
        assert_close(
            &format!("{what} epoch losses"),
            &run.losses,
            &floats(&expected["losses"]),
            LOSS_TOLERANCE,
        );
        let got: Vec<f64> = run.params.iter().map(|&p| f64::from(p)).collect();
        assert_close(
            &format!("{what} final parameters"),
            &got,
            &floats(&expected["params"]),
            PARAM_TOLERANCE,
        );
    }
}
