//! Charts: every plot renders to a PNG of the requested size and to an SVG that carries its text;
//! degenerate data is skipped or refused with a typed error, never a panic.

use perturb::bench::Row;
use perturb::plot::{self, Chart, Format, Series, LOSS_TITLE};
use perturb::Error;
use std::path::{Path, PathBuf};

/// The 8-byte PNG signature.
const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("perturb-plot-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Width and height from the IHDR chunk, after checking the signature and that IHDR comes first.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.len() > 33,
        "{}: {} bytes",
        path.display(),
        bytes.len()
    );
    assert_eq!(bytes[..8], PNG_SIGNATURE, "{}: not a PNG", path.display());
    assert_eq!(
        &bytes[12..16],
        b"IHDR",
        "{}: IHDR is not first",
        path.display()
    );
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

/// The SVG text after checking it is one `<svg …>…</svg>` element.
fn svg_text(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let t = text.trim();
    assert!(
        t.starts_with("<svg"),
        "{}: starts {:?}",
        path.display(),
        &t[..t.len().min(40)]
    );
    assert!(
        t.ends_with("</svg>"),
        "{}: does not end with </svg>",
        path.display()
    );
    text
}

/// Renders `chart` at a non-default size to PNG and SVG in `d`; checks both and returns the SVG.
fn render_both(chart: Chart, d: &Path, stem: &str) -> String {
    const SIZE: (u32, u32) = (640, 420);
    let chart = chart.size(SIZE.0, SIZE.1);
    let png = d.join(format!("{stem}.png"));
    chart.render(&png).unwrap();
    assert_eq!(png_size(&png), SIZE, "{}", png.display());
    let svg = d.join(format!("{stem}.svg"));
    chart.render(&svg).unwrap();
    let text = svg_text(&svg);
    assert!(
        text.contains(&format!("width=\"{}\"", SIZE.0))
            && text.contains(&format!("height=\"{}\"", SIZE.1)),
        "{}: size attributes missing",
        svg.display()
    );
    text
}

/// A loss falling from the book's 0.3345 by a factor e^-8 (about 3e-4) over `n` epochs.
fn book_like_losses(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| 0.3345 * (-8.0 * i as f64 / n as f64).exp())
        .collect()
}

#[test]
fn loss_curve_renders_the_books_figure_as_png_and_svg() {
    let d = dir("loss");
    let svg = render_both(plot::loss_curve(&book_like_losses(100), false), &d, "loss");
    for text in [LOSS_TITLE, "Epochs", "Loss"] {
        assert!(svg.contains(text), "SVG lacks {text:?}");
    }
    assert_eq!(LOSS_TITLE, "Loss over increasing number of epochs");
    let svg = render_both(
        plot::loss_curve(&book_like_losses(5000), true),
        &d,
        "loss-log",
    );
    assert!(svg.contains(LOSS_TITLE));
}

#[test]
fn bench_chart_draws_one_line_per_device_method_and_mode() {
    let row = |params: usize, method: &str, device: &str, mode: &str, seconds: Option<f64>| Row {
        size: format!("p{params}"),
        params,
        samples: 64,
        method: method.into(),
        loss: "mse".into(),
        device: device.into(),
        adapter: if device == "gpu" {
            "llvmpipe".into()
        } else {
            "2 threads".into()
        },
        mode: mode.into(),
        seconds,
        evals_per_second: None,
        first_step_extra: None,
        speedup_vs_cpu_naive: None,
        runs: 5,
        stable: true,
        note: String::new(),
    };
    let mut rows = Vec::new();
    for (p, cpu, gpu) in [(13, 1e-6, 3e-4), (676, 2e-3, 5e-4), (9610, 0.4, 6e-3)] {
        rows.push(row(p, "naive", "cpu", "host", Some(cpu)));
        rows.push(row(p, "naive", "gpu", "host", Some(gpu)));
        rows.push(row(p, "naive", "gpu", "resident", Some(gpu / 2.0)));
    }
    rows.push(row(101_770, "naive", "cpu", "host", None)); // skipped rows are left out
    let chart = plot::bench_chart(&rows);
    assert!(chart.log_x && chart.log_y, "bench chart is log-log");
    let names: Vec<&str> = chart.series.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["cpu naive", "gpu naive host", "gpu naive resident"]);
    assert!(chart.series.iter().all(|s| s.points.len() == 3));
    let svg = render_both(chart, &dir("bench"), "bench");
    for text in [
        "Seconds per training step",
        "Parameters P",
        "gpu naive resident",
    ] {
        assert!(svg.contains(text), "SVG lacks {text:?}");
    }
}

#[test]
fn generic_curves_draw_a_legend_on_log_log_axes() {
    let eps = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2];
    let f32_err: Vec<(f64, f64)> = eps.iter().map(|&e| (e, 1e-7 / e + e)).collect();
    let f64_err: Vec<(f64, f64)> = eps.iter().map(|&e| (e, e)).collect();
    let chart = plot::curves(
        "Gradient error vs eps",
        "eps",
        "max relative error",
        true,
        vec![
            Series {
                name: "float32".into(),
                points: f32_err,
            },
            Series {
                name: "float64".into(),
                points: f64_err,
            },
        ],
    );
    let svg = render_both(chart, &dir("curves"), "check");
    for text in [
        "Gradient error vs eps",
        "float32",
        "float64",
        "max relative error",
    ] {
        assert!(svg.contains(text), "SVG lacks {text:?}");
    }
    let runs = vec![
        ("lr 0.01".to_string(), book_like_losses(50)),
        ("lr 0.1".to_string(), book_like_losses(20)),
    ];
    let svg = render_both(plot::loss_curves(&runs, false), &dir("curves"), "sweep");
    assert!(svg.contains("lr 0.01") && svg.contains("lr 0.1"));
}

#[test]
fn degenerate_points_are_skipped_not_fatal() {
    let d = dir("degenerate");
    // One point.
    render_both(plot::loss_curve(&[0.5], false), &d, "one");
    // Constant losses (an empty range unless padded).
    render_both(plot::loss_curve(&[0.25; 10], true), &d, "flat");
    // NaN, infinities, zero and negatives on log axes: only the positive finite points remain.
    let chart = Chart::new("mixed", "x", "y")
        .log_x(true)
        .log_y(true)
        .series(
            "a",
            vec![
                (0.0, 1.0),
                (1.0, f64::NAN),
                (2.0, -3.0),
                (f64::INFINITY, 1.0),
                (3.0, 0.5),
                (4.0, 0.25),
            ],
        )
        .series("all bad", vec![(-1.0, 1.0)]);
    render_both(chart, &d, "mixed");
}

#[test]
fn nothing_plottable_is_a_config_error() {
    let d = dir("empty");
    let cases = [
        ("no series", Chart::new("t", "x", "y")),
        ("empty losses", plot::loss_curve(&[], false)),
        (
            "all NaN",
            plot::loss_curve(&[f64::NAN, f64::INFINITY], false),
        ),
        ("zero on log y", plot::loss_curve(&[0.0, -1.0], true)),
    ];
    for (what, chart) in cases {
        let path = d.join("x.png");
        match chart.render(&path) {
            Err(Error::Config(m)) => assert!(m.contains("no finite points"), "{what}: {m}"),
            other => panic!("{what}: expected Error::Config, got {other:?}"),
        }
    }
}

#[test]
fn unknown_extensions_and_sizes_are_refused() {
    let chart = plot::loss_curve(&[1.0, 0.5], false);
    for (name, needle) in [
        ("loss.jpg", ".jpg"),
        ("loss.PDF", ".pdf"),
        ("loss", "no file extension"),
    ] {
        match chart.render(Path::new(name)) {
            Err(Error::Config(m)) => assert!(m.contains(needle) && m.contains(name), "{m}"),
            other => panic!("{name}: expected Error::Config, got {other:?}"),
        }
    }
    assert_eq!(
        Format::from_path(Path::new("a/B.SVG")).unwrap(),
        Format::Svg
    );
    match chart.clone().size(10, 10).render(Path::new("tiny.png")) {
        Err(Error::Config(m)) => assert!(m.contains("10x10"), "{m}"),
        other => panic!("expected Error::Config, got {other:?}"),
    }
}

#[test]
fn unwritable_path_is_an_io_error_naming_the_file() {
    for name in ["/nonexistent-dir/loss.png", "/nonexistent-dir/loss.svg"] {
        match plot::loss_curve(&[1.0, 0.5], false).render(Path::new(name)) {
            Err(e @ Error::Io { .. }) => assert!(e.to_string().contains(name), "{e}"),
            other => panic!("{name}: expected Error::Io, got {other:?}"),
        }
    }
}
