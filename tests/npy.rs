//! NumPy interop: files NumPy wrote (tests/fixtures, from make_npy_fixtures.py) load as the book's
//! model and data; what we write loads back bit for bit (and in NumPy, when python3 has it); bad
//! files get a typed error naming the file, and a header's shape is checked before allocating.

use perturb::npy::{self, encode_f32, encode_strings, Values};
use perturb::{Activation, Dataset, Error, Loss, Model};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("perturb-npy-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Asserts two parameter vectors are equal bit for bit, naming the first index that differs.
fn assert_same_params(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!(
            "{what}: parameter {i} is {} but should be {}",
            got[i], want[i]
        );
    }
}

/// The fixtures' data: x[i] = [i, -i/4], y[i] = i/8 for i = 0..4 (exact in float32).
fn fixture_data() -> Dataset {
    let x =
        ndarray::Array2::from_shape_fn(
            (5, 2),
            |(i, c)| {
                if c == 0 {
                    i as f32
                } else {
                    -(i as f32) / 4.0
                }
            },
        );
    let y = ndarray::Array2::from_shape_fn((5, 1), |(i, _)| i as f32 / 8.0);
    Dataset::new(x, y).unwrap()
}

#[test]
fn npz_written_by_numpy_loads_as_the_book_model() {
    for name in ["book_model.npz", "book_model_no_activations.npz"] {
        let m = perturb::files::load_model(&fixture(name)).unwrap();
        let book = Model::book();
        assert_eq!(m.layers(), book.layers(), "{name}");
        assert_same_params(name, &m.params, &book.params);
    }
}

#[test]
fn numpy_data_files_load_in_every_layout() {
    let model = Model::book();
    let want = fixture_data();
    let pair = format!(
        "{},{}",
        fixture("data_x.npy").display(),
        fixture("data_y.npy").display()
    );
    for path in [
        fixture("data_f64.npz"),
        fixture("data_f32.npz"),
        fixture("data_xy_fortran.npy"),
        fixture("data_xy_bigendian.npy"),
        PathBuf::from(pair),
    ] {
        let d = perturb::files::load_data(&path, &model, Loss::Mse).unwrap();
        assert_eq!(d, want, "{}", path.display());
    }
    // The notebook's integer arrays are the book's sample.
    let d = perturb::files::load_data(&fixture("data_book_int.npz"), &model, Loss::Mse).unwrap();
    assert_eq!(d, Dataset::book());
}

#[test]
fn saved_model_npz_round_trips_bit_for_bit() {
    let d = dir("roundtrip");
    let acts = [Activation::Tanh, Activation::Relu, Activation::Identity];
    let m = Model::random(&[3, 5, 4, 2], &acts, 11).unwrap();
    let path = d.join("m.npz");
    perturb::files::save_model(&m, &path).unwrap();
    let back = perturb::files::load_model(&path).unwrap();
    assert_eq!(back.layers(), m.layers());
    assert_same_params("saved model", &back.params, &m.params);
    // The arrays are the book's layout: W1 float32 [inputs][outputs], b1 1-D.
    let bytes = std::fs::read(&path).unwrap();
    let arrays = npy::read_npz(std::io::Cursor::new(bytes)).unwrap();
    let names: Vec<&str> = arrays.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["W1", "b1", "W2", "b2", "W3", "b3", "activations"]);
    let w1 = &arrays[0].1;
    assert_eq!(
        (w1.dtype.as_str(), w1.shape.as_slice()),
        ("<f4", &[3, 5][..])
    );
    assert_eq!(arrays[1].1.shape, [5]);
    assert_eq!(
        arrays[6].1.values,
        Values::Strings(vec!["tanh".into(), "relu".into(), "identity".into()])
    );
}

/// Runs `code` in python3 with NumPy, or returns None (after saying so) when either is missing.
fn python(code: &str) -> Option<String> {
    let o = Command::new("python3").args(["-c", code]).output();
    match o {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No module named 'numpy'") => {
            eprintln!("NOTE: python3 has no NumPy; skipping the check that NumPy reads our files");
            None
        }
        Ok(o) => panic!("python3 failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            eprintln!("NOTE: no python3 ({e}); skipping the check that NumPy reads our files");
            None
        }
    }
}

#[test]
fn cli_npz_report_and_model_load_in_rust_and_numpy() {
    let d = dir("cli");
    let model = d.join("m.npz").display().to_string();
    let report = d.join("r.npz").display().to_string();
    let json = d.join("r.json").display().to_string();
    let run = |extra: &[&str]| {
        let mut args = vec!["train", "--device", "cpu"];
        args.extend_from_slice(extra);
        let o = Command::new(env!("CARGO_BIN_EXE_perturb"))
            .args(&args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run(&["--epochs", "5", "--save", &model, "--report", &report]);
    run(&["--epochs", "5", "--report", &json]);
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let json_losses: Vec<f64> = j["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let arrays = npy::read_npz(std::io::Cursor::new(std::fs::read(&report).unwrap())).unwrap();
    let get = |n: &str| &arrays.iter().find(|(a, _)| a == n).unwrap().1;
    assert_eq!(get("losses").dtype, "<f8");
    assert_eq!(get("losses").values, Values::Numbers(json_losses.clone()));
    assert_eq!(get("predictions").shape, [1, 1]);
    // The saved model is the report's model and trains on.
    let saved = perturb::files::load_model(Path::new(&model)).unwrap();
    run(&["--model", &model, "--epochs", "1"]);

    let code = format!(
        "import numpy as np, json\n\
         m = np.load({model:?}); r = np.load({report:?})\n\
         print(json.dumps({{'W1': m['W1'].tolist(), 'W1dtype': str(m['W1'].dtype), \
         'b2': m['b2'].tolist(), 'acts': m['activations'].tolist(), \
         'losses': r['losses'].tolist(), 'W2': r['W2'].tolist()}}))"
    );
    let Some(out) = python(&code) else { return };
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["W1dtype"], "float32");
    assert_eq!(v["acts"], serde_json::json!(["sigmoid", "identity"]));
    let w1: Vec<f32> = v["W1"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect();
    assert_same_params(
        "W1 as NumPy reads it",
        &w1,
        saved.weights(0).as_slice().unwrap(),
    );
    assert_eq!(v["b2"][0].as_f64().unwrap() as f32, saved.biases(1)[0]);
    assert_eq!(v["W2"].as_array().unwrap().len(), 3, "W2 is [3][1]");
    let losses: Vec<f64> = v["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(losses, json_losses);
}

/// `.npz` members: names and `.npy` bytes.
type Members = Vec<(String, Vec<u8>)>;

/// A `.npy` with a hand-written header and data.
fn raw_npy(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn header(descr: &str, shape: &str) -> String {
    format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}\n")
}

/// Asserts a `Data` error naming `path` and containing `needle`.
fn assert_data_err(r: perturb::Result<Dataset>, path: &Path, needle: &str) {
    match r {
        Err(e @ Error::Data { .. }) => {
            let m = e.to_string();
            assert!(
                m.contains(&path.display().to_string()) && m.contains(needle),
                "{m}"
            );
        }
        other => panic!(
            "{}: expected Error::Data with {needle:?}, got {other:?}",
            path.display()
        ),
    }
}

#[test]
fn malformed_npy_data_is_refused_with_the_file_name() {
    let d = dir("bad-npy");
    let model = Model::book();
    let f4 = |n: usize| vec![0u8; 4 * n];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("magic.npy", b"PK\x03\x04 not numpy".to_vec(), "magic"),
        (
            "short.npy",
            raw_npy(&header("<f4", "(5, 3)"), &f4(14)),
            "56 data bytes",
        ),
        (
            "long.npy",
            raw_npy(&header("<f4", "(5, 3)"), &f4(16)),
            "64 data bytes",
        ),
        // 10^10 rows claimed over 8 bytes: refused from the header, nothing allocated for it.
        (
            "huge.npy",
            raw_npy(&header("<f4", "(10000000000, 3)"), &f4(2)),
            "size limit",
        ),
        (
            "overflow.npy",
            raw_npy(&header("<f8", "(4294967296, 4294967296, 4294967296)"), &[]),
            "overflows",
        ),
        (
            "complex.npy",
            raw_npy(&header("<c16", "(1, 3)"), &[0; 48]),
            "not supported",
        ),
        (
            "strings.npy",
            raw_npy(&header("<U3", "(1, 3)"), &[0; 36]),
            "string array",
        ),
        (
            "dict.npy",
            raw_npy("{'descr': '<f4', 'shape': (1, 3)", &f4(3)),
            "malformed header",
        ),
        (
            "nofortran.npy",
            raw_npy("{'descr': '<f4', 'shape': (1, 3)}", &f4(3)),
            "fortran_order",
        ),
        (
            "record.npy",
            raw_npy(
                &header("<f4", "(1, 3)").replace("'<f4'", "[('a', '<f4')]"),
                &f4(3),
            ),
            "structured",
        ),
        (
            "version.npy",
            b"\x93NUMPY\x09\x00\x00\x00".to_vec(),
            "version 9.0",
        ),
        (
            "cube.npy",
            raw_npy(&header("<f4", "(1, 1, 3)"), &f4(3)),
            "1-D or 2-D",
        ),
        (
            "width.npy",
            raw_npy(&header("<f4", "(1, 4)"), &f4(4)),
            "4 columns, expected 3",
        ),
        (
            "nan.npy",
            raw_npy(
                &header("<f4", "(1, 3)"),
                &[0, 0, 0xc0, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            "[0, 0] is NaN",
        ),
        (
            "empty.npy",
            raw_npy(&header("<f4", "(0, 3)"), &[]),
            "no samples",
        ),
    ];
    for (name, bytes, needle) in cases {
        let path = d.join(name);
        std::fs::write(&path, bytes).unwrap();
        assert_data_err(
            perturb::files::load_data(&path, &model, Loss::Mse),
            &path,
            needle,
        );
    }
    let obj = fixture("object.npy");
    assert_data_err(
        perturb::files::load_data(&obj, &model, Loss::Mse),
        &obj,
        "object arrays",
    );
}

#[test]
fn malformed_npz_data_is_refused_with_the_file_name() {
    let d = dir("bad-npz");
    let model = Model::book();
    let x = encode_f32(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let y = encode_f32(&[3], &[0.0, 1.0, 2.0]);
    let cases: Vec<(&str, Members, &str)> = vec![
        ("noy.npz", vec![("x".into(), x.clone())], "no array \"y\""),
        (
            "rows.npz",
            vec![("x".into(), x.clone()), ("y".into(), y)],
            "x has 2 rows but y has 3",
        ),
        (
            "bad-member.npz",
            vec![("x".into(), x), ("y".into(), b"garbage".to_vec())],
            "y.npy: not a .npy",
        ),
    ];
    for (name, members, needle) in cases {
        let path = d.join(name);
        npy::save_npz(&path, &members).unwrap();
        assert_data_err(
            perturb::files::load_data(&path, &model, Loss::Mse),
            &path,
            needle,
        );
    }
    let path = d.join("notzip.npz");
    std::fs::write(&path, "x,y\n1,2\n").unwrap();
    assert_data_err(
        perturb::files::load_data(&path, &model, Loss::Mse),
        &path,
        "not a readable .npz",
    );
    let missing = d.join("missing.npz");
    match perturb::files::load_data(&missing, &model, Loss::Mse) {
        Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("missing.npz"), "{e}"),
        other => panic!("expected Error::Io, got {other:?}"),
    }
    let pair = PathBuf::from(format!("{},{}", fixture("data_x.npy").display(), "y.csv"));
    assert_data_err(
        perturb::files::load_data(&pair, &model, Loss::Mse),
        &pair,
        "both be .npy",
    );
}

#[test]
fn malformed_model_npz_is_refused_with_the_array_name() {
    let d = dir("bad-model");
    let w = |r: usize, c: usize| encode_f32(&[r, c], &vec![0.5; r * c]);
    let b = |n: usize| encode_f32(&[n], &vec![0.0; n]);
    let book = |extra: Vec<(&str, Vec<u8>)>| {
        let mut m: Members = vec![
            ("W1".into(), w(2, 3)),
            ("b1".into(), b(3)),
            ("W2".into(), w(3, 1)),
            ("b2".into(), b(1)),
        ];
        for (name, bytes) in extra {
            m.retain(|(n, _)| n != name);
            m.push((name.into(), bytes));
        }
        m
    };
    let cases: Vec<(&str, Members, &str)> = vec![
        ("empty.npz", vec![], "no array W1"),
        (
            "nob2.npz",
            book(vec![])
                .into_iter()
                .filter(|(n, _)| n != "b2")
                .collect(),
            "no array b2",
        ),
        (
            "chain.npz",
            book(vec![("W2", w(4, 1))]),
            "W2 has 4 rows but W1 has 3 columns",
        ),
        (
            "bias.npz",
            book(vec![("b1", b(2))]),
            "b1 has 2 values but W1 has 3 columns",
        ),
        ("flat.npz", book(vec![("W1", b(6))]), "W1 has shape [6]"),
        ("gap.npz", book(vec![("W4", w(1, 1))]), "W4 does not belong"),
        (
            "acts.npz",
            book(vec![(
                "activations",
                encode_strings(&["sigmoid", "softmax"]),
            )]),
            "softmax",
        ),
        (
            "nacts.npz",
            book(vec![("activations", encode_strings(&["sigmoid"]))]),
            "1 names for 2 layers",
        ),
        (
            "numacts.npz",
            book(vec![("activations", b(2))]),
            "not a string array",
        ),
        (
            "inf.npz",
            book(vec![("W2", npy::encode_f64(&[3, 1], &[0.0, 1e39, 0.0]))]),
            "W2[1, 0] is inf",
        ),
    ];
    for (name, members, needle) in cases {
        let path = d.join(name);
        npy::save_npz(&path, &members).unwrap();
        match perturb::files::load_model(&path) {
            Err(e @ Error::Model { .. }) => {
                let m = e.to_string();
                assert!(m.contains(name) && m.contains(needle), "{name}: {m}");
            }
            other => panic!("{name}: expected Error::Model with {needle:?}, got {other:?}"),
        }
    }
    let path = d.join("model.npy");
    std::fs::write(&path, w(2, 3)).unwrap();
    assert!(matches!(
        perturb::files::load_model(&path),
        Err(Error::Model { .. })
    ));
    assert!(matches!(
        perturb::files::save_model(&Model::book(), &path),
        Err(Error::Config(_))
    ));
}
