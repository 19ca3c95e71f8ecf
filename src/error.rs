//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in perturb. Messages are one line, name the file (and line or field)
/// when there is one, and say what to do where that is not obvious.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A model file is malformed or inconsistent.
    #[error("{origin}: {message}")]
    Model {
        /// File name or "model".
        origin: String,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A data file is malformed or does not fit the model.
    #[error("{origin}: {message}")]
    Data {
        /// File name, with the line where there is one.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A hyperparameter or option is out of range or inconsistent.
    #[error("{0}")]
    Config(String),
    /// No usable GPU adapter.
    #[error("no GPU adapter found{found}; use --device cpu, or install a Vulkan driver (on Debian/Ubuntu: apt-get install mesa-vulkan-drivers libvulkan1)")]
    NoAdapter {
        /// ", saw: ..." listing adapters that were seen but rejected, or empty.
        found: String,
    },
    /// An adapter was asked for by name and none matched.
    #[error("no GPU adapter matches {wanted:?}; available: {available}")]
    AdapterNotFound {
        /// The requested substring.
        wanted: String,
        /// The adapters that exist.
        available: String,
    },
    /// The model or data does not fit what this adapter can run.
    #[error("{0}")]
    TooLarge(String),
    /// wgpu reported an error (validation, out of memory, device lost, readback failure).
    #[error("GPU error: {0}")]
    Gpu(String),
    /// The loss or a parameter stopped being finite.
    #[error("training diverged at epoch {epoch}: {what}")]
    Diverged {
        /// 1-based epoch.
        epoch: usize,
        /// What became non-finite.
        what: String,
    },
}

/// `Result` with perturb's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
