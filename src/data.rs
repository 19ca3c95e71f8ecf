//! Training data: inputs and targets as float32 matrices, the book's one sample, and CSV loading
//! (NumPy files: [`crate::npy`]).

use crate::error::{Error, Result};
use crate::fileio::read_text_capped;
use crate::model::Model;
use ndarray::Array2;
use std::path::Path;

/// Samples as rows: `x` is `[samples][inputs]`, `y` is `[samples][outputs]`.
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

    /// Parses CSV text: one sample per line, `inputs` input columns then `outputs` target columns,
    /// an optional header line of column names, blank lines ignored, at most [`MAX_SAMPLES`] rows.
    /// `origin` names the file. Memory stays proportional to the values kept: a line's fields are
    /// counted before they are split.
    pub fn from_csv(text: &str, inputs: usize, outputs: usize, origin: &str) -> Result<Dataset> {
        let width = inputs.saturating_add(outputs);
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        let mut rows = 0usize;
        // Reused for every line (at most `width` entries each).
        let mut fields: Vec<&str> = Vec::new();
        let mut parsed: Vec<Option<f32>> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let lineno = i + 1;
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            // A line of a million commas must not become a million-entry vector.
            let columns = line.bytes().filter(|&b| b == b',').count() + 1;
            if columns != width {
                let what = if rows == 0 && lineno == first_content_line(text) && !numeric(line) {
                    "header has "
                } else {
                    ""
                };
                return Err(data_err(
                    &format!("{origin}:{lineno}"),
                    format!(
                        "{what}{columns} columns, expected {width} ({inputs} inputs + {outputs} targets)"
                    ),
                ));
            }
            if rows == MAX_SAMPLES {
                return Err(data_err(
                    &format!("{origin}:{lineno}"),
                    format!("more than {MAX_SAMPLES} samples (the limit)"),
                ));
            }
            fields.clear();
            fields.extend(line.split(',').map(str::trim));
            parsed.clear();
            parsed.extend(fields.iter().map(|f| f.parse::<f32>().ok()));
            if rows == 0 && xs.is_empty() && lineno == first_content_line(text) {
                // A first line with any non-numeric field is a header of column names.
                if parsed.iter().any(Option::is_none) {
                    continue;
                }
            }
            for (c, (field, value)) in fields.iter().zip(&parsed).enumerate() {
                match value {
                    Some(v) if v.is_finite() => {
                        if c < inputs {
                            xs.push(*v)
                        } else {
                            ys.push(*v)
                        }
                    }
                    Some(v) => {
                        return Err(data_err(
                            &format!("{origin}:{lineno}"),
                            format!("column {} is {v}; data must be finite", c + 1),
                        ))
                    }
                    None => {
                        return Err(data_err(
                            &format!("{origin}:{lineno}"),
                            format!("column {} is not a number: {field:?}", c + 1),
                        ))
                    }
                }
            }
            rows += 1;
        }
        if rows == 0 {
            return Err(data_err(
                origin,
                "no samples (the file has no data rows)".into(),
            ));
        }
        Ok(Dataset {
            x: Array2::from_shape_vec((rows, inputs), xs).expect("row widths checked"),
            y: Array2::from_shape_vec((rows, outputs), ys).expect("row widths checked"),
        })
    }

    /// Reads a CSV data file for `model`.
    pub fn load_csv(path: &Path, model: &Model) -> Result<Dataset> {
        let origin = path.display().to_string();
        let text = read_text_capped(path, MAX_DATA_BYTES, |m| data_err(&origin, m))?;
        Dataset::from_csv(&text, model.inputs(), model.outputs(), &origin)
    }
}

fn first_content_line(text: &str) -> usize {
    text.lines()
        .position(|l| !l.trim().is_empty())
        .map_or(0, |i| i + 1)
}

/// True when every field of a line parses as a number (a data row, not a header).
fn numeric(line: &str) -> bool {
    line.split(',').all(|f| f.trim().parse::<f32>().is_ok())
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
        let d = Dataset::from_csv("a,b,y\n1,2,3\n\n4, 5 ,6\n", 2, 1, "t.csv").unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d.x.row(1).to_vec(), vec![4.0, 5.0]);
        assert_eq!(d.y.column(0).to_vec(), vec![3.0, 6.0]);
    }

    #[test]
    fn csv_errors_name_file_and_line() {
        let e = Dataset::from_csv("1,2,3\n1,2\n", 2, 1, "t.csv").unwrap_err();
        assert!(e.to_string().starts_with("t.csv:2:"), "{e}");
        let e = Dataset::from_csv("1,2,3\n1,x,3\n", 2, 1, "t.csv").unwrap_err();
        assert!(
            e.to_string().contains("t.csv:2") && e.to_string().contains("\"x\""),
            "{e}"
        );
        let e = Dataset::from_csv("1,nan,3\n", 2, 1, "t.csv").unwrap_err();
        assert!(e.to_string().contains("finite"), "{e}");
        let e = Dataset::from_csv("a,b,c\n", 2, 1, "t.csv").unwrap_err();
        assert!(e.to_string().contains("no samples"), "{e}");
    }

    #[test]
    fn a_line_of_commas_is_refused_by_its_count() {
        const COMMAS: usize = 1_000_000;
        let text = format!("1,1,0\n{}\n", ",".repeat(COMMAS));
        let e = Dataset::from_csv(&text, 2, 1, "t.csv").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.csv:2: 1000001 columns, expected 3 (2 inputs + 1 targets)"
        );
        let e = Dataset::from_csv("a,b\n1,1,0\n", 2, 1, "t.csv").unwrap_err();
        assert!(
            e.to_string().starts_with("t.csv:1: header has 2 columns"),
            "{e}"
        );
    }

    #[test]
    fn rows_over_max_samples_are_refused_at_the_first_extra_line() {
        let text = "1\n".repeat(MAX_SAMPLES + 1);
        let e = Dataset::from_csv(&text, 1, 0, "t.csv").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "t.csv:{}: more than 16777216 samples (the limit)",
                MAX_SAMPLES + 1
            )
        );
        let d = Dataset::from_csv(&text[2..], 1, 0, "t.csv").unwrap();
        assert_eq!(d.len(), MAX_SAMPLES);
    }

    #[test]
    fn widths_that_overflow_are_an_error_not_a_panic() {
        let e = Dataset::from_csv("1,2\n", usize::MAX, 1, "t.csv").unwrap_err();
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
        let e = Dataset::load_csv(&path, &Model::book()).unwrap_err();
        assert!(matches!(e, Error::Data { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("1073741825 bytes; the limit is 1073741824"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
