//! Missing, unreadable, malformed or oversized model and data files: one error line names the file.

use std::path::Path;

use crate::support::*;

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
