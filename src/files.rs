//! Model and data files by their extension: JSON or NumPy `.npz` models, CSV or NumPy data. The
//! I/O layer above [`crate::model`] and [`crate::data`], which stay free of file formats other
//! than their own text forms.

use crate::checkpoint::DataRef;
use crate::data::{Dataset, MAX_DATA_BYTES};
use crate::error::{Error, Result};
use crate::fileio::read_text_capped;
use crate::model::{Model, MAX_MODEL_BYTES};
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
    std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
}

/// Reads a data file for `model`: NumPy `.npz` / `.npy` / `x.npy,y.npy` ([`crate::npy`]) by the
/// extension, else CSV.
pub fn load_data(path: &Path, model: &Model) -> Result<Dataset> {
    if npy::is_npz(path) || npy::is_npy(path) || npy::is_npy_pair(path) {
        return npy::load_data(path, model);
    }
    Dataset::load_csv(path, model)
}

/// Reads a data file as [`load_data`] does and, for a regular file, references the bytes it
/// parsed (size and FNV-1a, as checkpoints record them), so the file is read once. A pipe or a
/// pair of `.npy` files gets no reference.
pub fn load_data_referenced(path: &Path, model: &Model) -> Result<(Dataset, Option<DataRef>)> {
    if !path.metadata().is_ok_and(|m| m.is_file()) {
        return Ok((load_data(path, model)?, None));
    }
    let origin = path.display().to_string();
    if npy::is_npz(path) || npy::is_npy(path) {
        let bytes = npy::read_file(path)?;
        let data = if npy::is_npz(path) {
            npy::data_from_npz(&bytes, &origin)?
        } else {
            npy::data_from_npy(&bytes, model, &origin)?
        };
        return Ok((data, Some(DataRef::of_bytes(path, &bytes))));
    }
    let text = read_text_capped(path, MAX_DATA_BYTES, |message| Error::Data {
        origin: origin.clone(),
        message,
    })?;
    let data = Dataset::from_csv(&text, model.inputs(), model.outputs(), &origin)?;
    Ok((data, Some(DataRef::of_bytes(path, text.as_bytes()))))
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
