//! `--plot` on train and bench: PNG and SVG files, unknown formats refused before any work.

use std::path::Path;

use crate::support::*;

/// Width and height of a PNG, after checking its signature and that IHDR comes first.
fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    assert!(
        b.len() > 24 && b[..8] == *b"\x89PNG\r\n\x1a\n" && &b[12..16] == b"IHDR",
        "{} is not a PNG",
        path.display()
    );
    let be = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn train_plot_writes_the_loss_curve_as_png_and_svg() {
    let d = dir("plot");
    let png = d.join("x.png");
    let o = perturb(&["train", "--device", "cpu", "--plot", png.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("wrote the loss plot to"),
        "{}",
        stdout(&o)
    );
    assert_eq!(png_size(&png), perturb::plot::DEFAULT_SIZE);
    let svg = d.join("x.svg");
    let o = perturb(&[
        "train",
        "--device",
        "cpu",
        "--epochs",
        "300",
        "--plot",
        svg.to_str().unwrap(),
        "--log-y",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.contains("Loss over increasing number of epochs")
            && text.trim_end().ends_with("</svg>")
    );
}

#[test]
fn plot_to_an_unknown_format_fails_before_training() {
    let o = perturb(&["train", "--device", "cpu", "--plot", "loss.jpg"]);
    assert!(
        !stdout(&o).contains("epoch"),
        "trained first: {}",
        stdout(&o)
    );
    assert_fails(
        &["train", "--device", "cpu", "--plot", "loss.jpg"],
        &["loss.jpg", ".jpg"],
    );
    assert_fails(
        &["bench", "--devices", "cpu", "--plot", "b.pdf"],
        &["b.pdf", ".pdf"],
    );
}

#[test]
fn bench_plot_draws_the_chart() {
    let d = dir("bench-plot");
    let svg = d.join("b.svg");
    let o = perturb(&[
        "bench",
        "--sizes",
        "book,small",
        "--devices",
        "cpu",
        "--max-seconds",
        "0.05",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&svg).unwrap();
    for needle in ["Seconds per training step", "cpu naive", "cpu reuse"] {
        assert!(text.contains(needle), "chart lacks {needle:?}");
    }
}
