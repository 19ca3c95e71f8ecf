//! Training data: inputs and targets as float32 matrices, the book's one sample, CSV loading
//! (NumPy files: [`crate::npy`]), and the target forms each loss accepts ([`Targets`]).

use crate::error::{Error, Result};
use crate::fileio::read_text_capped;
use crate::model::{Loss, Model};
use ndarray::{Array2, ArrayView2};
use std::num::NonZeroUsize;
use std::path::Path;

/// Samples as rows: `x` is `[samples][inputs]`, `y` is `[samples][outputs]`. For cross-entropy `y`
/// always holds probabilities: class labels are stored as one-hot rows ([`Targets`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Inputs, one row per sample.
    pub x: Array2<f32>,
    /// Targets, one row per sample.
    pub y: Array2<f32>,
}

/// Largest data file read: 1 GiB (a bound so that a wrong path to a huge file fails fast; pipes
/// and devices are cut off there too).
pub const MAX_DATA_BYTES: u64 = 1 << 30;

/// Most samples (data rows) accepted: 16,777,216.
pub const MAX_SAMPLES: usize = 1 << 24;

/// How far a row of target probabilities may sum from 1 (float32 files written from float64
/// softmax outputs are off by a few ulps; a wrong file is off by far more).
pub const PROBABILITY_SUM_TOLERANCE: f64 = 1e-4;

/// How one row's targets are written in a file, and how they become a row of [`Dataset::y`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Targets {
    /// `columns` values taken as they are (mean squared error).
    Values {
        /// Target columns.
        columns: usize,
    },
    /// One column holding a class label `0 … classes − 1`, stored as a one-hot row.
    Label {
        /// Number of classes (the model's outputs).
        classes: usize,
    },
    /// `classes` probabilities, each ≥ 0, summing to 1 within [`PROBABILITY_SUM_TOLERANCE`].
    Probabilities {
        /// Number of classes (the model's outputs).
        classes: usize,
    },
}

impl Targets {
    /// The forms `loss` accepts for a model of `outputs` outputs: MSE takes `outputs` values;
    /// cross-entropy takes `outputs` probabilities or, when there is more than one output, one label.
    pub fn accepted(loss: Loss, outputs: usize) -> Vec<Targets> {
        match loss {
            Loss::Mse => vec![Targets::Values { columns: outputs }],
            Loss::CrossEntropy if outputs > 1 => vec![
                Targets::Probabilities { classes: outputs },
                Targets::Label { classes: outputs },
            ],
            Loss::CrossEntropy => vec![Targets::Probabilities { classes: outputs }],
        }
    }

    /// The form `loss` reads from `columns` target columns, if it accepts that many.
    pub fn for_columns(loss: Loss, outputs: usize, columns: usize) -> Option<Targets> {
        Targets::accepted(loss, outputs)
            .into_iter()
            .find(|t| t.columns() == columns)
    }

    /// Columns the form takes in a file.
    pub fn columns(self) -> usize {
        match self {
            Targets::Values { columns } => columns,
            Targets::Label { .. } => 1,
            Targets::Probabilities { classes } => classes,
        }
    }

    /// `"10 targets"`, `"a label"`, `"10 probabilities"`: the words of a column-count message.
    pub fn describe(self) -> String {
        match self {
            Targets::Values { columns } => format!("{columns} targets"),
            Targets::Label { .. } => "a label".into(),
            Targets::Probabilities { classes } => format!("{classes} probabilities"),
        }
    }

    /// Width of a stored target row.
    pub fn width(self) -> usize {
        match self {
            Targets::Values { columns } => columns,
            Targets::Label { classes } | Targets::Probabilities { classes } => classes,
        }
    }

    /// Appends the stored row for one row of target fields (`fields.len() == self.columns()`), or
    /// says what is wrong with them.
    pub fn push_row(self, fields: &[f32], out: &mut Vec<f32>) -> std::result::Result<(), String> {
        match self {
            Targets::Values { .. } => out.extend_from_slice(fields),
            Targets::Label { classes } => {
                one_hot(label(f64::from(fields[0]), classes)?, classes, out)
            }
            Targets::Probabilities { .. } => {
                if let Some(k) = fields.iter().position(|&p| p < 0.0) {
                    return Err(format!(
                        "probability {} (target {}) is negative",
                        fields[k],
                        k + 1
                    ));
                }
                let sum: f64 = fields.iter().map(|&p| f64::from(p)).sum();
                if (sum - 1.0).abs() > PROBABILITY_SUM_TOLERANCE {
                    return Err(format!(
                        "probabilities sum to {sum:.6}, not 1 (within {PROBABILITY_SUM_TOLERANCE:e})"
                    ));
                }
                out.extend_from_slice(fields);
            }
        }
        Ok(())
    }

    /// The stored rows for a matrix of target columns (`self.columns()` wide); an error names the
    /// row, 0-based as NumPy counts (`"row 3: label 2.5 is not a whole number"`).
    pub fn rows(self, y: ArrayView2<'_, f32>) -> std::result::Result<Array2<f32>, String> {
        let mut out = Vec::with_capacity(y.nrows().saturating_mul(self.width()));
        let mut row = Vec::with_capacity(self.columns());
        for (i, r) in y.rows().into_iter().enumerate() {
            row.clear();
            row.extend(r.iter().copied());
            self.push_row(&row, &mut out)
                .map_err(|m| format!("row {i}: {m}"))?;
        }
        Ok(Array2::from_shape_vec((y.nrows(), self.width()), out).expect("one width per row"))
    }
}

/// A label as a class index, refused when it is not a whole number in `0 … classes − 1`.
fn label(v: f64, classes: usize) -> std::result::Result<usize, String> {
    if v.fract() != 0.0 {
        return Err(format!("label {v} is not a whole number"));
    }
    if v < 0.0 || v >= classes as f64 {
        return Err(format!(
            "label {v} is out of range: the model has {classes} classes, 0 … {}",
            classes.saturating_sub(1)
        ));
    }
    Ok(v as usize)
}

/// Appends the row of `classes` zeros with a 1 at `class`.
fn one_hot(class: usize, classes: usize, out: &mut Vec<f32>) {
    out.extend((0..classes).map(|k| if k == class { 1.0 } else { 0.0 }));
}

/// Whether a CSV file's first line is a header: only when none of its fields is a number. One
/// mixing both (an empty cell, `0x10`) is neither a header nor a data row, and guessing would
/// lose a row: an error naming the line (`at`).
fn is_header(fields: &[&str], parsed: &[Option<f32>], at: &dyn Fn() -> String) -> Result<bool> {
    let numbers = parsed.iter().filter(|p| p.is_some()).count();
    if numbers == 0 {
        return Ok(true);
    }
    match parsed.iter().position(Option::is_none) {
        None => Ok(false),
        Some(c) => Err(data_err(
            &at(),
            format!(
                "the first line mixes numbers and text (column {} is {:?}): neither a header of names nor a data row",
                c + 1,
                fields[c]
            ),
        )),
    }
}

/// `"3 (2 inputs + 1 targets)"`, the widths a CSV row may have, for messages.
pub(crate) fn expected_widths(inputs: usize, forms: &[Targets]) -> String {
    let each: Vec<String> = forms
        .iter()
        .map(|t| {
            format!(
                "{} ({inputs} inputs + {})",
                inputs.saturating_add(t.columns()),
                t.describe()
            )
        })
        .collect();
    each.join(" or ")
}

impl Dataset {
    /// The book's data: one sample, `x = [1, 1]`, `y = [0]`.
    pub fn book() -> Dataset {
        Dataset {
            x: Array2::from_shape_vec((1, 2), vec![1.0, 1.0]).expect("shape"),
            y: Array2::from_shape_vec((1, 1), vec![0.0]).expect("shape"),
        }
    }

    /// Builds a data set from matrices, checking that they are non-empty, have as many rows as each
    /// other and hold only finite values.
    pub fn new(x: Array2<f32>, y: Array2<f32>) -> Result<Dataset> {
        let origin = "data";
        if x.nrows() == 0 {
            return Err(data_err(origin, "no samples".into()));
        }
        if x.nrows() != y.nrows() {
            return Err(data_err(
                origin,
                format!("{} input rows but {} target rows", x.nrows(), y.nrows()),
            ));
        }
        if x.iter().chain(y.iter()).any(|v| !v.is_finite()) {
            return Err(data_err(origin, "non-finite value".into()));
        }
        Ok(Dataset { x, y })
    }

    /// Number of samples B.
    pub fn len(&self) -> usize {
        self.x.nrows()
    }

    /// True when there are no samples (never for a validated data set).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks that the widths fit `model`.
    pub fn check_fits(&self, model: &Model, origin: &str) -> Result<()> {
        if self.x.ncols() != model.inputs() || self.y.ncols() != model.outputs() {
            return Err(data_err(
                origin,
                format!(
                    "{} input and {} target columns, but the model has {} inputs and {} outputs",
                    self.x.ncols(),
                    self.y.ncols(),
                    model.inputs(),
                    model.outputs()
                ),
            ));
        }
        Ok(())
    }

    /// Parses CSV text: one sample per line, `inputs` input columns then the targets `loss` takes
    /// for `outputs` outputs ([`Targets::accepted`]: for cross-entropy a label or probabilities,
    /// chosen by the first data row's width and then kept), an optional header line of column
    /// names, blank lines ignored, at most [`MAX_SAMPLES`] rows. `origin` names the file. Memory
    /// stays proportional to the values kept: a line's fields are counted before they are split.
    pub fn from_csv(
        text: &str,
        inputs: usize,
        outputs: usize,
        loss: Loss,
        origin: &str,
    ) -> Result<Dataset> {
        // Spreadsheets write a UTF-8 byte-order mark; it is no part of the first field.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.contains('\r') && !text.contains('\n') {
            return Err(data_err(
                origin,
                "lines end in a bare carriage return (CR, old Mac line ends); convert them to LF or CRLF".into(),
            ));
        }
        let mut forms = Targets::accepted(loss, outputs);
        let first_line = first_content_line(text);
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        let mut rows = 0usize;
        // Reused for every line (at most one row's width of entries each).
        let mut fields: Vec<&str> = Vec::new();
        let mut parsed: Vec<Option<f32>> = Vec::new();
        let mut targets: Vec<f32> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let lineno = i + 1;
            let at = || format!("{origin}:{lineno}");
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            // A line of a million commas must not become a million-entry vector.
            let columns = line.bytes().filter(|&b| b == b',').count() + 1;
            let Some(form) = forms
                .iter()
                .copied()
                .find(|t| inputs.saturating_add(t.columns()) == columns)
            else {
                let what = if rows == 0 && lineno == first_line && !any_numeric(line) {
                    "header has "
                } else {
                    ""
                };
                return Err(data_err(
                    &at(),
                    format!(
                        "{what}{columns} columns, expected {}",
                        expected_widths(inputs, &forms)
                    ),
                ));
            };
            if rows == MAX_SAMPLES {
                return Err(data_err(
                    &at(),
                    format!("more than {MAX_SAMPLES} samples (the limit)"),
                ));
            }
            fields.clear();
            fields.extend(line.split(',').map(str::trim));
            parsed.clear();
            parsed.extend(fields.iter().map(|f| f.parse::<f32>().ok()));
            if rows == 0 && lineno == first_line && is_header(&fields, &parsed, &at)? {
                continue;
            }
            targets.clear();
            for (c, (field, value)) in fields.iter().zip(&parsed).enumerate() {
                match value {
                    Some(v) if v.is_finite() => {
                        if c < inputs {
                            xs.push(*v)
                        } else {
                            targets.push(*v)
                        }
                    }
                    Some(v) => {
                        return Err(data_err(
                            &at(),
                            format!("column {} is {v}; data must be finite", c + 1),
                        ))
                    }
                    None => {
                        return Err(data_err(
                            &at(),
                            format!("column {} is not a number: {field:?}", c + 1),
                        ))
                    }
                }
            }
            form.push_row(&targets, &mut ys)
                .map_err(|m| data_err(&at(), m))?;
            // The first data row fixes the form for the rest of the file.
            forms = vec![form];
            rows += 1;
        }
        if rows == 0 {
            return Err(data_err(
                origin,
                "no samples (the file has no data rows)".into(),
            ));
        }
        let width = forms[0].width();
        Ok(Dataset {
            x: Array2::from_shape_vec((rows, inputs), xs).expect("row widths checked"),
            y: Array2::from_shape_vec((rows, width), ys).expect("row widths checked"),
        })
    }

    /// Reads a CSV data file for `model`, its targets as `loss` takes them.
    pub fn load_csv(path: &Path, model: &Model, loss: Loss) -> Result<Dataset> {
        let origin = path.display().to_string();
        let text = read_text_capped(path, MAX_DATA_BYTES, |m| data_err(&origin, m))?;
        Dataset::from_csv(&text, model.inputs(), model.outputs(), loss, &origin)
    }

    /// A data set of images `x` and class labels stored as one-hot rows of `classes` columns;
    /// a label of `classes` or more is refused naming `origin` and the sample (0-based).
    pub fn from_labels(
        x: Array2<f32>,
        labels: &[u32],
        classes: usize,
        origin: &str,
    ) -> Result<Dataset> {
        if labels.len() != x.nrows() {
            return Err(data_err(
                origin,
                format!("{} labels for {} samples", labels.len(), x.nrows()),
            ));
        }
        let mut y = Vec::with_capacity(labels.len().saturating_mul(classes));
        for (i, &l) in labels.iter().enumerate() {
            let class = label(f64::from(l), classes)
                .map_err(|m| data_err(origin, format!("sample {i}: {m}")))?;
            one_hot(class, classes, &mut y);
        }
        let y = Array2::from_shape_vec((labels.len(), classes), y).expect("one-hot rows");
        Dataset::new(x, y)
    }

    /// The class of each sample when every target row is exactly one-hot (one `1.0`, the rest
    /// `0.0`), as class labels are stored; `None` otherwise.
    pub fn labels(&self) -> Option<Vec<u32>> {
        self.y
            .rows()
            .into_iter()
            .map(|row| {
                let mut hot = None;
                for (k, &v) in row.iter().enumerate() {
                    match v {
                        1.0 if hot.is_none() => hot = Some(k as u32),
                        0.0 => {}
                        _ => return None,
                    }
                }
                hot
            })
            .collect()
    }

    /// A copy of the first `n` samples (all of them when there are fewer).
    pub fn head(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            x: self.x.slice(ndarray::s![..n, ..]).to_owned(),
            y: self.y.slice(ndarray::s![..n, ..]).to_owned(),
        }
    }

    /// The first `n` samples (all of them when there are fewer).
    pub fn take(self, n: NonZeroUsize) -> Dataset {
        match n.get() < self.len() {
            true => self.head(n.get()),
            false => self,
        }
    }
}

fn first_content_line(text: &str) -> usize {
    text.lines()
        .position(|l| !l.trim().is_empty())
        .map_or(0, |i| i + 1)
}

/// True when some field of a line parses as a number (so the line is no header).
fn any_numeric(line: &str) -> bool {
    line.split(',').any(|f| f.trim().parse::<f32>().is_ok())
}

fn data_err(origin: &str, message: String) -> Error {
    Error::Data {
        origin: origin.to_string(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_header_and_blank_lines_parses() {
        let d = Dataset::from_csv("a,b,y\n1,2,3\n\n4, 5 ,6\n", 2, 1, Loss::Mse, "t.csv").unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d.x.row(1).to_vec(), vec![4.0, 5.0]);
        assert_eq!(d.y.column(0).to_vec(), vec![3.0, 6.0]);
    }

    #[test]
    fn csv_errors_name_file_and_line() {
        let e = Dataset::from_csv("1,2,3\n1,2\n", 2, 1, Loss::Mse, "t.csv").unwrap_err();
        assert!(e.to_string().starts_with("t.csv:2:"), "{e}");
        let e = Dataset::from_csv("1,2,3\n1,x,3\n", 2, 1, Loss::Mse, "t.csv").unwrap_err();
        assert!(
            e.to_string().contains("t.csv:2") && e.to_string().contains("\"x\""),
            "{e}"
        );
        let e = Dataset::from_csv("1,nan,3\n", 2, 1, Loss::Mse, "t.csv").unwrap_err();
        assert!(e.to_string().contains("finite"), "{e}");
        let e = Dataset::from_csv("a,b,c\n", 2, 1, Loss::Mse, "t.csv").unwrap_err();
        assert!(e.to_string().contains("no samples"), "{e}");
    }

    #[test]
    fn a_bom_is_stripped_and_its_numeric_first_row_kept() {
        let d =
            Dataset::from_csv("\u{feff}1,2,3\n4,5,6\n7,8,9\n", 2, 1, Loss::Mse, "t.csv").unwrap();
        assert_eq!(d.len(), 3, "the BOM row must stay a data row");
        assert_eq!(d.x.row(0).to_vec(), vec![1.0, 2.0]);
        let d = Dataset::from_csv("\u{feff}a,b,y\n4,5,6\n", 2, 1, Loss::Mse, "t.csv").unwrap();
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn a_first_line_mixing_numbers_and_text_is_an_error_naming_line_1() {
        for text in ["0x10,2,3\n4,5,6\n", "1,,3\n4,5,6\n", "x,2,3\n4,5,6\n"] {
            let e = Dataset::from_csv(text, 2, 1, Loss::Mse, "t.csv").unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("t.csv:1: the first line mixes numbers and text"),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn cr_only_line_ends_are_named() {
        let e = Dataset::from_csv("1,2,3\r4,5,6\r", 2, 1, Loss::Mse, "t.csv").unwrap_err();
        assert!(e.to_string().contains("carriage return"), "{e}");
        let d = Dataset::from_csv("1,2,3\r\n4,5,6\r\n", 2, 1, Loss::Mse, "t.csv").unwrap();
        assert_eq!(d.len(), 2, "CRLF stays accepted");
    }

    #[test]
    fn a_line_of_commas_is_refused_by_its_count() {
        const COMMAS: usize = 1_000_000;
        let text = format!("1,1,0\n{}\n", ",".repeat(COMMAS));
        let e = Dataset::from_csv(&text, 2, 1, Loss::Mse, "t.csv").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.csv:2: 1000001 columns, expected 3 (2 inputs + 1 targets)"
        );
        let e = Dataset::from_csv("a,b\n1,1,0\n", 2, 1, Loss::Mse, "t.csv").unwrap_err();
        assert!(
            e.to_string().starts_with("t.csv:1: header has 2 columns"),
            "{e}"
        );
    }

    #[test]
    fn rows_over_max_samples_are_refused_at_the_first_extra_line() {
        let text = "1\n".repeat(MAX_SAMPLES + 1);
        let e = Dataset::from_csv(&text, 1, 0, Loss::Mse, "t.csv").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "t.csv:{}: more than 16777216 samples (the limit)",
                MAX_SAMPLES + 1
            )
        );
        let d = Dataset::from_csv(&text[2..], 1, 0, Loss::Mse, "t.csv").unwrap();
        assert_eq!(d.len(), MAX_SAMPLES);
    }

    #[test]
    fn widths_that_overflow_are_an_error_not_a_panic() {
        let e = Dataset::from_csv("1,2\n", usize::MAX, 1, Loss::Mse, "t.csv").unwrap_err();
        assert!(e.to_string().contains("columns, expected"), "{e}");
    }

    #[test]
    fn data_files_over_max_data_bytes_are_refused_before_reading() {
        let dir = std::env::temp_dir().join(format!("perturb-data-cap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("huge.csv");
        // Sparse: takes no disk space, and must not be read.
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(MAX_DATA_BYTES + 1).unwrap();
        let e = Dataset::load_csv(&path, &Model::book(), Loss::Mse).unwrap_err();
        assert!(matches!(e, Error::Data { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("1073741825 bytes; the limit is 1073741824"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `inputs` = 1, 3 classes.
    fn xent(text: &str) -> Result<Dataset> {
        Dataset::from_csv(text, 1, 3, Loss::CrossEntropy, "t.csv")
    }

    #[test]
    fn cross_entropy_csv_labels_become_exact_one_hot_rows() {
        let d = xent("x,label\n0.5,2\n1.5,0\n-1,1\n").unwrap();
        assert_eq!(
            d.y.iter().copied().collect::<Vec<f32>>(),
            vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        );
        assert_eq!(d.labels(), Some(vec![2, 0, 1]));
        assert_eq!(d.x.column(0).to_vec(), vec![0.5, 1.5, -1.0]);
    }

    #[test]
    fn cross_entropy_csv_probabilities_are_kept_as_they_are() {
        let d = xent("0.5,0.2,0.3,0.5\n1,0,1,0\n").unwrap();
        assert_eq!(d.y.row(0).to_vec(), vec![0.2, 0.3, 0.5]);
        // Not every row is one-hot: no labels.
        assert_eq!(d.labels(), None);
        // Within the tolerance: a float32 rounding of a softmax.
        xent("0,0.33333334,0.33333334,0.33333334\n").unwrap();
    }

    #[test]
    fn bad_labels_and_probabilities_name_file_line_and_value() {
        let cases = [
            (
                "0,3\n",
                "t.csv:1: label 3 is out of range: the model has 3 classes, 0 … 2",
            ),
            ("0,1\n0,2.5\n", "t.csv:2: label 2.5 is not a whole number"),
            (
                "x,y\n0,-1\n",
                "t.csv:2: label -1 is out of range: the model has 3 classes, 0 … 2",
            ),
            (
                "0,0.5,0.3,0.1\n",
                "t.csv:1: probabilities sum to 0.900000, not 1 (within 1e-4)",
            ),
            (
                "0,-0.5,1,0.5\n",
                "t.csv:1: probability -0.5 (target 1) is negative",
            ),
            // The first row's form holds for the file.
            (
                "0,1\n0,0,1,0\n",
                "t.csv:2: 4 columns, expected 2 (1 inputs + a label)",
            ),
            (
                "0,1,2\n",
                "t.csv:1: 3 columns, expected 4 (1 inputs + 3 probabilities) or 2 (1 inputs + a label)",
            ),
        ];
        for (text, want) in cases {
            let e = xent(text).unwrap_err();
            assert!(matches!(e, Error::Data { .. }), "{e:?}");
            assert_eq!(e.to_string(), want, "{text:?}");
        }
    }

    #[test]
    fn label_10_is_out_of_range_for_10_outputs() {
        let e = Dataset::from_csv("0,9\n0,10\n", 1, 10, Loss::CrossEntropy, "t.csv").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.csv:2: label 10 is out of range: the model has 10 classes, 0 … 9"
        );
    }

    #[test]
    fn mse_takes_no_label_column() {
        let e = Dataset::from_csv("0,2\n", 1, 3, Loss::Mse, "t.csv").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.csv:1: 2 columns, expected 4 (1 inputs + 3 targets)"
        );
        // MSE targets are values: 2.5 and negatives are fine.
        Dataset::from_csv("0,2.5,-1,7\n", 1, 3, Loss::Mse, "t.csv").unwrap();
    }

    #[test]
    fn one_hot_labels_out_of_range_name_the_sample() {
        let x = Array2::zeros((2, 1));
        let e = Dataset::from_labels(x.clone(), &[1, 5], 5, "l.idx").unwrap_err();
        assert_eq!(
            e.to_string(),
            "l.idx: sample 1: label 5 is out of range: the model has 5 classes, 0 … 4"
        );
        let e = Dataset::from_labels(x, &[1], 5, "l.idx").unwrap_err();
        assert_eq!(e.to_string(), "l.idx: 1 labels for 2 samples");
    }

    #[test]
    fn take_keeps_the_first_samples_and_all_when_fewer() {
        let d = xent("1,0\n2,1\n3,2\n").unwrap();
        let two = d.clone().take(NonZeroUsize::new(2).unwrap());
        assert_eq!(two.x.column(0).to_vec(), vec![1.0, 2.0]);
        assert_eq!(two.labels(), Some(vec![0, 1]));
        assert_eq!(d.clone().take(NonZeroUsize::new(99).unwrap()), d);
    }
}
