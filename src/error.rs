//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in perturb. Messages are one line, name the file (and line or field)
/// when there is one, and say what to do where that is not obvious.
///
/// Each variant belongs to one class with its own process exit status ([`Error::exit_code`]):
///
/// | status | class | variants |
/// |---|---|---|
/// | 1 | an option's value or combination is wrong | [`Error::Config`] |
/// | 2 | command-line syntax (printed by clap, not an `Error`) | — |
/// | 3 | a file could not be read, written or parsed | [`Error::Io`], [`Error::Model`], [`Error::Data`], [`Error::Checkpoint`] |
/// | 4 | no usable GPU, or the model does not fit it (`--device cpu` may work) | [`Error::NoAdapter`], [`Error::AdapterNotFound`], [`Error::TooLarge`], [`Error::LoopsExceedCap`] |
/// | 5 | the GPU failed during the run (device lost, out of memory, validation, readback, a kernel cut short) | [`Error::Gpu`], [`Error::LoopCap`] |
/// | 6 | training diverged | [`Error::Diverged`] |
/// | 130 | interrupted (SIGINT, Ctrl-C), as shells report a process ended by it | [`Error::Interrupted`] |
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
    /// A kernel's loops would pass the adapter's silent loop cap (llvmpipe); refused before any
    /// dispatch.
    #[error("the {kernel} kernel would run {passes} loop passes per invocation; {adapter} silently stops every loop after {cap} (the CPU evaluator and hardware GPUs have no such cap)")]
    LoopsExceedCap {
        /// The kernel ([`crate::gpu::KernelId::name`]).
        kernel: &'static str,
        /// Loop passes one invocation would run, the tripwire included.
        passes: u64,
        /// The adapter's cap.
        cap: u64,
        /// The adapter.
        adapter: String,
    },
    /// A kernel was cut short by the adapter's loop cap while running (its tripwire fired): the
    /// step's results were discarded. A planning bug, never a property of the input.
    /// The evaluator keeps failing until [`crate::gpu::GpuEvaluator::set_loop_burn`] clears the
    /// tripwire: every later step would be no less wrong.
    #[error("the {kernel} kernel was cut short by {adapter}'s loop cap ({cap} passes per invocation) and its results were discarded; this is a bug in perturb's planner, please report it{}", saved_note(.checkpoint.as_deref()))]
    LoopCap {
        /// The kernel ([`crate::gpu::KernelId::name`]).
        kernel: &'static str,
        /// The adapter's cap.
        cap: u64,
        /// The adapter.
        adapter: String,
        /// Where the run up to the last good epoch was saved, if it was.
        checkpoint: Option<PathBuf>,
    },
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
    /// A checkpoint file is malformed, from another version, or inconsistent.
    #[error("{origin}: {message}")]
    Checkpoint {
        /// File name.
        origin: String,
        /// What is wrong, naming the field.
        message: String,
    },
    /// The run was stopped by SIGINT (Ctrl-C) after finishing an epoch.
    #[error("interrupted after epoch {epoch}{}", saved_note(.checkpoint.as_deref()))]
    Interrupted {
        /// The last completed epoch (1-based; 0 when none completed).
        epoch: usize,
        /// Where the run so far was saved, if it was.
        checkpoint: Option<PathBuf>,
    },
}

fn saved_note(checkpoint: Option<&std::path::Path>) -> String {
    checkpoint.map_or(String::new(), |p| {
        format!("; the run so far is saved in {}", p.display())
    })
}

/// Exit status of an option error ([`Error::Config`]) and of anything unclassified.
pub const EXIT_CONFIG: u8 = 1;
/// Exit status of a command-line syntax error (clap's own, listed here to keep the codes distinct).
pub const EXIT_USAGE: u8 = 2;
/// Exit status of a file that could not be read, written or parsed.
pub const EXIT_FILE: u8 = 3;
/// Exit status when no GPU can run the model (none found, none matching, or too small for it).
pub const EXIT_NO_GPU: u8 = 4;
/// Exit status of a GPU failure during the run.
pub const EXIT_GPU_FAULT: u8 = 5;
/// Exit status of a diverged run.
pub const EXIT_DIVERGED: u8 = 6;
/// Exit status of a run stopped by SIGINT (128 + 2, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

/// `Result` with perturb's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The process exit status for this error's class (the table on [`Error`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => EXIT_CONFIG,
            Error::Io { .. }
            | Error::Model { .. }
            | Error::Data { .. }
            | Error::Checkpoint { .. } => EXIT_FILE,
            Error::NoAdapter { .. }
            | Error::AdapterNotFound { .. }
            | Error::TooLarge(_)
            | Error::LoopsExceedCap { .. } => EXIT_NO_GPU,
            Error::Gpu(_) | Error::LoopCap { .. } => EXIT_GPU_FAULT,
            Error::Diverged { .. } => EXIT_DIVERGED,
            Error::Interrupted { .. } => EXIT_INTERRUPTED,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_of_each() -> Vec<Error> {
        vec![
            Error::Config("c".into()),
            Error::io("f", std::io::Error::other("x")),
            Error::Model {
                origin: "m".into(),
                message: "x".into(),
            },
            Error::Data {
                origin: "d".into(),
                message: "x".into(),
            },
            Error::Checkpoint {
                origin: "c".into(),
                message: "x".into(),
            },
            Error::NoAdapter { found: "".into() },
            Error::AdapterNotFound {
                wanted: "w".into(),
                available: "a".into(),
            },
            Error::TooLarge("t".into()),
            Error::Gpu("g".into()),
            Error::LoopsExceedCap {
                kernel: "k",
                passes: 2,
                cap: 1,
                adapter: "a".into(),
            },
            Error::LoopCap {
                kernel: "k",
                cap: 1,
                adapter: "a".into(),
                checkpoint: None,
            },
            Error::Diverged {
                epoch: 1,
                what: "w".into(),
            },
            Error::Interrupted {
                epoch: 1,
                checkpoint: None,
            },
        ]
    }

    #[test]
    fn classes_have_distinct_codes_and_clap_keeps_its_own() {
        let mut codes: Vec<u8> = one_of_each().iter().map(Error::exit_code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(
            codes,
            [
                EXIT_CONFIG,
                EXIT_FILE,
                EXIT_NO_GPU,
                EXIT_GPU_FAULT,
                EXIT_DIVERGED,
                EXIT_INTERRUPTED
            ]
        );
        assert!(!codes.contains(&EXIT_USAGE) && !codes.contains(&0));
    }

    #[test]
    fn interrupted_says_where_the_run_was_saved() {
        let e = Error::Interrupted {
            epoch: 7,
            checkpoint: Some("/tmp/run.ckpt".into()),
        };
        assert_eq!(
            e.to_string(),
            "interrupted after epoch 7; the run so far is saved in /tmp/run.ckpt"
        );
        let e = Error::Interrupted {
            epoch: 0,
            checkpoint: None,
        };
        assert_eq!(e.to_string(), "interrupted after epoch 0");
    }
}
