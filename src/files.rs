//! Model and data files by their extension: JSON or NumPy `.npz` models; CSV, NumPy or IDX data,
//! and named data sets (Fashion-MNIST). The
//! I/O layer above [`crate::model`] and [`crate::data`], which stay free of file formats other
//! than their own text forms.

use crate::checkpoint::DataRef;
use crate::data::{Dataset, MAX_DATA_BYTES};
use crate::error::{Error, Result};
use crate::fileio::read_text_capped;
use crate::idx;
use crate::model::{Loss, Model, MAX_MODEL_BYTES};
use crate::npy;
use std::path::Path;

/// Reads a model file: JSON (at most [`MAX_MODEL_BYTES`]), or NumPy `.npz` ([`crate::npy`]) by the
/// extension.
pub fn load_model(path: &Path) -> Result<Model> {
    if npy::is_npz(path) {
        return npy::load_model(path);
    }
    let origin = path.display().to_string();
    let model_err = |message: String| Error::Model {
        origin: origin.clone(),
        message,
    };
    if npy::is_npy(path) {
        return Err(model_err(
            "a model is several arrays: use an .npz (W1, b1, W2, b2, …) or a JSON model file"
                .into(),
        ));
    }
    let text = read_text_capped(path, MAX_MODEL_BYTES, model_err)?;
    Model::from_json(&text, &origin)
}

/// Writes the model file: NumPy `.npz` ([`crate::npy`]) by the extension, else pretty JSON
/// (float32 values print in their shortest exact form).
pub fn save_model(model: &Model, path: &Path) -> Result<()> {
    if npy::is_npz(path) {
        return npy::save_npz(path, &npy::model_arrays(model));
    }
    if npy::is_npy(path) {
        return Err(Error::Config(format!(
            "{}: a model is several arrays; save it as .npz or .json",
            path.display()
        )));
    }
    let text = serde_json::to_string_pretty(&model.to_file()).expect("model serialises");
    crate::fileio::write_atomic(path, (text + "\n").as_bytes())
}

/// Reads data for `model`, the targets as `loss` takes them ([`crate::data::Targets`]):
///
/// - a named data set: `fashion-mnist` (= `fashion-mnist:train`, 60,000 images) or
///   `fashion-mnist:test` (10,000), from [`idx::fashion_mnist_dir`], pixels scaled to [0, 1], the
///   labels stored one-hot in 10 columns for either loss (MSE then trains on one-hot targets);
/// - `IMAGES,LABELS`, two IDX files (gzip or raw, [`crate::idx`]), labels stored one-hot in the
///   model's outputs for either loss;
/// - NumPy `.npz` / `.npy` / `x.npy,y.npy` ([`crate::npy`]) by the extension;
/// - else CSV ([`Dataset::from_csv`]).
///
/// A name or a pair is read as one only when no file of that name exists.
pub fn load_data(path: &Path, model: &Model, loss: Loss) -> Result<Dataset> {
    Ok(load_data_referenced(path, model, loss)?.0)
}

/// Reads data as [`load_data`] does and references the bytes it parsed (size and FNV-1a, as
/// checkpoints record them), so each file is read once: for a pair or a named data set the
/// reference covers both files' bytes as stored, in order, under the name as given. A pipe's
/// reference is marked [`DataRef::stream`].
pub fn load_data_referenced(
    path: &Path,
    model: &Model,
    loss: Loss,
) -> Result<(Dataset, Option<DataRef>)> {
    let given = path.to_string_lossy();
    if !path.is_file() {
        if let Some(split) = idx::parse_dataset_name(&given) {
            return fashion_mnist(split, path);
        }
        if let Some((a, b)) = given.split_once(',').filter(|_| !path.exists()) {
            if npy::is_npy_pair(path) {
                let x = npy::read_pair_part(Path::new(a), path)?;
                let y = npy::read_pair_part(Path::new(b), path)?;
                let data = npy::data_from_pair((&x, a), (&y, b), model, loss)?;
                return Ok((data, Some(DataRef::of_bytes(path, &[x, y].concat()))));
            }
            if ![a, b].iter().any(|p| has_other_data_ext(Path::new(p))) {
                return idx_pair(path, (Path::new(a), Path::new(b)), model);
            }
        }
    }
    // A pipe or a device is read once as it streams; its reference marks it so that a resume
    // asks for `--data` again and checks the new stream's bytes by hash.
    let stream = !path.metadata().is_ok_and(|m| m.is_file());
    let mark = |mut r: DataRef| {
        r.stream = stream;
        r
    };
    let origin = path.display().to_string();
    if npy::is_npz(path) || npy::is_npy(path) {
        let bytes = npy::read_file(path)?;
        let data = if npy::is_npz(path) {
            npy::data_from_npz(&bytes, model, loss, &origin)?
        } else {
            npy::data_from_npy(&bytes, model, loss, &origin)?
        };
        return Ok((data, Some(mark(DataRef::of_bytes(path, &bytes)))));
    }
    let text = read_text_capped(path, MAX_DATA_BYTES, |message| Error::Data {
        origin: origin.clone(),
        message,
    })?;
    let data = Dataset::from_csv(&text, model.inputs(), model.outputs(), loss, &origin)?;
    Ok((data, Some(mark(DataRef::of_bytes(path, text.as_bytes())))))
}

/// True for a name whose extension says it is not an IDX file (`a.csv,b.csv` is no IDX pair).
fn has_other_data_ext(path: &Path) -> bool {
    ["csv", "npz", "npy", "json"].iter().any(|ext| {
        path.extension()
            .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case(ext))
    })
}

/// A Fashion-MNIST split, its labels one-hot in [`idx::FASHION_CLASSES`] columns, referenced
/// under `name` as given.
fn fashion_mnist(split: idx::FashionSplit, name: &Path) -> Result<(Dataset, Option<DataRef>)> {
    let (images, labels) = idx::fashion_mnist_files(split, &idx::fashion_mnist_dir())?;
    let image_bytes = idx::read_idx_bytes(&images)?;
    let label_bytes = idx::read_idx_bytes(&labels)?;
    let (x, y) = idx::fashion_mnist_from_bytes((&image_bytes, &images), (&label_bytes, &labels))?;
    let classes = idx::FASHION_CLASSES as usize;
    let data = Dataset::from_labels(x, &y, classes, &labels.display().to_string())?;
    let reference = DataRef::of_bytes(name, &[image_bytes, label_bytes].concat());
    Ok((data, Some(reference)))
}

/// An IDX images file and labels file, the labels one-hot in the model's outputs.
fn idx_pair(
    given: &Path,
    (images, labels): (&Path, &Path),
    model: &Model,
) -> Result<(Dataset, Option<DataRef>)> {
    let image_bytes = idx::read_idx_bytes(images)?;
    let label_bytes = idx::read_idx_bytes(labels)?;
    let (x, y) = idx::images_labels_from_bytes((&image_bytes, images), (&label_bytes, labels))?;
    let data = Dataset::from_labels(x, &y, model.outputs(), &labels.display().to_string())?;
    let reference = DataRef::of_bytes(given, &[image_bytes, label_bytes].concat());
    Ok((data, Some(reference)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_files_over_max_model_bytes_are_refused_before_reading() {
        let dir = std::env::temp_dir().join(format!("perturb-model-cap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("huge.json");
        // Sparse: takes no disk space, and must not be read.
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(MAX_MODEL_BYTES + 1).unwrap();
        let e = load_model(&path).unwrap_err();
        assert!(matches!(e, Error::Model { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("1073741825 bytes; the limit is 1073741824"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
