//! `perturb eval` (a model's loss, accuracy and confusion matrix on data) and `perturb predict`
//! (its predictions, to the terminal or a CSV file).

use super::output::print_line;
use super::LossArg;
use crate::data::Dataset;
use crate::error::Result;
use crate::fileio::write_atomic;
use crate::metrics::{self, Evaluation};
use crate::model::{Loss, Model};
use crate::report;
use clap::Args;
use std::num::NonZeroUsize;
use std::path::PathBuf;

/// The model and data both commands read.
#[derive(Debug, Args)]
pub struct ModelData {
    /// Model file (JSON, or NumPy .npz with W1, b1, …).
    #[arg(long)]
    pub model: PathBuf,
    /// Data: a CSV file, NumPy .npz / .npy / x.npy,y.npy, IMAGES,LABELS (two IDX files), or
    /// fashion-mnist[:train|:test].
    #[arg(long)]
    pub data: PathBuf,
    /// The loss, which also says how targets are read (cross-entropy: labels or probabilities).
    #[arg(long, value_enum, default_value_t = LossArg::Mse)]
    pub loss: LossArg,
    /// Use only the first N samples of the data.
    #[arg(long, value_name = "N")]
    pub take: Option<NonZeroUsize>,
}

impl ModelData {
    fn load(&self) -> Result<(Model, Dataset, Loss)> {
        let loss = Loss::from(self.loss);
        let model = crate::files::load_model(&self.model)?;
        loss.check(&model)?;
        let (data, _) = super::load_data(&self.data, &model, loss, self.take)?;
        Ok((model, data, loss))
    }
}

/// `perturb eval` options.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model, data and loss.
    #[command(flatten)]
    pub input: ModelData,
    /// Print {"loss", "accuracy", "per_class", "confusion"} as JSON (null where the targets are
    /// not class labels), and nothing else.
    #[arg(long)]
    pub json: bool,
}

/// `perturb predict` options.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Model, data and loss.
    #[command(flatten)]
    pub input: ModelData,
    /// Write the predictions to FILE (CSV, replaced atomically) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Runs `perturb eval`.
pub fn eval(args: &EvalArgs) -> Result<()> {
    let (model, data, loss) = args.input.load()?;
    let e = metrics::evaluate(&model, &data, loss)?;
    if args.json {
        print_line(&serde_json::to_string(&e).expect("evaluation serialises"));
        return Ok(());
    }
    print_line(&format!(
        "perturb eval: {} network, {} sample{}, {} loss {:.8}",
        report::describe_model(&model),
        data.len(),
        if data.len() == 1 { "" } else { "s" },
        loss.name(),
        e.loss
    ));
    if let Some(text) = class_tables(&e) {
        print_line(&text);
    } else {
        print_line("(the targets are not class labels: no accuracy)");
    }
    Ok(())
}

/// Accuracy, the per-class table and the confusion matrix, when the targets are labels.
fn class_tables(e: &Evaluation) -> Option<String> {
    let (accuracy, per_class, confusion) =
        (e.accuracy?, e.per_class.as_ref()?, e.confusion.as_ref()?);
    let total: u64 = confusion.iter().flatten().sum();
    let right: u64 = (0..confusion.len()).map(|k| confusion[k][k]).sum();
    let mut out = format!("accuracy {accuracy:.4} ({right} of {total})\n\n");
    out += &format!("{:>5}  {:>8}  {:>7}\n", "class", "accuracy", "samples");
    for (k, (a, row)) in per_class.iter().zip(confusion).enumerate() {
        out += &format!("{k:>5}  {a:>8.4}  {:>7}\n", row.iter().sum::<u64>());
    }
    let width = confusion
        .iter()
        .flatten()
        .map(|c| c.to_string().len())
        .max()
        .unwrap_or(1)
        .max(confusion.len().to_string().len());
    out += "\nconfusion matrix (rows: true class, columns: predicted class):\n";
    out += &format!("{:>5}", "");
    for k in 0..confusion.len() {
        out += &format!(" {k:>width$}");
    }
    for (k, row) in confusion.iter().enumerate() {
        out += &format!("\n{k:>5}");
        for c in row {
            out += &format!(" {c:>width$}");
        }
    }
    Some(out)
}

/// Runs `perturb predict`.
pub fn predict(args: &PredictArgs) -> Result<()> {
    let outs = super::outputs::check_plain(
        &[
            ("--model", Some(args.input.model.as_path())),
            ("--data", Some(args.input.data.as_path())),
        ],
        &[("--output", args.output.as_deref())],
    )?;
    let (model, data, loss) = args.input.load()?;
    let outputs = metrics::forward(&model, data.x.view());
    let mut text = String::new();
    match loss {
        Loss::CrossEntropy => {
            for class in metrics::predict_classes(outputs.view()) {
                text += &format!("{class}\n");
            }
        }
        Loss::Mse => {
            for row in outputs.rows() {
                let values: Vec<String> = row.iter().map(f64::to_string).collect();
                text += &values.join(",");
                text.push('\n');
            }
        }
    }
    match outs.target("--output") {
        Some(path) => write_atomic(path, text.as_bytes()),
        None => {
            text.pop(); // print_line ends the last line
            print_line(&text);
            Ok(())
        }
    }
}
