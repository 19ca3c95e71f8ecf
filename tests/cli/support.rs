//! Shared helpers: the binary run in a scratch directory, its output, exit statuses, error lines.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the CLI in a scratch working directory, so that a run stopped early (which writes
/// `perturb.checkpoint.json` into the working directory) never writes into the repository.
pub fn perturb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(args)
        .current_dir(dir("cwd"))
        .output()
        .expect("run perturb")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A scratch directory per test.
pub fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("perturb-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// Exit status of a bad option (README, "Exit status").
pub const EXIT_CONFIG: i32 = 1;
/// Exit status of a file that cannot be read, written or parsed.
pub const EXIT_FILE: i32 = 3;
/// Exit status when no GPU can run the model.
pub const EXIT_NO_GPU: i32 = 4;
/// Exit status of a diverged run.
pub const EXIT_DIVERGED: i32 = 6;

/// Asserts a clean failure with exit code 1 (a bad option); see [`assert_fails_with`].
pub fn assert_fails(args: &[&str], needles: &[&str]) {
    assert_fails_with(EXIT_CONFIG, args, needles)
}

/// Asserts a clean failure: exit code `code`, one line on stderr starting `perturb: error:` and
/// containing every `needle`, no panic.
pub fn assert_fails_with(code: i32, args: &[&str], needles: &[&str]) {
    let o = perturb(args);
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "perturb {args:?} should exit {code}; stderr: {err}"
    );
    assert!(
        !err.contains("panicked"),
        "perturb {args:?} panicked: {err}"
    );
    // Mesa's EGL prints its own XDG_RUNTIME_DIR warning when the variable is unset; not ours.
    // Warnings that precede the error (a vanished nudge) are not part of it.
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| {
            !l.trim().is_empty()
                && !l.contains("XDG_RUNTIME_DIR")
                && !l.starts_with("perturb: warning:")
        })
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "perturb {args:?}: expected one line, got: {err}"
    );
    assert!(lines[0].starts_with("perturb: error: "), "{err}");
    for n in needles {
        assert!(
            lines[0].contains(n),
            "perturb {args:?}: {:?} lacks {n:?}",
            lines[0]
        );
    }
}
