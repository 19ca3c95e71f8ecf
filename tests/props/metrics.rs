//! `metrics::evaluate` on random models and labelled data: the accuracy is the confusion matrix's
//! trace over its total, the matrix counts every sample once, and the tiled, threaded forward pass
//! gives what a plain per-sample pass gives.

use perturb::metrics::{self, Evaluation};
use perturb::{Activation, Dataset, Layer, Loss, Model};
use proptest::prelude::*;

use crate::support::*;

/// The tiled pass adds in the same order as the plain one; only the loss's final sum may differ.
const LOSS_TOLERANCE: f64 = 1e-12;

/// A 2-layer model `inputs → hidden (tanh) → classes (identity)` with the given parameters.
fn model(inputs: usize, hidden: usize, classes: usize, params: &[f32]) -> Model {
    let layers = vec![
        Layer {
            inputs,
            outputs: hidden,
            activation: Activation::Tanh,
        },
        Layer {
            inputs: hidden,
            outputs: classes,
            activation: Activation::Identity,
        },
    ];
    let n = (inputs + 1) * hidden + (hidden + 1) * classes;
    Model::new(layers, params.iter().cycle().take(n).copied().collect()).unwrap()
}

/// One sample's outputs by the textbook loops, in float64.
fn plain_forward(m: &Model, x: &[f32]) -> Vec<f64> {
    let mut a: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    for (l, layer) in m.layers().iter().enumerate() {
        let w = m.weights(l);
        a = (0..layer.outputs)
            .map(|j| {
                let mut z = f64::from(m.biases(l)[j]);
                for (i, &ai) in a.iter().enumerate() {
                    z += ai * f64::from(w[[i, j]]);
                }
                match layer.activation {
                    Activation::Tanh => z.tanh(),
                    _ => z,
                }
            })
            .collect();
    }
    a
}

fn labelled(inputs: usize, classes: usize, xs: &[f32], labels: &[u32]) -> Dataset {
    let n = labels.len();
    let x: Vec<f32> = xs.iter().cycle().take(n * inputs).copied().collect();
    let x = ndarray::Array2::from_shape_vec((n, inputs), x).unwrap();
    let labels: Vec<u32> = labels.iter().map(|&l| l % classes as u32).collect();
    Dataset::from_labels(x, &labels, classes, "t").unwrap()
}

fn check(e: &Evaluation, d: &Dataset, predicted: &[usize]) {
    let labels = d.labels().unwrap();
    let confusion = e.confusion.as_ref().unwrap();
    let total: u64 = confusion.iter().flatten().sum();
    let trace: u64 = (0..confusion.len()).map(|k| confusion[k][k]).sum();
    assert_eq!(total, d.len() as u64);
    assert_eq!(e.accuracy, Some(trace as f64 / total as f64));
    let right = labels
        .iter()
        .zip(predicted)
        .filter(|(&l, &p)| l as usize == p)
        .count();
    assert_eq!(trace, right as u64);
    for (k, a) in e.per_class.as_ref().unwrap().iter().enumerate() {
        let of_k = labels.iter().filter(|&&l| l as usize == k).count();
        if of_k == 0 {
            assert!(a.is_nan());
        } else {
            assert_eq!(*a, confusion[k][k] as f64 / of_k as f64);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn accuracy_is_the_confusion_trace_over_the_total(
        (inputs, hidden, classes) in (1usize..5, 1usize..6, 2usize..6),
        params in prop::collection::vec(-2f32..2.0, 1..40),
        xs in prop::collection::vec(-3f32..3.0, 1..40),
        labels in prop::collection::vec(any::<u32>(), 1..70),
    ) {
        let m = model(inputs, hidden, classes, &params);
        let d = labelled(inputs, classes, &xs, &labels);
        let e = metrics::evaluate(&m, &d, Loss::CrossEntropy).unwrap();
        let plain: Vec<Vec<f64>> = d.x.rows().into_iter().map(|r| plain_forward(&m, &r.to_vec())).collect();
        let tiled = metrics::forward(&m, d.x.view());
        for (i, row) in plain.iter().enumerate() {
            prop_assert_eq!(&tiled.row(i).to_vec(), row);
        }
        let predicted = metrics::predict_classes(tiled.view());
        check(&e, &d, &predicted);
        let lse = |z: &[f64]| z.iter().map(|v| v.exp()).sum::<f64>().ln();
        let want: f64 = plain.iter().zip(d.labels().unwrap()).map(|(z, l)| lse(z) - z[l as usize]).sum::<f64>() / d.len() as f64;
        prop_assert!((e.loss - want).abs() <= LOSS_TOLERANCE * want.abs().max(1.0), "{} vs {}", e.loss, want);
    }
}
