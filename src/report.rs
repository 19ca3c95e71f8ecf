//! What a run shows and writes: console lines, the parameters laid out like the book's, the JSON report.

use crate::error::Result;
use crate::model::{Model, ModelFile};
use crate::settings::DeviceInfo;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// The `--report` file.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Loss of each epoch: the mean of its steps' losses (each before its update).
    pub losses: Vec<f64>,
    /// Loss of every step (one per epoch for full batches), before its update.
    pub step_losses: Vec<f64>,
    /// Validation loss and accuracy after every epoch, with validation data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val: Option<ValHistory>,
    /// Accuracy on the training data after every epoch, for class labels.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub train_accuracy: Vec<f64>,
    /// The trained model, in the model-file format.
    pub model: ModelFile,
    /// The trained network's outputs for every training input.
    pub predictions: Vec<Vec<f64>>,
    /// What computed the losses.
    pub device: DeviceInfo,
    /// Wall time of training in seconds.
    pub seconds: f64,
    /// Hyperparameters and precision of the run.
    pub settings: Settings,
}

/// The validation data's loss and accuracy after every epoch.
#[derive(Clone, Debug, Serialize)]
pub struct ValHistory {
    /// Loss after every epoch (float64).
    pub loss: Vec<f64>,
    /// Accuracy after every epoch, for class labels (else empty).
    pub accuracy: Vec<f64>,
}

/// The run's settings as recorded in a report.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// Epochs.
    pub epochs: usize,
    /// Learning rate.
    pub lr: f64,
    /// Nudge.
    pub eps: f64,
    /// `"f32"` or `"f64"`.
    pub precision: String,
    /// Number of samples.
    pub samples: usize,
    /// The gradient estimator (`forward differences over nominal steps`, …).
    pub estimator: String,
    /// `"mse"` or `"cross-entropy"`.
    pub loss: String,
    /// Samples per step (every sample: the full batch).
    pub batch_size: usize,
    /// The update rule and its constants.
    pub optimizer: crate::optim::Optimizer,
}

impl Report {
    /// Writes the report: an `.npz` of the model's arrays plus `losses` and `predictions`
    /// ([`crate::npy`]) by the extension, else pretty JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        if crate::npy::is_npz(path) {
            let model = self.model.clone().into_model("report")?;
            let mut members = crate::npy::model_arrays(&model);
            members.push((
                "losses".into(),
                crate::npy::encode_f64(&[self.losses.len()], &self.losses),
            ));
            let outputs = self.predictions.first().map_or(0, Vec::len);
            let flat: Vec<f64> = self.predictions.iter().flatten().copied().collect();
            members.push((
                "predictions".into(),
                crate::npy::encode_f64(&[self.predictions.len(), outputs], &flat),
            ));
            return crate::npy::save_npz(path, &members);
        }
        let text = serde_json::to_string_pretty(self).expect("report serialises");
        crate::fileio::write_atomic(path, (text + "\n").as_bytes())
    }
}

/// Which epochs get a console line: all of the first 100, then about 50 evenly spaced, always the last.
pub fn shows_epoch(epoch: usize, epochs: usize) -> bool {
    if epochs <= 100 || epoch <= 10 || epoch == epochs {
        return true;
    }
    epoch.is_multiple_of(epochs.div_ceil(50))
}

/// `2-3-1 (sigmoid, identity)`.
pub fn describe_model(model: &Model) -> String {
    let widths: Vec<String> = std::iter::once(model.inputs())
        .chain(model.layers().iter().map(|l| l.outputs))
        .map(|w| w.to_string())
        .collect();
    let acts: Vec<&str> = model.layers().iter().map(|l| l.activation.name()).collect();
    format!("{} ({})", widths.join("-"), acts.join(", "))
}

fn row(values: impl Iterator<Item = f32>) -> String {
    let v: Vec<String> = values.map(|x| format!("{x:>13}")).collect();
    format!("[{}]", v.join(", "))
}

/// The parameters as the book prints them: W1 as `[inputs][outputs]`, b1, W2, b2, …
/// Matrices wider or taller than `max` rows/columns are elided in the middle.
pub fn format_params(model: &Model, max: usize) -> String {
    let mut out = String::new();
    for l in 0..model.layers().len() {
        let w = model.weights(l);
        let _ = writeln!(out, "W{} ({}x{}) =", l + 1, w.nrows(), w.ncols());
        for (r, line) in w.outer_iter().enumerate() {
            if w.nrows() > max && r == max / 2 {
                let _ = writeln!(out, "  ... {} rows ...", w.nrows() - max);
            }
            if w.nrows() > max && r >= max / 2 && r < w.nrows() - max / 2 {
                continue;
            }
            let _ = writeln!(
                out,
                "  {}",
                row(line.iter().copied().take(max)) + if w.ncols() > max { " ..." } else { "" }
            );
        }
        let b = model.biases(l);
        let _ = writeln!(
            out,
            "b{} = {}{}",
            l + 1,
            row(b.iter().copied().take(max)),
            if b.len() > max { " ..." } else { "" }
        );
    }
    out
}

/// One line per training input (up to `max`, of `pred`'s rows): inputs, prediction, target; then how
/// many of `x`'s rows are not shown.
pub fn format_predictions(
    x: &ndarray::Array2<f32>,
    y: &ndarray::Array2<f32>,
    pred: &[Vec<f64>],
    max: usize,
) -> String {
    let mut out = String::new();
    for (i, p) in pred.iter().enumerate().take(max) {
        let xs: Vec<String> = x.row(i).iter().take(8).map(|v| v.to_string()).collect();
        let more = if x.ncols() > 8 { ", …" } else { "" };
        let ps: Vec<String> = p.iter().map(|v| format!("{v:.7}")).collect();
        let ts: Vec<String> = y.row(i).iter().map(|v| v.to_string()).collect();
        let _ = writeln!(
            out,
            "  x = [{}{more}]  ->  [{}]   (target [{}])",
            xs.join(", "),
            ps.join(", "),
            ts.join(", ")
        );
    }
    if x.nrows() > max {
        let _ = writeln!(out, "  … {} more samples", x.nrows() - max);
    }
    out
}

/// A number as a person would write it in a table: plain when moderate (0.01, 100), scientific
/// when huge or tiny (1e30, 2.5e-9).
pub fn compact(x: f64) -> String {
    if x == 0.0 || !x.is_finite() || (1e-4..1e6).contains(&x.abs()) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

/// A loss with the book's eight decimals, or in scientific notation when that would hide it.
pub fn format_loss(x: f64) -> String {
    if x == 0.0 || !x.is_finite() || (1e-4..1e4).contains(&x.abs()) {
        format!("{x:.8}")
    } else {
        format!("{x:.8e}")
    }
}
