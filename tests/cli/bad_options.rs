//! Bad flags and absurd sizes: refused at once with a one-line error, usage errors exit 2.

use crate::support::*;

#[test]
fn bad_hyperparameters_are_refused() {
    assert_fails(&["train", "--device", "cpu", "--eps", "0"], &["--eps"]);
    assert_fails(&["train", "--device", "cpu", "--eps", "-1e-4"], &["--eps"]);
    assert_fails(
        &["train", "--device", "cpu", "--eps", "1e-45"],
        &["--eps", "vanish"],
    );
    assert_fails(&["train", "--device", "cpu", "--lr", "-0.1"], &["--lr"]);
    assert_fails(&["train", "--device", "cpu", "--lr", "inf"], &["--lr"]);
    assert_fails(
        &["train", "--device", "cpu", "--epochs", "0"],
        &["--epochs"],
    );
    assert_fails(
        &["train", "--device", "cpu", "--epochs", "1000000000000"],
        &["--epochs"],
    );
    assert_fails(
        &["train", "--precision", "f64"],
        &["--precision f64", "--device cpu"],
    );
}

#[test]
fn bad_layer_specs_are_refused() {
    assert_fails(
        &["train", "--device", "cpu", "--layers", "2,x,1"],
        &["--layers", "\"x\""],
    );
    assert_fails(
        &["train", "--device", "cpu", "--layers", "2"],
        &["at least two"],
    );
    assert_fails(
        &["train", "--device", "cpu", "--layers", "2,0,1"],
        &["--layers"],
    );
    assert_fails(
        &[
            "train",
            "--device",
            "cpu",
            "--layers",
            "2,3,1",
            "--activations",
            "sigmoid,swish",
        ],
        &["swish"],
    );
    assert_fails(
        &[
            "train",
            "--device",
            "cpu",
            "--layers",
            "2,3,1",
            "--activations",
            "sigmoid",
        ],
        &["one activation per layer"],
    );
    assert_fails(
        &["train", "--device", "cpu", "--layers", "3,3,1"],
        &["--data"],
    );
    assert_fails(
        &[
            "train",
            "--device",
            "cpu",
            "--layers",
            "100000,100000,100000",
        ],
        &["parameters"],
    );
}

#[test]
fn resident_loop_needs_the_gpu() {
    assert_fails(
        &["train", "--device", "cpu", "--loop", "resident"],
        &["--loop resident", "--device gpu"],
    );
}

#[test]
fn command_line_syntax_errors_exit_2() {
    for args in [
        &["train", "--no-such-flag"][..],
        &["train", "--epochs", "many"],
        &["frobnicate"],
    ] {
        let o = perturb(args);
        assert_eq!(o.status.code(), Some(2), "perturb {args:?}: {}", stderr(&o));
    }
}

#[test]
fn absurd_epochs_eps_and_widths_are_refused_at_once() {
    // Each must fail before any allocation of its size: well within this many seconds.
    const QUICK: std::time::Duration = std::time::Duration::from_secs(10);
    let cases: &[(&[&str], &[&str])] = &[
        (&["--epochs", "1000000000000"], &["--epochs", "100000000"]),
        (&["--eps", "1e-45"], &["--eps", "vanish"]),
        (&["--eps", "1e39"], &["--eps", "overflows float32"]),
        (&["--lr", "1e400"], &["--lr", "finite"]),
        (
            &["--layers", "2,1000000000,1"],
            &["--layers", "more than 16777216 parameters"],
        ),
        (
            &["--layers", "1,70000,1"],
            &["--layers", "the limit is 65536 units per layer"],
        ),
        (
            &["--layers", "2,99999999999999999999999,1"],
            &["--layers", "cannot read"],
        ),
    ];
    for (extra, needles) in cases {
        let mut args = vec!["train", "--device", "cpu"];
        args.extend_from_slice(extra);
        let start = std::time::Instant::now();
        assert_fails(&args, needles);
        assert!(
            start.elapsed() < QUICK,
            "perturb {args:?} took {:?}",
            start.elapsed()
        );
    }
    // A count that does not fit the flag's type is clap's usage error.
    let o = perturb(&["train", "--epochs", "99999999999999999999999"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
