//! NumPy interop: models and reports as `.npz`, data from `.npz` or `.npy`.
//!
//! A model `.npz` holds `W1, b1, W2, b2, …` — `Wk` float32 `[inputs][outputs]`, `bk` float32
//! `[outputs]`, the layout of the book's `W[0]`, `W[1]`, … — and `activations`, a 1-D string array
//! with one name per layer (`sigmoid`, `tanh`, `relu`, `identity`). Without `activations`, hidden
//! layers are sigmoid and the last identity, as in the book. float64 weights are rounded to float32.
//! A report `.npz` adds `losses` (float64, one per epoch) and `predictions` (float64
//! `[samples][outputs]`).
//!
//! Data: an `.npz` with `x` `[samples][inputs]` and `y` `[samples][outputs]` (a 1-D array is one
//! column), any float, integer or bool dtype; or one `.npy` holding `[samples][inputs + outputs]`,
//! inputs then targets per row like the CSV; or two `.npy` files given as `x.npy,y.npy`. For
//! cross-entropy the targets are `outputs` probabilities or, by their width, one column of class
//! labels (an integer `y` of shape `[samples]` or `[samples][1]`; whole-number floats are taken
//! too), stored one-hot ([`crate::data::Targets`]). For MSE targets are taken as they are.

mod format;

pub use format::{encode_f32, encode_f64, encode_strings, parse, read_npz, Array, Values};

use crate::data::{expected_widths, Dataset, Targets};
use crate::error::{Error, Result};
use crate::model::{Activation, Layer, Loss, Model};
use ndarray::Array2;
use std::path::Path;

/// True when `path` ends in `.npz` (case-insensitive).
pub fn is_npz(path: &Path) -> bool {
    has_ext(path, "npz")
}

/// True when `path` ends in `.npy` (case-insensitive).
pub fn is_npy(path: &Path) -> bool {
    has_ext(path, "npy")
}

/// True for `x.npy,y.npy`: no file of that name exists, and a part before or after the comma ends
/// in `.npy`.
pub fn is_npy_pair(path: &Path) -> bool {
    let text = path.to_string_lossy();
    text.split_once(',')
        .is_some_and(|(x, y)| (is_npy(Path::new(x)) || is_npy(Path::new(y))) && !path.exists())
}

fn has_ext(path: &Path, ext: &str) -> bool {
    path.extension()
        .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case(ext))
}

/// Reads every array of an `.npz` held in `bytes`; errors name the file via `err`.
fn load_npz(bytes: &[u8], err: impl Fn(String) -> Error) -> Result<Vec<(String, Array)>> {
    read_npz(std::io::Cursor::new(bytes)).map_err(err)
}

fn find<'a>(arrays: &'a [(String, Array)], name: &str) -> Option<&'a Array> {
    arrays.iter().find(|(n, _)| n == name).map(|(_, a)| a)
}

fn names(arrays: &[(String, Array)]) -> String {
    let n: Vec<&str> = arrays.iter().map(|(n, _)| n.as_str()).collect();
    if n.is_empty() {
        "none".into()
    } else {
        n.join(", ")
    }
}

/// The numbers of `a`, or an error naming it when it holds strings.
fn numbers<'a>(name: &str, a: &'a Array) -> std::result::Result<&'a [f64], String> {
    match &a.values {
        Values::Numbers(v) => Ok(v),
        Values::Strings(_) => Err(format!(
            "{name} is a string array ({}), not numbers",
            a.dtype
        )),
    }
}

/// Index of the first non-finite value, formatted `[r, c]` for a matrix of `cols` columns.
fn first_non_finite(v: &[f64], cols: usize) -> Option<String> {
    let i = v.iter().position(|x| !x.is_finite())?;
    Some(format!("[{}, {}] is {}", i / cols, i % cols, v[i]))
}

/// Reads a model `.npz` (layout in the module documentation).
pub fn load_model(path: &Path) -> Result<Model> {
    let bytes = format::read_bounded(path).map_err(|e| Error::io(path, e))?;
    model_from_npz(&bytes, &path.display().to_string())
}

/// Reads a model from the bytes of an `.npz` file, as [`load_model`] does after reading the file;
/// errors are [`Error::Model`] naming `origin`.
pub fn model_from_npz(bytes: &[u8], origin: &str) -> Result<Model> {
    let err = |message: String| Error::Model {
        origin: origin.to_string(),
        message,
    };
    let arrays = load_npz(bytes, err)?;
    model_from_arrays(&arrays).map_err(err)
}

fn model_from_arrays(arrays: &[(String, Array)]) -> std::result::Result<Model, String> {
    let count = (1..)
        .take_while(|k| find(arrays, &format!("W{k}")).is_some())
        .count();
    if count == 0 {
        return Err(format!(
            "no array W1 (a model .npz holds W1, b1, W2, b2, …; this one holds {})",
            names(arrays)
        ));
    }
    for (name, _) in arrays {
        let layer = name
            .strip_prefix('W')
            .or_else(|| name.strip_prefix('b'))
            .and_then(|k| k.parse::<usize>().ok());
        if layer.is_some_and(|k| k == 0 || k > count) {
            return Err(format!("{name} does not belong to layers W1..W{count}"));
        }
    }
    let activations: Vec<Activation> = match find(arrays, "activations") {
        Some(a) => {
            let Values::Strings(names) = &a.values else {
                return Err(format!("activations is {}, not a string array", a.dtype));
            };
            if names.len() != count {
                return Err(format!(
                    "activations has {} names for {count} layers",
                    names.len()
                ));
            }
            names
                .iter()
                .map(|n| Activation::parse(n).map_err(|e| format!("activations: {e}")))
                .collect::<std::result::Result<_, _>>()?
        }
        None => (1..=count)
            .map(|k| {
                if k == count {
                    Activation::Identity
                } else {
                    Activation::Sigmoid
                }
            })
            .collect(),
    };
    let mut layers: Vec<Layer> = Vec::new();
    let mut params = Vec::new();
    for (k, activation) in (1..=count).zip(activations) {
        let wname = format!("W{k}");
        let w = find(arrays, &wname).expect("counted");
        let [inputs, outputs] = w.shape[..] else {
            return Err(format!(
                "{wname} has shape {:?}; it must be 2-D [inputs][outputs]",
                w.shape
            ));
        };
        let bname = format!("b{k}");
        let b = find(arrays, &bname).ok_or_else(|| format!("no array {bname} for {wname}"))?;
        let b_len = match b.shape[..] {
            [n] | [1, n] => n,
            _ => return Err(format!("{bname} has shape {:?}; it must be 1-D", b.shape)),
        };
        if inputs == 0 || outputs == 0 {
            return Err(format!(
                "{wname} has shape {:?}; no dimension may be 0",
                w.shape
            ));
        }
        if b_len != outputs {
            return Err(format!(
                "{bname} has {b_len} values but {wname} has {outputs} columns"
            ));
        }
        if let Some(prev) = layers.last() {
            if prev.outputs != inputs {
                return Err(format!(
                    "{wname} has {inputs} rows but W{} has {} columns",
                    k - 1,
                    prev.outputs
                ));
            }
        }
        for (name, a, cols) in [(&wname, w, outputs), (&bname, b, outputs)] {
            let v = numbers(name, a)?;
            // Rounding float64 to float32 can overflow; check after the conversion.
            let as_f32: Vec<f64> = v.iter().map(|&x| x as f32 as f64).collect();
            if let Some(bad) = first_non_finite(&as_f32, cols) {
                return Err(format!(
                    "{name}{bad} as float32 (parameters must be finite)"
                ));
            }
            params.extend(v.iter().map(|&x| x as f32));
        }
        layers.push(Layer {
            inputs,
            outputs,
            activation,
        });
    }
    Model::new(layers, params).map_err(|e| match e {
        Error::Model { message, .. } => message,
        other => other.to_string(),
    })
}

/// The model's arrays: `W1, b1, …` (float32) and `activations`.
pub fn model_arrays(model: &Model) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (l, layer) in model.layers().iter().enumerate() {
        let w = model.weights(l);
        let w: Vec<f32> = w.iter().copied().collect(); // row-major [inputs][outputs]
        out.push((
            format!("W{}", l + 1),
            encode_f32(&[layer.inputs, layer.outputs], &w),
        ));
        out.push((
            format!("b{}", l + 1),
            encode_f32(&[layer.outputs], model.biases(l)),
        ));
    }
    let acts: Vec<&str> = model.layers().iter().map(|l| l.activation.name()).collect();
    out.push(("activations".into(), encode_strings(&acts)));
    out
}

/// Writes `members` as an `.npz` at `path`.
pub fn save_npz(path: &Path, members: &[(String, Vec<u8>)]) -> Result<()> {
    // Built in memory, then written atomically like every output ([`crate::fileio::write_atomic`]).
    let mut zip = std::io::Cursor::new(Vec::new());
    format::write_npz(&mut zip, members).map_err(|e| Error::io(path, e))?;
    crate::fileio::write_atomic(path, &zip.into_inner())
}

/// Reads data for `model` from an `.npz` (`x`, `y`), one `.npy` (inputs then targets per row), or
/// `x.npy,y.npy` (layout in the module documentation), the targets as `loss` takes them.
pub fn load_data(path: &Path, model: &Model, loss: Loss) -> Result<Dataset> {
    let origin = path.display().to_string();
    if is_npz(path) {
        return data_from_npz(&read_file(path)?, model, loss, &origin);
    }
    let text = path.to_string_lossy();
    if let Some((xp, yp)) = text.split_once(',').filter(|_| is_npy_pair(path)) {
        let x = read_pair_part(Path::new(xp), path)?;
        let y = read_pair_part(Path::new(yp), path)?;
        return data_from_pair((&x, xp), (&y, yp), model, loss);
    }
    data_from_npy(&read_file(path)?, model, loss, &origin)
}

/// Reads one file of an `x.npy,y.npy` pair, refusing a part that is not `.npy` (naming the pair).
pub(crate) fn read_pair_part(part: &Path, pair: &Path) -> Result<Vec<u8>> {
    if !is_npy(part) {
        return Err(Error::Data {
            origin: pair.display().to_string(),
            message: format!("{}: a pair of data files must both be .npy", part.display()),
        });
    }
    read_file(part)
}

/// Reads a NumPy file whole, within the reader's size bound.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    format::read_bounded(path).map_err(|e| Error::io(path, e))
}

/// Reads data from the bytes of an `.npz` file holding `x` and `y`, as [`load_data`] does after
/// reading the file; errors are [`Error::Data`] naming `origin`.
pub fn data_from_npz(bytes: &[u8], model: &Model, loss: Loss, origin: &str) -> Result<Dataset> {
    let err = |message: String| Error::Data {
        origin: origin.to_string(),
        message,
    };
    let arrays = load_npz(bytes, err)?;
    let get = |name: &str| {
        find(&arrays, name).ok_or_else(|| {
            err(format!(
                "no array {name:?} (a data .npz holds x and y; this one holds {})",
                names(&arrays)
            ))
        })
    };
    let x = matrix("x", get("x")?).map_err(err)?;
    let y = matrix("y", get("y")?).map_err(err)?;
    let y = targets("y", y, model, loss).map_err(err)?;
    dataset(x, y).map_err(err)
}

/// Reads data from the bytes of the two files of an `x.npy,y.npy` pair (`xp`, `yp`: their names),
/// as [`load_data`] does after reading them; errors are [`Error::Data`] naming the pair and the
/// file at fault.
pub fn data_from_pair(
    (x, xp): (&[u8], &str),
    (y, yp): (&[u8], &str),
    model: &Model,
    loss: Loss,
) -> Result<Dataset> {
    let err = |message: String| Error::Data {
        origin: format!("{xp},{yp}"),
        message,
    };
    let read = |p: &str, bytes: &[u8]| -> Result<Array2<f32>> {
        let a = parse(bytes).map_err(|e| err(format!("{p}: {e}")))?;
        matrix(p, &a).map_err(err)
    };
    let x = read(xp, x)?;
    let y = targets("y", read(yp, y)?, model, loss).map_err(|m| err(format!("{yp}: {m}")))?;
    dataset(x, y).map_err(err)
}

/// Reads data for `model` from the bytes of one `.npy` file (inputs then targets per row), as
/// [`load_data`] does after reading the file; errors are [`Error::Data`] naming `origin`.
pub fn data_from_npy(bytes: &[u8], model: &Model, loss: Loss, origin: &str) -> Result<Dataset> {
    let err = |message: String| Error::Data {
        origin: origin.to_string(),
        message,
    };
    let a = parse(bytes).map_err(err)?;
    let xy = matrix("the array", &a).map_err(err)?;
    let inputs = model.inputs();
    let forms = Targets::accepted(loss, model.outputs());
    let Some(form) = forms
        .iter()
        .copied()
        .find(|t| inputs.saturating_add(t.columns()) == xy.ncols())
    else {
        return Err(err(format!(
            "{} columns, expected {}",
            xy.ncols(),
            expected_widths(inputs, &forms)
        )));
    };
    let x = xy.slice(ndarray::s![.., ..inputs]).to_owned();
    let y = form
        .rows(xy.slice(ndarray::s![.., inputs..]))
        .map_err(err)?;
    dataset(x, y).map_err(err)
}

/// The stored targets of a target array `name` for `loss`: as they are for MSE (the widths are
/// checked against the model later), labels or probabilities by their width for cross-entropy.
/// Errors are messages without the origin.
fn targets(
    name: &str,
    y: Array2<f32>,
    model: &Model,
    loss: Loss,
) -> std::result::Result<Array2<f32>, String> {
    let outputs = model.outputs();
    match loss {
        Loss::Mse => Ok(y),
        Loss::CrossEntropy => {
            let Some(form) = Targets::for_columns(loss, outputs, y.ncols()) else {
                let each: Vec<String> = Targets::accepted(loss, outputs)
                    .iter()
                    .map(|t| t.describe())
                    .collect();
                return Err(format!(
                    "{name} has {} columns; cross-entropy takes {} per sample",
                    y.ncols(),
                    each.join(" or ")
                ));
            };
            form.rows(y.view()).map_err(|m| format!("{name} {m}"))
        }
    }
}

/// A 2-D (or 1-D, as one column) numeric array as float32, refusing non-finite values.
fn matrix(name: &str, a: &Array) -> std::result::Result<Array2<f32>, String> {
    let (rows, cols) = match a.shape[..] {
        [n] => (n, 1),
        [r, c] => (r, c),
        _ => {
            return Err(format!(
                "{name} has shape {:?}; it must be 1-D or 2-D",
                a.shape
            ))
        }
    };
    let v: Vec<f32> = numbers(name, a)?.iter().map(|&x| x as f32).collect();
    let wide: Vec<f64> = v.iter().map(|&x| x as f64).collect();
    if let Some(bad) = first_non_finite(&wide, cols.max(1)) {
        return Err(format!("{name}{bad} as float32; data must be finite"));
    }
    Ok(Array2::from_shape_vec((rows, cols), v).expect("shape from the header"))
}

fn dataset(x: Array2<f32>, y: Array2<f32>) -> std::result::Result<Dataset, String> {
    if x.nrows() == 0 {
        return Err("no samples (x has 0 rows)".into());
    }
    if x.nrows() != y.nrows() {
        return Err(format!("x has {} rows but y has {}", x.nrows(), y.nrows()));
    }
    Dataset::new(x, y).map_err(|e| e.to_string())
}
