//! The command line: the book's numbers, reports and saved models, and a one-line error with a
//! non-zero exit (never a panic) for every kind of bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the CLI in a scratch working directory, so that a run stopped early (which writes
/// `perturb.checkpoint.json` into the working directory) never writes into the repository.
fn perturb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(args)
        .current_dir(dir("cwd"))
        .output()
        .expect("run perturb")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A scratch directory per test.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("perturb-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// Exit status of a bad option (README, "Exit status").
const EXIT_CONFIG: i32 = 1;
/// Exit status of a file that cannot be read, written or parsed.
const EXIT_FILE: i32 = 3;
/// Exit status when no GPU can run the model.
const EXIT_NO_GPU: i32 = 4;
/// Exit status of a diverged run.
const EXIT_DIVERGED: i32 = 6;

/// Asserts a clean failure with exit code 1 (a bad option); see [`assert_fails_with`].
fn assert_fails(args: &[&str], needles: &[&str]) {
    assert_fails_with(EXIT_CONFIG, args, needles)
}

/// Asserts a clean failure: exit code `code`, one line on stderr starting `perturb: error:` and
/// containing every `needle`, no panic.
fn assert_fails_with(code: i32, args: &[&str], needles: &[&str]) {
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

const BOOK_MODEL: &str = r#"{"layers": [
 {"weights": [[-0.0053, -0.5820, -0.2723], [0.3793, -0.5204, 0.1896]], "biases": [-0.0140, 0.5607, -0.0628], "activation": "sigmoid"},
 {"weights": [[0.1528], [-0.1745], [-0.1135]], "biases": [-0.5516], "activation": "identity"}]}"#;

#[test]
fn cpu_f64_prints_the_notebook_numbers() {
    let o = perturb(&["train", "--device", "cpu", "--precision", "f64"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("epoch      1  loss 0.33455009"), "{out}");
    assert!(out.contains("[-0.0174781]"), "{out}");
    assert!(out.contains("W1 (2x3)") && out.contains("b2 ="), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("epoch ")).count(), 100);
}

#[test]
fn report_and_saved_model_round_trip() {
    let d = dir("report");
    let report = d.join("r.json").display().to_string();
    let saved = d.join("m.json").display().to_string();
    let o = perturb(&[
        "train", "--device", "cpu", "--epochs", "7", "--report", &report, "--save", &saved,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["losses"].as_array().unwrap().len(), 7);
    assert_eq!(r["device"]["kind"], "cpu");
    assert!(r["device"]["adapter"].is_string() && r["device"]["backend"].is_string());
    assert!(r["seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(r["predictions"].as_array().unwrap().len(), 1);
    assert_eq!(r["model"]["layers"][0]["activation"], "sigmoid");
    // The saved model trains on from where the run stopped.
    let o = perturb(&[
        "train", "--device", "cpu", "--model", &saved, "--epochs", "1", "--report", &report,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!(r2["losses"][0].as_f64().unwrap() < r["losses"][6].as_f64().unwrap());
}

#[test]
fn model_and_csv_files_train() {
    let d = dir("files");
    let model = write(&d, "m.json", BOOK_MODEL);
    let data = write(&d, "d.csv", "x1,x2,y\n1,1,0\n0.5,-1,1\n");
    let o = perturb(&[
        "train", "--device", "cpu", "--model", &model, "--data", &data, "--epochs", "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("2 samples"), "{}", stdout(&o));
    let o = perturb(&[
        "train",
        "--device",
        "cpu",
        "--layers",
        "2,4,4,1",
        "--activations",
        "tanh,relu,identity",
        "--seed",
        "3",
        "--epochs",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("2-4-4-1 (tanh, relu, identity)"));
}

#[test]
fn missing_and_unreadable_files_are_named() {
    assert_fails_with(
        EXIT_FILE,
        &["train", "--model", "/nonexistent/m.json"],
        &["/nonexistent/m.json"],
    );
    assert_fails_with(
        EXIT_FILE,
        &["train", "--device", "cpu", "--data", "/nonexistent/d.csv"],
        &["/nonexistent/d.csv"],
    );
    let d = dir("unreadable");
    assert_fails_with(
        EXIT_FILE,
        &["train", "--model", d.to_str().unwrap()],
        &[d.to_str().unwrap()],
    );
}

#[test]
fn malformed_models_are_refused_with_the_field() {
    let d = dir("models");
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "bad.json",
            "{\"layers\": [",
            &["bad.json", "invalid model JSON"],
        ),
        ("empty.json", "{\"layers\": []}", &["empty.json", "empty"]),
        (
            "row.json",
            r#"{"layers": [{"weights": [[1, 2], [3]], "biases": [0, 0], "activation": "sigmoid"}]}"#,
            &["row.json", "layers[0].weights[1]"],
        ),
        (
            "chain.json",
            r#"{"layers": [{"weights": [[1, 2]], "biases": [0, 0], "activation": "sigmoid"},
                           {"weights": [[1], [2], [3]], "biases": [0], "activation": "identity"}]}"#,
            &["chain.json", "layers[1].weights has 3 rows"],
        ),
        (
            "act.json",
            r#"{"layers": [{"weights": [[1]], "biases": [0], "activation": "softmax"}]}"#,
            &["act.json", "softmax"],
        ),
        (
            "inf.json",
            r#"{"layers": [{"weights": [[1e39]], "biases": [0], "activation": "identity"}]}"#,
            &["inf.json"],
        ),
        (
            "nobias.json",
            r#"{"layers": [{"weights": [[1]], "biases": [], "activation": "identity"}]}"#,
            &["nobias.json", "biases is empty"],
        ),
    ];
    for (name, text, needles) in cases {
        let path = write(&d, name, text);
        assert_fails_with(
            EXIT_FILE,
            &["train", "--device", "cpu", "--model", &path],
            needles,
        );
    }
}

#[test]
fn malformed_data_is_refused_with_file_and_line() {
    let d = dir("data");
    let cases: &[(&str, &str, &[&str])] = &[
        ("ragged.csv", "1,1,0\n1,1\n", &["ragged.csv:2", "2 columns"]),
        ("text.csv", "1,1,0\n1,abc,0\n", &["text.csv:2", "\"abc\""]),
        ("empty.csv", "", &["empty.csv", "no samples"]),
        ("header.csv", "a,b,y\n", &["header.csv", "no samples"]),
        ("nan.csv", "1,NaN,0\n", &["nan.csv:1", "finite"]),
        ("inf.csv", "1,1,inf\n", &["inf.csv:1", "finite"]),
        (
            "wide.csv",
            "1,1,0,5\n",
            &["wide.csv:1", "4 columns, expected 3"],
        ),
    ];
    for (name, text, needles) in cases {
        let path = write(&d, name, text);
        assert_fails_with(
            EXIT_FILE,
            &["train", "--device", "cpu", "--data", &path],
            needles,
        );
    }
}

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
fn no_adapter_says_what_to_do() {
    // No Metal on Linux (and no Vulkan on macOS): an empty backend set sees no adapter.
    let backend = if cfg!(target_os = "macos") {
        "vulkan"
    } else {
        "metal"
    };
    let o = Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(["train"])
        .env("WGPU_BACKEND", backend)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(EXIT_NO_GPU));
    let err = stderr(&o);
    assert!(
        err.contains("no GPU adapter")
            && err.contains("--device cpu")
            && err.contains("mesa-vulkan-drivers"),
        "{err}"
    );
}

#[test]
fn unknown_adapter_name_lists_what_exists() {
    assert_fails_with(
        EXIT_NO_GPU,
        &["train", "--adapter", "no-such-gpu-xyz"],
        &["no-such-gpu-xyz", "available"],
    );
}

#[test]
fn reuse_method_on_cpu_prints_the_book_curve() {
    let o = perturb(&["train", "--device", "cpu", "--method", "reuse"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("reuse method") && out.contains("epoch      1  loss 0.3345"),
        "{out}"
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
fn bench_prints_a_table_and_json() {
    let d = dir("bench");
    let json = d.join("b.json").display().to_string();
    let o = perturb(&[
        "bench",
        "--sizes",
        "book,small",
        "--devices",
        "cpu",
        "--max-seconds",
        "0.2",
        "--json",
        &json,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("s/step") && out.contains("book") && out.contains("small"),
        "{out}"
    );
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4, "2 sizes x 2 methods");
    for r in rows {
        assert!(r["seconds"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["evals_per_second"].as_f64().unwrap() > 0.0, "{r}");
    }
    let naive = rows
        .iter()
        .find(|r| r["method"] == "naive" && r["size"] == "book")
        .unwrap();
    assert_eq!(naive["speedup_vs_cpu_naive"].as_f64(), Some(1.0));
}

#[test]
fn bench_rejects_unknown_names() {
    assert_fails(&["bench", "--sizes", "huge"], &["huge"]);
    assert_fails(&["bench", "--methods", "magic"], &["magic"]);
    assert_fails(&["bench", "--devices", "tpu"], &["tpu"]);
    assert_fails(&["bench", "--max-seconds", "0"], &["--max-seconds"]);
}

mod common;

#[test]
fn gpu_cli_trains_the_book_in_both_loops_and_methods() {
    if common::gpu().is_none() {
        return;
    }
    let mut last = Vec::new();
    for (method, mode) in [
        ("naive", "host"),
        ("naive", "resident"),
        ("reuse", "host"),
        ("reuse", "resident"),
    ] {
        let o = perturb(&["train", "--method", method, "--loop", mode]);
        assert!(o.status.success(), "{method} {mode}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(
            out.contains("device: gpu") && out.contains("epoch      1  loss 0.3345"),
            "{out}"
        );
        let line = out
            .lines()
            .find(|l| l.starts_with("epoch    100"))
            .unwrap()
            .to_string();
        last.push((method, line));
    }
    // Host and resident loops print the same last loss.
    assert_eq!(last[0].1, last[1].1);
    assert_eq!(last[2].1, last[3].1);
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

#[test]
fn a_huge_learning_rate_diverges_or_finishes_never_hangs() {
    // float32: the loss overflows at epoch 2, a named divergence.
    assert_fails_with(
        EXIT_DIVERGED,
        &["train", "--device", "cpu", "--lr", "1e30"],
        &["training diverged at epoch 2", "the loss is inf"],
    );
    // float64: the loss stays finite (about 3e60) and the parameters, now near 1e30, no longer
    // feel a nudge of 1e-4 in float32, so training stalls and ends normally after 100 epochs.
    let o = perturb(&[
        "train",
        "--device",
        "cpu",
        "--precision",
        "f64",
        "--lr",
        "1e30",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("epoch    100  loss 3379274963181663"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn data_files_over_the_size_cap_are_refused_without_reading() {
    const MAX_DATA_BYTES: u64 = 1 << 30;
    let d = dir("hugedata");
    let path = d.join("huge.csv");
    // Sparse: no disk space used, and never read.
    std::fs::File::create(&path)
        .unwrap()
        .set_len(MAX_DATA_BYTES + 1)
        .unwrap();
    let p = path.display().to_string();
    assert_fails_with(
        EXIT_FILE,
        &["train", "--device", "cpu", "--data", &p],
        &[&p, "1073741825 bytes; the limit is 1073741824"],
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn check_reports_every_estimator_and_the_eps_sweep() {
    let d = dir("check");
    let json = d.join("check.json");
    let svg = d.join("check.svg");
    let o = perturb(&[
        "check",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(drawn.contains("Gradient error against eps") && drawn.contains("central/exact"));
    let out = stdout(&o);
    for want in [
        "loss 0.33455009",
        "forward     nominal",
        "central     exact",
        "richardson  exact",
        "spsa        nominal",
        "relative error against backprop over eps",
        "1e-7",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = report["estimators"].as_array().unwrap();
    let err = |est: &str, step: &str| {
        rows.iter()
            .find(|r| r["estimator"] == est && r["step"] == step)
            .unwrap()["overall"]["max_error"]
            .as_f64()
            .unwrap()
    };
    // The issue's measurement on the book's network, float64 loss, eps 1e-4: nominal central is no
    // better than forward (~2e-4 vs ~1e-4); exact central is ~3e-11.
    assert!(err("central", "nominal") > err("forward", "nominal"));
    assert!(
        err("central", "exact") < 1e-9,
        "{}",
        err("central", "exact")
    );
    assert_eq!(report["backprop"].as_array().unwrap().len(), 13);
    assert_eq!(report["sweep"].as_array().unwrap().len(), 6 * 7);
}

#[test]
fn sweep_trains_the_books_learning_rates_side_by_side_on_cpu() {
    let d = dir("sweep");
    let json = d.join("sweep.json");
    let o = perturb(&[
        "sweep",
        "--device",
        "cpu",
        "--lr",
        "0.01,0.1,1e30",
        "--epochs",
        "20",
        "--report",
        json.to_str().unwrap(),
        "--plot",
        d.join("sweep.svg").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let drawn = std::fs::read_to_string(d.join("sweep.svg")).unwrap();
    assert!(drawn.contains("Loss over increasing number of epochs") && drawn.contains("lr 0.1 "));
    let out = stdout(&o);
    assert!(out.contains("3 runs"), "{out}");
    assert!(out.contains("diverged: epoch"), "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[0]["outcome"], "finished");
    assert_eq!(runs[0]["losses"].as_array().unwrap().len(), 20);
    assert_eq!(runs[2]["outcome"], "diverged");
    // The sweep's first run equals `perturb train` with the same settings.
    let o = perturb(&["train", "--device", "cpu", "--epochs", "20"]);
    let last = stdout(&o)
        .lines()
        .find(|l| l.starts_with("epoch     20"))
        .unwrap()
        .to_string();
    let want = format!("{:.8}", runs[0]["final_loss"].as_f64().unwrap());
    assert!(last.ends_with(&want), "{last} vs {want}");
}

#[test]
fn estimator_options_train_and_bad_combinations_are_refused() {
    for args in [
        &["--estimator", "central", "--step", "exact"][..],
        &["--estimator", "richardson", "--method", "reuse"],
        &[
            "--estimator",
            "spsa",
            "--samples",
            "4",
            "--direction",
            "gaussian",
        ],
    ] {
        let mut all = vec!["train", "--device", "cpu", "--epochs", "3"];
        all.extend_from_slice(args);
        let o = perturb(&all);
        assert!(o.status.success(), "{all:?}: {}", stderr(&o));
        assert!(stdout(&o).contains("estimator:"), "{}", stdout(&o));
    }
    assert_fails(
        &[
            "train",
            "--device",
            "cpu",
            "--estimator",
            "spsa",
            "--samples",
            "0",
        ],
        &["--samples"],
    );
    assert_fails(
        &[
            "train",
            "--device",
            "cpu",
            "--estimator",
            "spsa",
            "--step",
            "exact",
        ],
        &["--step exact"],
    );
    assert_fails(
        &[
            "train",
            "--device",
            "cpu",
            "--estimator",
            "spsa",
            "--method",
            "reuse",
        ],
        &["--method naive"],
    );
    assert_fails(
        &["sweep", "--device", "cpu", "--lr", "0.1,x"],
        &["--lr", "\"x\""],
    );
    assert_fails(&["sweep", "--device", "cpu", "--lr", "0.1,-1"], &["--lr"]);
    assert_fails(&["check", "--device", "gpu"], &["--precision f32"]);
}

#[test]
fn a_vanished_nudge_is_reported_on_stderr() {
    let d = dir("vanish");
    let model = d.join("big.json");
    let o = perturb(&[
        "train",
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--save",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Put the book's lr = 1 weight into the saved model.
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&model).unwrap()).unwrap();
    m["layers"][1]["weights"][0][0] = serde_json::json!(12755.0);
    std::fs::write(&model, m.to_string()).unwrap();
    let o = perturb(&[
        "train",
        "--device",
        "cpu",
        "--epochs",
        "2",
        "--step",
        "exact",
        "--model",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("vanished") && err.contains("12755"),
        "no warning: {err}"
    );
}

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

#[test]
fn quiet_prints_one_summary_line() {
    let o = perturb(&["train", "--device", "cpu", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("trained 100 epochs in ") && out.contains("loss 0.33455008 -> 0.000327"),
        "{out}"
    );
}

#[test]
fn json_prints_only_the_report() {
    let o = perturb(&["train", "--device", "cpu", "--epochs", "4", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", stdout(&o)));
    assert_eq!(r["losses"].as_array().unwrap().len(), 4);
    assert_eq!(r["device"]["kind"], "cpu");
    assert_eq!(r["model"]["layers"][1]["activation"], "identity");
}

#[test]
fn bad_backend_names_are_refused() {
    assert_fails(
        &["train", "--backend", "vulkn"],
        &["\"vulkn\"", "vulkan, gl, metal or dx12"],
    );
    assert_fails(&["devices", "--backend", "foo"], &["\"foo\""]);
    let o = Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(["train"])
        .env("WGPU_BACKEND", "cuda")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("\"cuda\"") && stderr(&o).contains("WGPU_BACKEND"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_backend_without_adapters_is_named_in_the_error() {
    let backend = if cfg!(target_os = "macos") {
        "vulkan"
    } else {
        "metal"
    };
    assert_fails_with(
        EXIT_NO_GPU,
        &["train", "--backend", backend],
        &["no GPU adapter", backend, "--device cpu"],
    );
    // --backend overrides WGPU_BACKEND.
    let o = Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(["train", "--backend", backend])
        .env("WGPU_BACKEND", "vulkan,gl")
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains(&format!("on backend {backend}")),
        "{}",
        stderr(&o)
    );
}

#[test]
fn devices_lists_the_limits_that_matter() {
    if common::gpu().is_none() {
        return;
    }
    let o = perturb(&["devices"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let header = out.lines().next().unwrap();
    for col in ["storage binding", "workgroups/dim", "invocations/wg"] {
        assert!(header.contains(col), "{header}");
    }
    // Aligned: every adapter row starts its backend column where the header does.
    let at = header.find("backend").unwrap();
    for row in out.lines().skip(1).take_while(|l| !l.is_empty()) {
        assert!(
            row[at..].starts_with(|c: char| c.is_ascii_lowercase())
                && row.as_bytes()[at - 1] == b' ',
            "misaligned: {row:?}"
        );
    }
    let o = perturb(&["devices", "--adapter", "no-such-gpu-xyz"]);
    assert!(
        stdout(&o).contains("none selected: no GPU adapter matches"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn bad_numpy_files_fail_with_one_line() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let object = fixtures.join("object.npy").display().to_string();
    assert_fails_with(
        EXIT_FILE,
        &["train", "--device", "cpu", "--data", &object],
        &["object.npy", "object arrays"],
    );
    assert_fails_with(
        EXIT_FILE,
        &["train", "--device", "cpu", "--model", &object],
        &["object.npy", ".npz"],
    );
    let d = dir("bad-npz");
    let notzip = write(&d, "m.npz", "not a zip");
    assert_fails_with(
        EXIT_FILE,
        &["train", "--device", "cpu", "--model", &notzip],
        &["m.npz", "not a readable .npz"],
    );
}

/// Losses and model of a JSON report, for bitwise comparisons (floats round-trip exactly).
fn report_run(path: &Path) -> (serde_json::Value, serde_json::Value) {
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    (r["losses"].clone(), r["model"].clone())
}

/// Trains `epochs` in one go and as `first` epochs plus a resume, on `device`; both must agree
/// bit for bit (losses and parameters).
fn assert_resume_equals_one_run(device: &str, extra: &[&str], first: usize, epochs: usize) {
    let d = dir(&format!("resume-{device}-{}", extra.join("")));
    let ck = d.join("run.ckpt.json");
    let (whole, resumed) = (d.join("whole.json"), d.join("resumed.json"));
    let run = |args: &[&str]| {
        let mut all = vec!["train", "--device", device];
        all.extend_from_slice(extra);
        all.extend_from_slice(args);
        let o = perturb(&all);
        assert!(o.status.success(), "{all:?}: {}", stderr(&o));
    };
    let (first, epochs) = (first.to_string(), epochs.to_string());
    run(&["--epochs", &epochs, "--report", whole.to_str().unwrap()]);
    run(&["--epochs", &first, "--checkpoint", ck.to_str().unwrap()]);
    let o = perturb(&[
        "train",
        "--device",
        device,
        "--resume",
        ck.to_str().unwrap(),
        "--epochs",
        &epochs,
        "--report",
        resumed.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "resume: {}", stderr(&o));
    assert!(stdout(&o).contains(&format!("resuming after epoch {first}")));
    assert_eq!(
        report_run(&resumed),
        report_run(&whole),
        "{device} {extra:?}"
    );
}

#[test]
fn a_resumed_run_equals_one_uninterrupted_run_bitwise_on_cpu() {
    assert_resume_equals_one_run("cpu", &[], 40, 100);
    assert_resume_equals_one_run(
        "cpu",
        &["--estimator", "spsa", "--samples", "3", "--seed", "5"],
        13,
        50,
    );
    assert_resume_equals_one_run("cpu", &["--method", "reuse", "--precision", "f64"], 1, 30);
}

#[test]
fn a_resumed_run_equals_one_uninterrupted_run_bitwise_on_gpu() {
    if common::gpu().is_none() {
        return;
    }
    assert_resume_equals_one_run("gpu", &[], 40, 100);
    assert_resume_equals_one_run("gpu", &["--estimator", "central", "--step", "exact"], 7, 30);
    assert_resume_equals_one_run("gpu", &["--loop", "resident"], 30, 100);
}

#[test]
fn ctrl_c_saves_the_run_exits_130_and_the_run_resumes_bitwise() {
    use std::io::{BufRead, BufReader};
    let d = dir("sigint");
    let ck = d.join("ck.json");
    let report = d.join("partial.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args([
            "train",
            "--device",
            "cpu",
            "--epochs",
            "100000000",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until training runs, then interrupt it.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.unwrap().starts_with("epoch      5")));
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted after epoch") && err.contains("ck.json"),
        "{err}"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ck).unwrap()).unwrap();
    let done = saved["epochs_done"].as_u64().unwrap() as usize;
    assert!(done >= 5, "{done}");
    assert_eq!(report_run(&report).0.as_array().unwrap().len(), done);
    // Resume to a few epochs more; compare with one run of that length.
    let total = (done + 17).to_string();
    let (resumed, whole) = (d.join("resumed.json"), d.join("whole.json"));
    let o = perturb(&[
        "train",
        "--resume",
        ck.to_str().unwrap(),
        "--epochs",
        &total,
        "--device",
        "cpu",
        "--report",
        resumed.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = perturb(&[
        "train",
        "--device",
        "cpu",
        "--epochs",
        &total,
        "--report",
        whole.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(report_run(&resumed), report_run(&whole));
}

#[test]
fn a_diverging_run_saves_its_last_finite_parameters_and_exits_6() {
    let d = dir("diverge-ck");
    let ck = d.join("ck.json");
    assert_fails_with(
        EXIT_DIVERGED,
        &[
            "train",
            "--device",
            "cpu",
            "--lr",
            "1e30",
            "--checkpoint",
            ck.to_str().unwrap(),
        ],
        &["diverged at epoch 2", "last finite parameters", "ck.json"],
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ck).unwrap()).unwrap();
    assert_eq!(saved["epochs_done"], 1);
    // --allow-divergence runs every epoch instead.
    let o = perturb(&[
        "train",
        "--device",
        "cpu",
        "--lr",
        "1e30",
        "--allow-divergence",
        "--epochs",
        "5",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn resume_refuses_disagreeing_flags_and_bad_checkpoints() {
    let d = dir("resume-bad");
    let ck = d.join("ck.json");
    let o = perturb(&[
        "train",
        "--device",
        "cpu",
        "--epochs",
        "10",
        "--checkpoint",
        ck.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let c = ck.to_str().unwrap();
    assert_fails(
        &["train", "--device", "cpu", "--resume", c, "--lr", "0.5"],
        &["--lr 0.5 disagrees with the checkpoint's 0.01"],
    );
    assert_fails(
        &["train", "--device", "cpu", "--resume", c, "--epochs", "5"],
        &["--epochs 5", "10 epochs"],
    );
    assert_fails(
        &[
            "train",
            "--device",
            "cpu",
            "--resume",
            c,
            "--estimator",
            "central",
        ],
        &["--estimator"],
    );
    let other = write(&d, "other.csv", "1,1,0\n2,2,1\n");
    assert_fails(
        &["train", "--device", "cpu", "--resume", c, "--data", &other],
        &["--data", "book"],
    );
    let broken = write(&d, "broken.json", "{\"format\": \"perturb-checkpoint\"");
    assert_fails_with(
        EXIT_FILE,
        &["train", "--device", "cpu", "--resume", &broken],
        &["broken.json"],
    );
    assert_fails(
        &["train", "--device", "cpu", "--checkpoint-every", "5"],
        &["--checkpoint-every", "--checkpoint"],
    );
}

#[test]
fn the_resident_loop_saves_the_same_last_finite_state_as_the_host_loop() {
    if common::gpu().is_none() {
        return;
    }
    let d = dir("diverge-resident");
    let save = |mode: &str| {
        let ck = d.join(format!("{mode}.json"));
        assert_fails_with(
            EXIT_DIVERGED,
            &[
                "train",
                "--lr",
                "1e30",
                "--loop",
                mode,
                "--epochs-per-submit",
                "1",
                "--checkpoint",
                ck.to_str().unwrap(),
            ],
            &["diverged at epoch 2", "after epoch 1"],
        );
        let c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&ck).unwrap()).unwrap();
        (
            c["epochs_done"].clone(),
            c["losses"].clone(),
            c["model"].clone(),
        )
    };
    let host = save("host");
    assert_eq!(host.0, 1);
    assert_eq!(save("resident"), host);
}
