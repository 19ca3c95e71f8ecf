//! The crate's one error type, and the words its messages use for a run's settings.
//!
//! Nothing here knows a command-line flag or a process exit status: a message that points at a
//! setting carries a [`Setting`] (and a suggested [`Fix`]), which the library prints by its plain
//! name and the command line words as the flag (`perturb::cli::exit`), and errors come in
//! [`ErrorClass`]es that the command line maps to exit statuses.

use std::path::PathBuf;

/// A setting of a run that a message can point at. The library calls it by [`Setting::name`]; the
/// command line by its flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Setting {
    /// Epochs to train.
    Epochs,
    /// Learning rate.
    Lr,
    /// The nudge.
    Eps,
    /// Seed of a random network and of SPSA directions.
    Seed,
    /// Gradient estimator.
    Estimator,
    /// What nudges are divided by.
    Step,
    /// SPSA directions per step.
    Samples,
    /// SPSA direction distribution.
    Direction,
    /// Layer widths of a random network.
    Layers,
    /// Activations of a random network.
    Activations,
    /// Naive or reuse.
    Method,
    /// Host or resident loop.
    Loop,
    /// CPU or GPU.
    Device,
    /// float32 or float64.
    Precision,
    /// wgpu backends allowed.
    Backend,
    /// The data file.
    Data,
    /// Checkpoint interval.
    CheckpointEvery,
    /// The checkpoint file.
    Checkpoint,
    /// Continuing past a divergence.
    AllowDivergence,
    /// Benchmark sizes.
    Sizes,
    /// Benchmark time per row.
    MaxSeconds,
    /// Benchmark work cap for naive rows.
    MaxWork,
    /// Benchmark NumPy rows.
    Numpy,
    /// The loss.
    Loss,
    /// The update rule.
    Optimizer,
    /// Samples per step.
    BatchSize,
    /// Validation data.
    ValData,
    /// Share of the data held out for validation.
    ValSplit,
    /// The first samples used.
    Take,
    /// Adapters one step is split over.
    Shard,
    /// Ranks one step is split over.
    Distributed,
}

impl Setting {
    /// The library's word for the setting (`"epochs"`, `"lr"`, …).
    pub fn name(self) -> &'static str {
        match self {
            Setting::Epochs => "epochs",
            Setting::Lr => "lr",
            Setting::Eps => "eps",
            Setting::Seed => "seed",
            Setting::Estimator => "estimator",
            Setting::Step => "step",
            Setting::Samples => "samples",
            Setting::Direction => "direction",
            Setting::Layers => "layers",
            Setting::Activations => "activations",
            Setting::Method => "method",
            Setting::Loop => "loop",
            Setting::Device => "device",
            Setting::Precision => "precision",
            Setting::Backend => "backend",
            Setting::Data => "data",
            Setting::CheckpointEvery => "checkpoint interval",
            Setting::Checkpoint => "checkpoint",
            Setting::AllowDivergence => "allow-divergence",
            Setting::Sizes => "sizes",
            Setting::MaxSeconds => "max-seconds",
            Setting::MaxWork => "max-work",
            Setting::Numpy => "numpy",
            Setting::Loss => "loss",
            Setting::Optimizer => "optimizer",
            Setting::BatchSize => "batch size",
            Setting::ValData => "validation data",
            Setting::ValSplit => "validation split",
            Setting::Take => "take",
            Setting::Shard => "shard",
            Setting::Distributed => "distributed",
        }
    }
}

/// A way out that a message suggests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fix {
    /// Set the setting to this value (its name as the library and the command line spell it).
    Use(Setting, &'static str),
    /// Give the setting.
    Give(Setting),
}

/// Words a [`Setting`]: its plain name in the library, its flag on the command line.
pub type Words<'a> = &'a dyn Fn(Setting) -> String;

impl Fix {
    /// `use method naive` / `use --method naive`.
    pub fn word(self, words: Words<'_>) -> String {
        match self {
            Fix::Use(s, v) => format!("use {} {v}", words(s)),
            Fix::Give(s) => format!("give {}", words(s)),
        }
    }
}

/// Which kind of failure an error is; the command line gives each class its own exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// A setting's value or combination is wrong.
    Config,
    /// A file could not be read, written or parsed.
    File,
    /// No usable GPU, or the model does not fit it (the CPU may work).
    NoGpu,
    /// The GPU failed during the run.
    GpuFault,
    /// Training diverged.
    Diverged,
    /// The run was interrupted.
    Interrupted,
}

/// Everything that can go wrong in perturb. Messages are one line, name the file (and line or field)
/// when there is one, and say what to do where that is not obvious. Each variant belongs to one
/// [`ErrorClass`] ([`Error::class`]).
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
    /// Settings that are inconsistent in a way no single [`Setting`] names.
    #[error("{0}")]
    Config(String),
    /// A setting's value is out of range: `"{setting} {problem}"`.
    #[error("{} {problem}", .setting.name())]
    Invalid {
        /// The setting.
        setting: Setting,
        /// What is wrong with its value (`"must be between 1 and 100, got 0"`).
        problem: String,
    },
    /// Something the chosen settings cannot do, and what would.
    #[error("{}{what}{}", given_note(.given, &|s| s.name().to_string()), fix_note(*.fix, &|s| s.name().to_string()))]
    Unsupported {
        /// The settings (and their values) that cannot go together, in the order given.
        given: Vec<(Setting, String)>,
        /// What cannot be done, and why.
        what: String,
        /// The setting to change, if one would do.
        fix: Option<Fix>,
    },
    /// No usable GPU adapter.
    #[error("no GPU adapter found{found}; install a Vulkan driver (on Debian/Ubuntu: apt-get install mesa-vulkan-drivers libvulkan1)")]
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
    #[error("{what}: {needed} {unit} needed; {adapter} allows {limit}")]
    TooLarge {
        /// What does not fit (`"the inputs"`, `"the widest layer"`).
        what: String,
        /// How much it needs.
        needed: u64,
        /// How much the adapter allows.
        limit: u64,
        /// The unit of both numbers (`"bytes in one storage buffer"`, `"units"`).
        unit: &'static str,
        /// Who sets the limit (the adapter, or the kernels).
        adapter: String,
    },
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
    /// naga could not translate a pipeline variant's shader for a backend's language.
    #[error("shader {variant} for {target}: {problem}")]
    Shader {
        /// The variant ([`crate::gpu::Variant::name`], or `module` for the whole module).
        variant: String,
        /// The target language ([`crate::gpu::Target::name`]).
        target: &'static str,
        /// What naga said.
        problem: String,
    },
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

/// `"estimator spsa with method reuse: "` (or empty).
pub fn given_note(given: &[(Setting, String)], words: Words<'_>) -> String {
    if given.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = given
        .iter()
        .map(|(s, v)| match v.is_empty() {
            true => words(*s),
            false => format!("{} {v}", words(*s)),
        })
        .collect();
    format!("{}: ", parts.join(" with "))
}

/// `"; use method naive"` (or empty).
pub fn fix_note(fix: Option<Fix>, words: Words<'_>) -> String {
    fix.map_or(String::new(), |f| format!("; {}", f.word(words)))
}

fn saved_note(checkpoint: Option<&std::path::Path>) -> String {
    checkpoint.map_or(String::new(), |p| {
        format!("; the run so far is saved in {}", p.display())
    })
}

/// `Result` with perturb's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The error's class.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Config(_) | Error::Invalid { .. } | Error::Unsupported { .. } => {
                ErrorClass::Config
            }
            Error::Io { .. }
            | Error::Model { .. }
            | Error::Data { .. }
            | Error::Checkpoint { .. } => ErrorClass::File,
            Error::NoAdapter { .. }
            | Error::AdapterNotFound { .. }
            | Error::TooLarge { .. }
            | Error::LoopsExceedCap { .. } => ErrorClass::NoGpu,
            Error::Gpu(_) | Error::LoopCap { .. } | Error::Shader { .. } => ErrorClass::GpuFault,
            Error::Diverged { .. } => ErrorClass::Diverged,
            Error::Interrupted { .. } => ErrorClass::Interrupted,
        }
    }

    /// `setting` has a bad value.
    pub fn invalid(setting: Setting, problem: impl Into<String>) -> Error {
        Error::Invalid {
            setting,
            problem: problem.into(),
        }
    }

    /// `what` cannot be done; `fix` would.
    pub fn unsupported(what: impl Into<String>, fix: Option<Fix>) -> Error {
        Error::refused(&[], what, fix)
    }

    /// These settings with these values (`""`: a switch) cannot go together: `what`; `fix` would.
    pub fn refused(given: &[(Setting, &str)], what: impl Into<String>, fix: Option<Fix>) -> Error {
        Error::Unsupported {
            given: given.iter().map(|&(s, v)| (s, v.to_string())).collect(),
            what: what.into(),
            fix,
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
            Error::TooLarge {
                what: "t".into(),
                needed: 2,
                limit: 1,
                unit: "bytes",
                adapter: "a".into(),
            },
            Error::invalid(Setting::Lr, "x"),
            Error::unsupported("u", Some(Fix::Use(Setting::Device, "cpu"))),
            Error::Gpu("g".into()),
            Error::Shader {
                variant: "v".into(),
                target: "spv",
                problem: "p".into(),
            },
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
    fn every_class_has_a_variant() {
        let mut classes: Vec<ErrorClass> = one_of_each().iter().map(Error::class).collect();
        classes.dedup();
        for c in [
            ErrorClass::Config,
            ErrorClass::File,
            ErrorClass::NoGpu,
            ErrorClass::GpuFault,
            ErrorClass::Diverged,
            ErrorClass::Interrupted,
        ] {
            assert!(classes.contains(&c), "{c:?} has no variant");
        }
    }

    #[test]
    fn settings_are_worded_by_the_library_without_flags() {
        let e = Error::invalid(Setting::Epochs, "must be between 1 and 10, got 0");
        assert_eq!(e.to_string(), "epochs must be between 1 and 10, got 0");
        let e = Error::unsupported(
            "SPSA reuses nothing",
            Some(Fix::Use(Setting::Method, "naive")),
        );
        assert_eq!(e.to_string(), "SPSA reuses nothing; use method naive");
        assert!(!one_of_each().iter().any(|e| e.to_string().contains("--")));
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
