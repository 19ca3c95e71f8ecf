//! How good a model is on a data set: the loss in float64, and for class labels the accuracy,
//! per-class accuracy and confusion matrix. Pure: no files, no devices.
//!
//! The forward pass runs in float64 with the model's float32 parameters (as `--precision f64`
//! trains), over tiles of samples so that each weight row is loaded once per tile, on every core.

use crate::data::Dataset;
use crate::error::Result;
use crate::model::{Activation, LayerSpan, Loss, Model};
use ndarray::{Array2, ArrayView2, Axis};
use serde::Serialize;

/// Samples pushed through a layer together: each weight row is read once per tile (a 784×128
/// layer in float64 is 800 KB, past most L2 caches).
const TILE: usize = 16;

/// A model's score on a data set.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    /// The loss, as training computes it (mean over outputs for MSE, over samples for
    /// cross-entropy), in float64.
    pub loss: f64,
    /// Fraction of samples whose predicted class (largest output, ties to the lowest index) is the
    /// label; `None` unless every target row is one-hot ([`Dataset::labels`]).
    pub accuracy: Option<f64>,
    /// Accuracy among the samples of each class (`NaN` for a class without samples, `null` in
    /// JSON); `None` as for `accuracy`.
    pub per_class: Option<Vec<f64>>,
    /// Counts of (true class, predicted class): `confusion[true][predicted]`, one row and column
    /// per output; `None` as for `accuracy`.
    pub confusion: Option<Vec<Vec<u64>>>,
}

/// Evaluates `model` on `data` under `loss`. Refuses data of other widths than the model's and a
/// model `loss` cannot score ([`Loss::check`]).
pub fn evaluate(model: &Model, data: &Dataset, loss: Loss) -> Result<Evaluation> {
    data.check_fits(model, "data")?;
    loss.check(model)?;
    let outputs = forward(model, data.x.view());
    let per_sample: Vec<f64> = outputs
        .rows()
        .into_iter()
        .zip(data.y.rows())
        .map(|(o, y)| {
            let (o, y) = (o.as_slice().expect("rows"), y.to_vec());
            match loss {
                Loss::Mse => o
                    .iter()
                    .zip(&y)
                    .map(|(&o, &t)| (o - f64::from(t)).powi(2))
                    .sum(),
                Loss::CrossEntropy => cross_entropy(o, &y),
            }
        })
        .collect();
    let count = loss.mean_count(data.len(), model.outputs());
    let loss_value = per_sample.iter().sum::<f64>() / count as f64;
    let mut evaluation = Evaluation {
        loss: loss_value,
        accuracy: None,
        per_class: None,
        confusion: None,
    };
    if let Some(labels) = data.labels() {
        let predicted = predict_classes(outputs.view());
        let confusion = confusion_matrix(&labels, &predicted, model.outputs());
        evaluation.accuracy = Some(accuracy(&confusion));
        evaluation.per_class = Some(per_class_accuracy(&confusion));
        evaluation.confusion = Some(confusion);
    }
    Ok(evaluation)
}

/// `logsumexp(z) − Σ_k p_k·z_k`, the logsumexp taken after subtracting the largest logit.
fn cross_entropy(z: &[f64], p: &[f32]) -> f64 {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + z.iter().map(|&v| (v - max).exp()).sum::<f64>().ln();
    lse - z
        .iter()
        .zip(p)
        .map(|(&v, &q)| f64::from(q) * v)
        .sum::<f64>()
}

/// The model's outputs for each row of `x` (`[samples][outputs]`), computed in float64 with the
/// float32 parameters, on as many threads as the machine offers.
pub fn forward(model: &Model, x: ArrayView2<'_, f32>) -> Array2<f64> {
    let spans = model.layer_spans();
    let params: Vec<f64> = model.params.iter().map(|&p| f64::from(p)).collect();
    let mut out = Array2::<f64>::zeros((x.nrows(), model.outputs()));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Whole tiles per thread, so every thread but the last gets the same work.
    let per_thread = x.nrows().div_ceil(threads).div_ceil(TILE).max(1) * TILE;
    std::thread::scope(|scope| {
        for (xs, mut os) in x
            .axis_chunks_iter(Axis(0), per_thread)
            .zip(out.axis_chunks_iter_mut(Axis(0), per_thread))
        {
            let (spans, params) = (&spans, &params);
            scope.spawn(move || {
                for (xt, mut ot) in xs
                    .axis_chunks_iter(Axis(0), TILE)
                    .zip(os.axis_chunks_iter_mut(Axis(0), TILE))
                {
                    let result = forward_tile(spans, params, xt);
                    let shape = ot.raw_dim();
                    ot.assign(&ArrayView2::from_shape(shape, &result).expect("tile shape"));
                }
            });
        }
    });
    out
}

/// One tile of samples through every layer; returns its outputs row-major.
fn forward_tile(spans: &[LayerSpan], params: &[f64], x: ArrayView2<'_, f32>) -> Vec<f64> {
    let n = x.nrows();
    let mut cur: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let mut next = Vec::new();
    for s in spans {
        let (w, b) = (
            &params[s.w_off..s.w_off + s.inputs * s.outputs],
            &params[s.b_off..s.b_off + s.outputs],
        );
        next.clear();
        for _ in 0..n {
            next.extend_from_slice(b);
        }
        for (i, w_row) in w.chunks_exact(s.outputs).enumerate() {
            for (sample, z) in next.chunks_exact_mut(s.outputs).enumerate() {
                let a = cur[sample * s.inputs + i];
                // Images are mostly zero pixels; skipping them changes no sum.
                if a == 0.0 {
                    continue;
                }
                for (z, &wv) in z.iter_mut().zip(w_row) {
                    *z += a * wv;
                }
            }
        }
        for z in next.iter_mut() {
            *z = activate(s.activation, *z);
        }
        std::mem::swap(&mut cur, &mut next);
    }
    cur
}

fn activate(act: Activation, z: f64) -> f64 {
    match act {
        Activation::Identity => z,
        Activation::Sigmoid => 1.0 / (1.0 + (-z).exp()),
        Activation::Tanh => z.tanh(),
        Activation::Relu => z.max(0.0),
    }
}

/// The predicted class of each row of `outputs`: the index of its largest value, the lowest index
/// among equals (a row of NaNs predicts class 0).
pub fn predict_classes(outputs: ArrayView2<'_, f64>) -> Vec<usize> {
    outputs
        .rows()
        .into_iter()
        .map(|row| {
            let mut best = 0;
            for (k, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = k;
                }
            }
            best
        })
        .collect()
}

/// `confusion[true][predicted]` over `classes` classes. Labels and predictions must be below
/// `classes` (as [`Dataset::labels`] and [`predict_classes`] give them for a model of `classes`
/// outputs).
pub fn confusion_matrix(labels: &[u32], predicted: &[usize], classes: usize) -> Vec<Vec<u64>> {
    let mut m = vec![vec![0u64; classes]; classes];
    for (&t, &p) in labels.iter().zip(predicted) {
        m[t as usize][p] += 1;
    }
    m
}

/// The trace over the total of a confusion matrix (`NaN` when it is empty).
pub fn accuracy(confusion: &[Vec<u64>]) -> f64 {
    let total: u64 = confusion.iter().flatten().sum();
    let right: u64 = (0..confusion.len()).map(|k| confusion[k][k]).sum();
    right as f64 / total as f64
}

/// Each class's diagonal entry over its row's total (`NaN` for a class without samples).
pub fn per_class_accuracy(confusion: &[Vec<u64>]) -> Vec<f64> {
    confusion
        .iter()
        .enumerate()
        .map(|(k, row)| row[k] as f64 / row.iter().sum::<u64>() as f64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Layer;

    /// The float64 loss is summed in one order; hand arithmetic agrees to rounding.
    const HAND_TOLERANCE: f64 = 1e-12;

    /// 2 inputs → 2 identity outputs, `z = x` exactly (identity weights, zero biases).
    fn pass_through() -> Model {
        let layers = vec![Layer {
            inputs: 2,
            outputs: 2,
            activation: Activation::Identity,
        }];
        Model::new(layers, vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0]).unwrap()
    }

    /// Four samples of two classes: logits (2,0) (0,1) (1,1) (0,3), labels 0 0 1 1.
    fn four_samples() -> Dataset {
        let x =
            Array2::from_shape_vec((4, 2), vec![2.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 3.0]).unwrap();
        Dataset::from_labels(x, &[0, 0, 1, 1], 2, "t").unwrap()
    }

    #[test]
    fn two_classes_four_samples_match_hand_computation() {
        let e = evaluate(&pass_through(), &four_samples(), Loss::CrossEntropy).unwrap();
        // Per sample: ln(e^z0 + e^z1) − z_label.
        let l = |z0: f64, z1: f64, t: f64| (z0.exp() + z1.exp()).ln() - t;
        let want =
            (l(2.0, 0.0, 2.0) + l(0.0, 1.0, 0.0) + l(1.0, 1.0, 1.0) + l(0.0, 3.0, 3.0)) / 4.0;
        assert!(
            (e.loss - want).abs() < HAND_TOLERANCE,
            "{} vs {want}",
            e.loss
        );
        // Predictions 0, 1, 0 (tie → lowest), 1: right on samples 0 and 3.
        assert_eq!(e.confusion, Some(vec![vec![1, 1], vec![1, 1]]));
        assert_eq!(e.accuracy, Some(0.5));
        assert_eq!(e.per_class, Some(vec![0.5, 0.5]));
        let mse = evaluate(&pass_through(), &four_samples(), Loss::Mse).unwrap();
        // Squared errors against one-hot targets: 1+0, 1+1, 0+1, 0+4 over 8 outputs.
        assert!(
            (mse.loss - 8.0 / 8.0).abs() < HAND_TOLERANCE,
            "{}",
            mse.loss
        );
    }

    #[test]
    fn a_class_without_samples_has_nan_accuracy_and_null_in_json() {
        let x = Array2::from_shape_vec((1, 2), vec![1.0, 0.0]).unwrap();
        let d = Dataset::from_labels(x, &[0], 2, "t").unwrap();
        let e = evaluate(&pass_through(), &d, Loss::CrossEntropy).unwrap();
        let per_class = e.per_class.clone().unwrap();
        assert_eq!(per_class[0], 1.0);
        assert!(per_class[1].is_nan());
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains(r#""per_class":[1.0,null]"#), "{json}");
    }

    #[test]
    fn targets_that_are_not_labels_give_no_accuracy() {
        let x = Array2::from_shape_vec((1, 2), vec![0.0, 0.0]).unwrap();
        let y = Array2::from_shape_vec((1, 2), vec![0.5, 0.5]).unwrap();
        let e = evaluate(
            &pass_through(),
            &Dataset::new(x, y).unwrap(),
            Loss::CrossEntropy,
        )
        .unwrap();
        assert!((e.loss - 2f64.ln()).abs() < HAND_TOLERANCE, "{}", e.loss);
        assert_eq!((e.accuracy, e.per_class, e.confusion), (None, None, None));
    }

    #[test]
    fn the_tiled_threaded_forward_pass_matches_the_book_network() {
        // The book's 2-3-1 network and sample: its chapter-1 loss, to the 8 places it prints.
        let e = evaluate(&Model::book(), &Dataset::book(), Loss::Mse).unwrap();
        assert_eq!(format!("{:.8}", e.loss), "0.33455009");
        // Many samples over tiles and threads give each row what one sample alone gives.
        let many = Array2::from_shape_fn((TILE * 5 + 3, 2), |(i, j)| (i * 2 + j) as f32 * 0.01);
        let all = forward(&Model::book(), many.view());
        for i in [0, TILE - 1, TILE, TILE * 5 + 2] {
            let one = forward(&Model::book(), many.slice(ndarray::s![i..i + 1, ..]));
            assert_eq!(all.row(i), one.row(0));
        }
    }

    #[test]
    fn wrong_widths_and_a_non_identity_output_for_cross_entropy_are_refused() {
        let e = evaluate(&Model::book(), &four_samples(), Loss::Mse).unwrap_err();
        assert!(
            e.to_string().contains("2 input and 2 target columns"),
            "{e}"
        );
        let layers = vec![Layer {
            inputs: 2,
            outputs: 2,
            activation: Activation::Sigmoid,
        }];
        let m = Model::new(layers, vec![0.0; 6]).unwrap();
        let e = evaluate(&m, &four_samples(), Loss::CrossEntropy).unwrap_err();
        assert!(e.to_string().contains("identity output layer"), "{e}");
    }
}
