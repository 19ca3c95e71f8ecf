//! Ctrl-C (SIGINT): the first one asks the run to stop after the current epoch, the second ends the
//! process at once with status 130.
//!
//! The trainer polls [`requested`] between epochs; it finishes the epoch, saves what it has and
//! returns [`crate::Error::Interrupted`]. The handler runs on a thread of its own (the `ctrlc`
//! crate), so it may print and exit safely.

use crate::error::{Error, Result, EXIT_INTERRUPTED};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static REQUESTED: AtomicBool = AtomicBool::new(false);
static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// Installs the SIGINT handler (on Windows, Ctrl-C and Ctrl-Break). Idempotent: later calls
/// return the first call's outcome. On the first signal the handler sets the flag [`requested`]
/// reads and prints one line to stderr saying the run will stop after this epoch; on the second it
/// exits with status 130 without saving.
pub fn install() -> Result<()> {
    INSTALLED
        .get_or_init(|| ctrlc::set_handler(on_signal).map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| Error::Config(format!("cannot install the Ctrl-C handler: {e}")))
}

/// True once a stop was asked for (by a signal or [`request`]) and not [`clear`]ed since.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// The flag itself, for [`crate::train::Control::stop`].
pub fn flag() -> &'static AtomicBool {
    &REQUESTED
}

/// Asks the run to stop as a first Ctrl-C would, without the message (for tests and for callers
/// that stop a run for reasons of their own). Returns whether a stop was already requested.
pub fn request() -> bool {
    REQUESTED.swap(true, Ordering::SeqCst)
}

/// Forgets a request, so that a process that runs several trainings can interrupt each.
pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
}

fn on_signal() {
    if request() {
        std::process::exit(i32::from(EXIT_INTERRUPTED));
    }
    eprintln!(
        "perturb: interrupt: stopping after this epoch and saving (press Ctrl-C again to quit now)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_sets_the_flag_until_cleared_and_reports_a_second_request() {
        // The only unit test touching the flag; the signal path is tested in tests/interrupt.rs,
        // a process of its own.
        clear();
        assert!(!requested());
        assert!(!request(), "first request: nothing was pending");
        assert!(requested());
        assert!(
            request(),
            "second request: one was pending (the handler exits here)"
        );
        clear();
        assert!(!requested());
    }

    #[test]
    fn install_is_idempotent() {
        install().unwrap();
        install().unwrap();
    }
}
