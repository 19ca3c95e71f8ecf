//! SIGINT without a terminal: a child copy of this test binary installs the handler and signals
//! itself (through `sh`'s `kill`); the first signal sets the flag, the second ends it with 130.
#![cfg(unix)]

use std::process::Command;
use std::time::{Duration, Instant};

/// Environment variable that turns this test binary into the child.
const CHILD_ENV: &str = "PERTURB_INTERRUPT_CHILD";
/// How long the child waits for a signal to arrive before giving up.
const DELIVERY: Duration = Duration::from_secs(10);

fn sigint_self() {
    let status = Command::new("sh")
        .args(["-c", &format!("kill -INT {}", std::process::id())])
        .status()
        .expect("run sh");
    assert!(status.success());
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DELIVERY, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Not a test: the child of [`two_sigints_set_the_flag_then_exit_130`] (run with `--ignored`).
#[test]
#[ignore = "the child process of two_sigints_set_the_flag_then_exit_130"]
fn sigint_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    perturb::cli::interrupt::install().unwrap();
    perturb::cli::interrupt::install().unwrap();
    assert!(!perturb::cli::interrupt::requested());
    sigint_self();
    wait_for(
        "the first SIGINT setting the flag",
        perturb::cli::interrupt::requested,
    );
    println!("flag set, process alive");
    sigint_self();
    // The handler exits the process; reaching the end of this wait is a failure.
    std::thread::sleep(DELIVERY);
    println!("still alive after the second SIGINT");
}

#[test]
fn two_sigints_set_the_flag_then_exit_130() {
    let o = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sigint_child", "--ignored", "--nocapture"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "stdout: {out}\nstderr: {err}");
    assert!(out.contains("flag set, process alive"), "stdout: {out}");
    assert!(!out.contains("still alive"), "stdout: {out}");
    assert!(
        err.contains("perturb: interrupt: stopping after this step"),
        "stderr: {err}"
    );
}
