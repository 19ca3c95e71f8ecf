//! What the command line makes of an error: one line that names flags, and an exit status per
//! [`ErrorClass`]. The library's errors carry [`Setting`]s, never flags; this is the one place that
//! words them as flags.
//!
//! | status | class | when |
//! |---|---|---|
//! | 1 | [`ErrorClass::Config`] | an option's value or combination is wrong |
//! | 2 | — | command-line syntax (printed by clap) |
//! | 3 | [`ErrorClass::File`] | a file could not be read, written or parsed |
//! | 4 | [`ErrorClass::NoGpu`] | no usable GPU, or the model does not fit it (`--device cpu` may work) |
//! | 5 | [`ErrorClass::GpuFault`] | the GPU failed during the run (device lost, out of memory, validation, readback, a kernel cut short) |
//! | 6 | [`ErrorClass::Diverged`] | training diverged |
//! | 130 | [`ErrorClass::Interrupted`] | interrupted (SIGINT, Ctrl-C), as shells report a process ended by it |

use crate::error::{fix_note, given_note, Error, ErrorClass, Setting};

/// Exit status of an option error and of anything unclassified.
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

/// Prints `result`'s error as the one `perturb: error:` line and turns it into the process's
/// exit status (the table above; an interrupted run's is 128 + the signal that stopped it).
pub fn report(result: Result<(), Error>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("perturb: error: {}", message(&e));
            std::process::ExitCode::from(match e.class() {
                ErrorClass::Interrupted => super::interrupt::exit_status(),
                _ => exit_code(&e),
            })
        }
    }
}

/// The process exit status of `e` (the table above).
pub fn exit_code(e: &Error) -> u8 {
    match e.class() {
        ErrorClass::Config => EXIT_CONFIG,
        ErrorClass::File => EXIT_FILE,
        ErrorClass::NoGpu => EXIT_NO_GPU,
        ErrorClass::GpuFault => EXIT_GPU_FAULT,
        ErrorClass::Diverged => EXIT_DIVERGED,
        ErrorClass::Interrupted => EXIT_INTERRUPTED,
    }
}

/// The flag that sets `s`.
pub fn flag(s: Setting) -> String {
    let f = match s {
        Setting::Epochs => "--epochs",
        Setting::Lr => "--lr",
        Setting::Eps => "--eps",
        Setting::Seed => "--seed",
        Setting::Estimator => "--estimator",
        Setting::Step => "--step",
        Setting::Samples => "--samples",
        Setting::Direction => "--direction",
        Setting::Layers => "--layers",
        Setting::Activations => "--activations",
        Setting::Method => "--method",
        Setting::Loop => "--loop",
        Setting::Device => "--device",
        Setting::Precision => "--precision",
        Setting::Backend => "--backend / WGPU_BACKEND",
        Setting::Data => "--data",
        Setting::CheckpointEvery => "--checkpoint-every",
        Setting::Checkpoint => "--checkpoint",
        Setting::AllowDivergence => "--allow-divergence",
        Setting::Sizes => "--sizes",
        Setting::MaxSeconds => "--max-seconds",
        Setting::MaxWork => "--max-work",
        Setting::Numpy => "--numpy",
        Setting::Loss => "--loss",
        Setting::Optimizer => "--optimizer",
        Setting::BatchSize => "--batch-size",
        Setting::ValData => "--val-data",
        Setting::ValSplit => "--val-split",
        Setting::Take => "--take",
        Setting::Shard => "--shard",
        Setting::Distributed => "--distributed",
    };
    f.to_string()
}

/// `e` as one line for the terminal, settings worded as flags; a line break inside it (a file
/// name may hold one) is escaped as `\n` so that the message stays one line.
pub fn message(e: &Error) -> String {
    one_line(&worded(e))
}

fn one_line(text: &str) -> String {
    text.replace('\r', "\\r").replace('\n', "\\n")
}

fn worded(e: &Error) -> String {
    match e {
        Error::Invalid { setting, problem } => format!("{} {problem}", flag(*setting)),
        Error::Unsupported { given, what, fix } => {
            format!("{}{what}{}", given_note(given, &flag), fix_note(*fix, &flag))
        }
        Error::NoAdapter { found } => format!(
            "no GPU adapter found{found}; use --device cpu, or install a Vulkan driver (on Debian/Ubuntu: apt-get install mesa-vulkan-drivers libvulkan1)"
        ),
        Error::TooLarge { .. } => format!("{e} (use --device cpu)"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Fix;

    #[test]
    fn classes_have_distinct_codes_and_clap_keeps_its_own() {
        let classes = [
            ErrorClass::Config,
            ErrorClass::File,
            ErrorClass::NoGpu,
            ErrorClass::GpuFault,
            ErrorClass::Diverged,
            ErrorClass::Interrupted,
        ];
        let one = |c: ErrorClass| match c {
            ErrorClass::Config => Error::Config("c".into()),
            ErrorClass::File => Error::Data {
                origin: "d".into(),
                message: "x".into(),
            },
            ErrorClass::NoGpu => Error::NoAdapter { found: "".into() },
            ErrorClass::GpuFault => Error::Gpu("g".into()),
            ErrorClass::Diverged => Error::Diverged {
                epoch: 1,
                what: "w".into(),
            },
            ErrorClass::Interrupted => Error::Interrupted {
                epoch: 1,
                checkpoint: None,
            },
        };
        let mut codes: Vec<u8> = classes.iter().map(|&c| exit_code(&one(c))).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), classes.len());
        assert!(!codes.contains(&EXIT_USAGE) && !codes.contains(&0));
    }

    #[test]
    fn settings_become_flags_on_the_command_line() {
        let e = Error::invalid(Setting::CheckpointEvery, "needs a checkpoint file");
        assert_eq!(message(&e), "--checkpoint-every needs a checkpoint file");
        let e = Error::unsupported(
            "SPSA reuses nothing",
            Some(Fix::Use(Setting::Method, "naive")),
        );
        assert_eq!(message(&e), "SPSA reuses nothing; use --method naive");
        assert!(message(&Error::NoAdapter { found: "".into() }).contains("use --device cpu"));
    }

    #[test]
    fn a_file_name_with_a_line_break_stays_on_one_line() {
        let e = Error::Data {
            origin: "a\nb.csv".into(),
            message: "no samples".into(),
        };
        assert_eq!(message(&e), "a\\nb.csv: no samples");
    }
}
