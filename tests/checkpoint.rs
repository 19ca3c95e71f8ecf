//! Checkpoint files: exact round trips, typed errors for damaged files, atomic replacement (also
//! under SIGKILL mid-write), and the resume-flag check.

use perturb::checkpoint::{Checkpoint, DataRef, GivenFlags, RunSettings, FORMAT};
use perturb::cli::exit::message;
use perturb::cli::MethodArg;
use perturb::optim::{OptState, Optimizer};
use perturb::settings::Batching;
use perturb::settings::{DeviceKind, EstimatorChoice, EstimatorKind, LoopKind};
use perturb::{Activation, Error, Loss, Method, Model, Precision};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A scratch directory per test.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("perturb-ckpt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn settings() -> RunSettings {
    RunSettings {
        epochs: 100,
        lr: 0.01,
        eps: 0.0001,
        seed: Some(u64::MAX),
        precision: Precision::F32,
        method: MethodArg::Reuse.into(),
        device: DeviceKind::Cpu,
        loop_mode: LoopKind::Host,
        data: Some(DataRef::of_bytes(Path::new("d.csv"), b"1,1,0\n")),
        estimator: EstimatorChoice::default(),
        loss: Loss::Mse,
        batching: Batching::full(),
        optimizer: Optimizer::Sgd,
        take: None,
        val_split: None,
    }
}

/// A 2-16-3 model whose parameters are random finite bit patterns (subnormals, extremes and all),
/// and `epochs_done` random f64 losses, some non-finite.
fn random_checkpoint(seed: u64, epochs_done: usize) -> Checkpoint {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let model = Model::random(&[2, 16, 3], &[Activation::Tanh, Activation::Identity], 1).unwrap();
    let params = (0..model.num_params())
        .map(|_| loop {
            let v = f32::from_bits(rng.next_u32());
            if v.is_finite() {
                break v;
            }
        })
        .collect();
    let mut losses: Vec<f64> = (0..epochs_done)
        .map(|_| f64::from_bits(rng.next_u64()))
        .collect();
    losses.extend([
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        f64::MIN_POSITIVE / 4.0,
    ]);
    losses.truncate(epochs_done);
    Checkpoint {
        model: model.with_params(params).unwrap(),
        epochs_done,
        step_losses: losses.clone(),
        losses,
        state: OptState::default(),
        settings: settings(),
        history: Default::default(),
    }
}

fn bits32(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn bits64(v: &[f64]) -> Vec<u64> {
    v.iter()
        .map(|x| x.to_bits() | u64::from(x.is_nan()))
        .collect()
}

/// Compares two checkpoints field by field, floats by their bits (NaN payloads aside).
fn assert_same(a: &Checkpoint, b: &Checkpoint) {
    assert_eq!(bits32(&a.model.params), bits32(&b.model.params), "params");
    assert_eq!(a.model.layers(), b.model.layers(), "layers");
    assert_eq!(bits64(&a.losses), bits64(&b.losses), "losses");
    assert_eq!(a.epochs_done, b.epochs_done);
    assert_eq!(a.settings, b.settings);
}

#[test]
fn round_trip_is_bit_for_bit() {
    const CASES: u64 = 50;
    const EPOCHS: usize = 40;
    let d = dir("roundtrip");
    let path = d.join("run.ckpt");
    for seed in 0..CASES {
        let c = random_checkpoint(seed, EPOCHS);
        c.save_atomic(&path).unwrap();
        let back = Checkpoint::load(&path).unwrap();
        assert_same(&c, &back);
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn the_file_says_what_it_is() {
    let text = random_checkpoint(0, 3).to_json();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["format"], FORMAT);
    assert_eq!(v["version"], 1);
    assert_eq!(v["settings"]["loop"], "host");
    assert_eq!(v["settings"]["method"], "reuse");
    assert_eq!(text.lines().count(), 1, "one line");
}

fn checkpoint_error(text: &str) -> String {
    match Checkpoint::from_json(text, "c.ckpt") {
        Err(e @ Error::Checkpoint { .. }) => e.to_string(),
        other => panic!("expected Error::Checkpoint for {text:.80?}, got {other:?}"),
    }
}

#[test]
fn every_truncation_is_a_typed_error() {
    let text = random_checkpoint(1, 2).to_json();
    let text = text.trim_end();
    for cut in 0..text.len() {
        if text.is_char_boundary(cut) {
            let e = checkpoint_error(&text[..cut]);
            assert!(e.starts_with("c.ckpt: "), "{e}");
        }
    }
}

#[test]
fn inconsistent_checkpoints_name_the_problem() {
    let mut good: serde_json::Value =
        serde_json::from_str(&random_checkpoint(2, 3).to_json()).unwrap();
    // Without its checksum (as older checkpoints are), so that each field's own check speaks.
    good.as_object_mut().unwrap().remove("checksum").unwrap();
    let cases: &[(&str, serde_json::Value, &str)] = &[
        ("/format", "other".into(), "not a perturb checkpoint"),
        (
            "/version",
            3.into(),
            "checkpoint version 3; this perturb reads versions 1 to 2",
        ),
        ("/epochs_done", 4.into(), "3 losses for 4 completed epochs"),
        (
            "/epochs_done",
            101.into(),
            "epochs_done is 101, more than the 100",
        ),
        ("/settings/lr", (-1.0).into(), "settings: lr"),
        ("/settings/eps", 1e-45.into(), "settings: eps"),
        ("/settings/epochs", 0.into(), "settings: epochs"),
        (
            "/settings/method",
            "magic".into(),
            "settings.method is \"magic\" (expected naive or reuse)",
        ),
        ("/settings/loop", "".into(), "settings.loop"),
        ("/settings/data/fnv1a64", "xyz".into(), "not 16 hex digits"),
        ("/losses/1", "NaNa".into(), "invalid value"),
        (
            "/model/layers/0/weights/0/0",
            1e39.into(),
            "number out of range",
        ),
        (
            "/model/layers/1/biases",
            serde_json::json!([0.0]),
            "model: layers[1]",
        ),
    ];
    for (pointer, value, needle) in cases {
        let mut v = good.clone();
        *v.pointer_mut(pointer).unwrap() = value.clone();
        let e = checkpoint_error(&v.to_string());
        assert!(
            e.contains(needle),
            "{pointer} = {value}: {e:?} lacks {needle:?}"
        );
    }
    let mut v = good.clone();
    v["settings"]["extra"]["Bad Key"] = "x".into();
    assert!(checkpoint_error(&v.to_string()).contains("\"Bad Key\""));
    v = good.clone();
    v["surprise"] = 1.into();
    assert!(checkpoint_error(&v.to_string()).contains("surprise"));
    assert!(checkpoint_error("{}").contains("\"format\" is missing"));
}

#[test]
fn a_missing_or_unreadable_file_is_an_io_error_naming_it() {
    let d = dir("missing");
    let e = Checkpoint::load(&d.join("nope.ckpt")).unwrap_err();
    assert!(
        matches!(e, Error::Io { .. }) && e.to_string().contains("nope.ckpt"),
        "{e}"
    );
    std::fs::write(d.join("bin.ckpt"), [0xff, 0xfe, 0]).unwrap();
    let e = Checkpoint::load(&d.join("bin.ckpt")).unwrap_err();
    assert!(e.to_string().contains("not UTF-8"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn failed_saves_leave_the_previous_checkpoint_intact() {
    let d = dir("failed");
    let path = d.join("run.ckpt");
    let first = random_checkpoint(3, 5);
    first.save_atomic(&path).unwrap();
    let before = std::fs::read(&path).unwrap();

    // An invalid checkpoint is refused before anything is written.
    let mut bad = random_checkpoint(4, 5);
    bad.losses.pop();
    let e = bad.save_atomic(&path).unwrap_err();
    assert!(e.to_string().contains("refusing to write"), "{e}");

    // A path under a file cannot be created: the error names it, nothing appears.
    let under_file = path.join("inner.ckpt");
    let e = first.save_atomic(&under_file).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");

    // The rename over a non-empty directory fails after the temporary file was written.
    let dir_target = d.join("dir.ckpt");
    std::fs::create_dir_all(dir_target.join("keep")).unwrap();
    let e = first.save_atomic(&dir_target).unwrap_err();
    assert!(e.to_string().contains("dir.ckpt"), "{e}");
    assert!(dir_target.join("keep").is_dir());

    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "previous checkpoint changed"
    );
    let mut names: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["dir.ckpt", "run.ckpt"],
        "temporary files left behind"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// Environment variable that turns this test binary into the writer of the SIGKILL test.
const WRITER_ENV: &str = "PERTURB_CKPT_WRITER";

/// Not a test: the child process of the SIGKILL test (run with `--ignored`). Saves ever longer
/// checkpoints to the path in [`WRITER_ENV`] until killed. Big enough (about 3 MB) that a kill
/// usually lands mid-write.
#[test]
#[ignore = "the child process of a_writer_killed_at_any_moment_leaves_a_loadable_checkpoint"]
fn sigkill_writer_child() {
    let Ok(path) = std::env::var(WRITER_ENV) else {
        return;
    };
    let model = Model::random(
        &[64, 2048, 64],
        &[Activation::Tanh, Activation::Identity],
        5,
    )
    .unwrap();
    for n in 1.. {
        let c = Checkpoint {
            model: model.clone(),
            epochs_done: n,
            losses: vec![0.5; n],
            step_losses: vec![0.5; n],
            state: OptState::default(),
            settings: RunSettings {
                epochs: 1_000_000,
                ..settings()
            },
            history: Default::default(),
        };
        c.save_atomic(Path::new(&path)).unwrap();
    }
}

#[test]
fn a_writer_killed_at_any_moment_leaves_a_loadable_checkpoint() {
    // Kill times spread over a few writes each; whatever the moment, the file loads whole.
    const KILL_AFTER_MS: [u64; 6] = [150, 190, 230, 270, 310, 350];
    let d = dir("sigkill");
    let path = d.join("run.ckpt");
    let mut seen = Vec::new();
    for ms in KILL_AFTER_MS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sigkill_writer_child",
                "--ignored",
                "--nocapture",
            ])
            .env(WRITER_ENV, &path)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        child.kill().unwrap();
        child.wait().unwrap();
        if !path.exists() {
            continue; // killed before its first rename
        }
        let c = Checkpoint::load(&path).unwrap_or_else(|e| panic!("after a kill at {ms} ms: {e}"));
        assert_eq!(c.losses.len(), c.epochs_done);
        seen.push(c.epochs_done);
    }
    assert!(!seen.is_empty(), "the writer never finished a checkpoint");
    eprintln!("epochs_done found after each kill: {seen:?}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn resume_flags_must_agree_and_the_first_disagreement_is_named() {
    let c = random_checkpoint(5, 7);
    assert!(c.check_resume(&GivenFlags::default()).is_ok());
    let same = GivenFlags {
        epochs: Some(7),
        lr: Some(0.01),
        eps: Some(0.0001),
        seed: Some(u64::MAX),
        precision: Some(Precision::F32),
        method: Some(Method::Reuse),
        device: Some(DeviceKind::Cpu),
        loop_mode: Some(LoopKind::Host),
        data: Some(DataRef::of_bytes(Path::new("moved/d.csv"), b"1,1,0\n")),
        estimator: Some(EstimatorKind::Forward),
        ..GivenFlags::default()
    };
    c.check_resume(&same).unwrap();
    let cases: Vec<(GivenFlags, &str)> = vec![
        (
            GivenFlags {
                epochs: Some(6),
                ..same.clone()
            },
            "--epochs 6 is fewer than the 7 epochs the checkpoint has already run",
        ),
        (
            GivenFlags {
                lr: Some(0.1),
                ..same.clone()
            },
            "--lr 0.1 disagrees with the checkpoint's 0.01",
        ),
        (
            GivenFlags {
                eps: Some(1e-3),
                lr: Some(0.2),
                ..GivenFlags::default()
            },
            "--lr 0.2 disagrees with the checkpoint's 0.01",
        ),
        (
            GivenFlags {
                eps: Some(1e-3),
                ..same.clone()
            },
            "--eps 0.001 disagrees with the checkpoint's 0.0001",
        ),
        (
            GivenFlags {
                seed: Some(3),
                ..same.clone()
            },
            "--seed 3 disagrees with the checkpoint's 18446744073709551615",
        ),
        (
            GivenFlags {
                method: Some(Method::Naive),
                ..same.clone()
            },
            "--method naive disagrees with the checkpoint's reuse",
        ),
        (
            GivenFlags {
                device: Some(DeviceKind::Gpu),
                ..same.clone()
            },
            "--device gpu disagrees with the checkpoint's cpu",
        ),
        (
            GivenFlags {
                loop_mode: Some(LoopKind::Resident),
                ..same.clone()
            },
            "--loop resident disagrees with the checkpoint's host",
        ),
        (
            GivenFlags {
                data: Some(DataRef::of_bytes(Path::new("d.csv"), b"1,1,1\n")),
                ..same.clone()
            },
            "--data d.csv (6 bytes, fnv1a64 ",
        ),
        (
            GivenFlags {
                estimator: Some(EstimatorKind::Central),
                ..same.clone()
            },
            "--estimator central disagrees with the checkpoint's forward",
        ),
        (
            GivenFlags {
                samples: Some(8),
                ..same.clone()
            },
            // Typed settings: a checkpoint always has every estimator option (default 1).
            "--samples 8 disagrees with the checkpoint's 1",
        ),
    ];
    for (given, expected) in cases {
        match c.check_resume(&given) {
            Err(e @ Error::Invalid { .. }) => {
                // The library names the setting; the command line words it as the flag.
                let m = message(&e);
                assert!(m.starts_with(expected), "{m:?} vs {expected:?}")
            }
            other => panic!("{given:?}: expected an Invalid error {expected:?}, got {other:?}"),
        }
    }
    let mut book = random_checkpoint(5, 7);
    book.settings.data = None;
    let e = book.check_resume(&same).unwrap_err();
    assert!(e.to_string().contains("trained on the book's data"), "{e}");
}

/// Version-1 checkpoints written by perturb before its settings were typed (commit 9c118ca):
/// central differences with the reuse method on the book, and SPSA (4 gaussian directions, seed 7)
/// on a random 2-4-1 network; each with the losses of the uninterrupted run it resumes into.
const V1_FIXTURES: [(&str, &str, &[&str]); 2] = [
    (
        "checkpoint_v1_central.json",
        "checkpoint_v1_central_full_losses.json",
        &["--epochs", "60"],
    ),
    (
        "checkpoint_v1_spsa.json",
        "checkpoint_v1_spsa_full_losses.json",
        &["--epochs", "40"],
    ),
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn a_version_1_checkpoint_loads_typed_and_writes_back_byte_for_byte() {
    for (name, _, _) in V1_FIXTURES {
        let text = std::fs::read_to_string(fixture(name)).unwrap();
        let c = Checkpoint::load(&fixture(name)).unwrap();
        // Written back with a checksum appended, the text before it unchanged.
        let back = c.to_json();
        let at = back.rfind(",\"checksum\":").expect("a checksum");
        assert_eq!(
            format!("{}}}\n", &back[..at]),
            text,
            "{name} does not round-trip"
        );
    }
    let spsa = Checkpoint::load(&fixture("checkpoint_v1_spsa.json")).unwrap();
    let e = spsa.settings.estimator;
    assert_eq!(
        (e.estimator, e.samples, e.direction.name()),
        (EstimatorKind::Spsa, 4, "gaussian")
    );
}

#[test]
fn a_version_1_checkpoint_resumes_into_the_uninterrupted_run_bit_for_bit() {
    let d = dir("v1-resume");
    for (name, full, more) in V1_FIXTURES {
        let ck = d.join(name);
        std::fs::copy(fixture(name), &ck).unwrap();
        let report = d.join(format!("{name}.report.json"));
        let mut args = vec!["train", "--device", "cpu", "--quiet", "--resume"];
        args.push(ck.to_str().unwrap());
        args.extend_from_slice(more);
        args.extend_from_slice(&["--report", report.to_str().unwrap()]);
        let o = Command::new(env!("CARGO_BIN_EXE_perturb"))
            .args(&args)
            .current_dir(&d)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let got: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        let want: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(full)).unwrap()).unwrap();
        let (got, want) = (
            got["losses"].as_array().unwrap(),
            want["losses"].as_array().unwrap(),
        );
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{name}: epoch {}: {g} vs {w}",
                i + 1
            );
        }
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_version_2_checkpoint_round_trips_its_optimiser_state_and_step_losses_bit_for_bit() {
    let mut c = random_checkpoint(11, 3);
    let p = c.model.params.len();
    c.settings.loss = Loss::CrossEntropy;
    c.settings.batching = Batching {
        size: 16,
        shuffle: true,
    };
    c.settings.optimizer = Optimizer::adam();
    c.losses = vec![0.5, 0.25, 0.125];
    c.step_losses = (0..11).map(|i| 1.0 / (i as f64 + 3.0)).collect();
    let mut state = OptState::new(&c.settings.optimizer, p);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for v in state.m.iter_mut().chain(state.v.iter_mut()) {
        *v = f32::from_bits(rng.next_u32() & 0x7f7f_ffff);
    }
    state.t = 11;
    c.state = state;
    let text = c.to_json();
    assert!(text.contains("\"version\":2"), "{}", &text[..80]);
    let back = Checkpoint::from_json(&text, "v2").unwrap();
    assert_eq!(back, c);
    assert_eq!(bits32(&back.state.m), bits32(&c.state.m));
    assert_eq!(bits32(&back.state.v), bits32(&c.state.v));
    assert_eq!(bits64(&back.step_losses), bits64(&c.step_losses));
    // A state of the wrong length is refused, naming the field.
    let mut bad = c.clone();
    bad.state.m.pop();
    let e = Checkpoint::from_json(&bad.to_json(), "bad").unwrap_err();
    assert!(e.to_string().contains("optimizer_state"), "{e}");
}
