//! `perturb train --plot` draws the training and validation loss and, for class labels, the
//! training and validation accuracy in a second panel of the same file.

use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("perturb-train-plot-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn train(dir: &Path, extra: &[&str]) {
    let mut csv = String::new();
    for i in 0..24 {
        let (a, b) = (
            (i * 7 % 11) as f32 / 5.0 - 1.0,
            (i * 5 % 13) as f32 / 6.0 - 1.0,
        );
        csv += &format!("{a},{b},{}\n", usize::from(a > b));
    }
    let data = dir.join("data.csv");
    std::fs::write(&data, csv).unwrap();
    let mut args = vec![
        "train",
        "--device",
        "cpu",
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "4",
        "--quiet",
    ];
    args.extend(extra);
    let o = Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(&args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Cross-entropy with a validation split: one SVG holding both panels and all four series.
#[test]
fn the_plot_draws_train_and_val_loss_and_accuracy_for_cross_entropy() {
    let d = scratch("xent");
    let svg = d.join("curves.svg");
    train(
        &d,
        &[
            "--layers",
            "2,4,2",
            "--activations",
            "tanh,identity",
            "--loss",
            "cross-entropy",
            "--batch-size",
            "6",
            "--val-split",
            "0.25",
            "--plot",
            svg.to_str().unwrap(),
        ],
    );
    let drawn = std::fs::read_to_string(&svg).unwrap();
    for want in [
        "train loss",
        "val loss",
        "train accuracy",
        "val accuracy",
        "Accuracy (%)",
    ] {
        assert!(drawn.contains(want), "missing {want:?} in the plot");
    }
    assert!(drawn.trim_end().ends_with("</svg>"), "the file is cut off");
}

/// PNG too: the file is written and is a PNG.
#[test]
fn the_two_panel_plot_is_written_as_png() {
    let d = scratch("png");
    let png = d.join("curves.png");
    train(
        &d,
        &[
            "--layers",
            "2,4,2",
            "--activations",
            "tanh,identity",
            "--loss",
            "cross-entropy",
            "--val-split",
            "0.25",
            "--plot",
            png.to_str().unwrap(),
        ],
    );
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG"),
        "not a PNG ({} bytes)",
        bytes.len()
    );
}

/// Without validation data or labels the plot is the loss curve alone, no accuracy panel.
#[test]
fn without_validation_the_plot_is_the_loss_curve_alone() {
    let d = scratch("mse");
    let svg = d.join("loss.svg");
    let mut csv = String::new();
    for i in 0..8 {
        csv += &format!(
            "{},{},{}\n",
            i as f32 / 8.0,
            1.0 - i as f32 / 8.0,
            i as f32 / 16.0
        );
    }
    std::fs::write(d.join("data.csv"), csv).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args([
            "train",
            "--device",
            "cpu",
            "--data",
            "data.csv",
            "--epochs",
            "3",
            "--quiet",
            "--plot",
            svg.to_str().unwrap(),
        ])
        .current_dir(&d)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(drawn.contains("Loss"), "no loss chart");
    assert!(
        !drawn.contains("Accuracy") && !drawn.contains("val loss"),
        "an extra panel"
    );
}
