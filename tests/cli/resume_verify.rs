//! What a resume verifies: the checkpoint's checksum (any edit refused, naming the file) and the
//! data's bytes, including data read from a pipe, which must be given again.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::*;

/// Runs `perturb ARGS` with `stdin` piped in (so `--data /dev/stdin` is a pipe).
fn perturb_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(args)
        .current_dir(dir("cwd"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run perturb");
    let mut pipe = child.stdin.take().unwrap();
    // A run that refuses before reading closes the pipe: a failed write is no test failure.
    let _ = pipe.write_all(stdin.as_bytes());
    drop(pipe);
    child.wait_with_output().unwrap()
}

/// A checkpoint after 2 of 4 epochs of the book run, in `d`.
fn book_checkpoint(d: &Path) -> String {
    let ck = d.join("ck.json");
    let o = perturb(&[
        "train",
        "--device",
        "cpu",
        "--epochs",
        "2",
        "--checkpoint",
        ck.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    ck.display().to_string()
}

fn edit(path: &str, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {text}");
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn an_edited_checkpoint_is_refused_naming_the_file() {
    let d = dir("verify-edit");
    let ck = book_checkpoint(&d);
    let text = std::fs::read_to_string(&ck).unwrap();
    assert!(text.contains("\"epochs_done\":2"), "{text}");
    assert!(text.trim_end().ends_with("\"}"), "checksum last: {text}");
    // One digit of the learning rate's setting: a value the checkpoint's ranges accept.
    edit(&ck, "\"lr\":0.01", "\"lr\":0.02");
    let args = ["train", "--device", "cpu", "--epochs", "4", "--resume", &ck];
    assert_fails_with(EXIT_FILE, &args, &["ck.json", "checksum"]);
    // A weight edited the same way.
    let ck = book_checkpoint(&d);
    let text = std::fs::read_to_string(&ck).unwrap();
    let at = text
        .find("\"W\"")
        .or_else(|| text.find("\"weights\""))
        .unwrap();
    let digit = text[at..].find(|c: char| c.is_ascii_digit()).unwrap() + at;
    let mut bytes = text.into_bytes();
    bytes[digit] = if bytes[digit] == b'1' { b'2' } else { b'1' };
    std::fs::write(&ck, bytes).unwrap();
    assert_fails_with(EXIT_FILE, &args, &["ck.json", "checksum"]);
}

#[test]
fn a_checkpoint_without_a_checksum_still_loads() {
    let d = dir("verify-old");
    let ck = book_checkpoint(&d);
    let text = std::fs::read_to_string(&ck).unwrap();
    let at = text.rfind(",\"checksum\":").unwrap();
    std::fs::write(&ck, format!("{}}}\n", &text[..at])).unwrap();
    let o = perturb(&["train", "--device", "cpu", "--epochs", "4", "--resume", &ck]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_checkpoint_with_an_unknown_estimator_exits_3_naming_the_file() {
    let d = dir("verify-estimator");
    let ck = book_checkpoint(&d);
    let text = std::fs::read_to_string(&ck).unwrap();
    let at = text.rfind(",\"checksum\":").unwrap();
    let old = format!("{}}}\n", &text[..at]).replacen("\"forward\"", "\"backward\"", 1);
    std::fs::write(&ck, old).unwrap();
    assert_fails_with(
        EXIT_FILE,
        &["train", "--device", "cpu", "--resume", &ck],
        &["ck.json", "extra.estimator", "backward"],
    );
}

const PIPED: &str = "x1,x2,y\n1,2,0.5\n3,4,0.25\n";

#[test]
fn a_run_on_a_pipe_needs_its_data_again_and_checks_it_by_hash() {
    let d = dir("verify-pipe");
    let ck = d.join("ck.json").display().to_string();
    // The network comes from the checkpoint on resume.
    let base = ["train", "--device", "cpu"];
    fn with<'a>(base: &[&'a str], rest: &[&'a str]) -> Vec<&'a str> {
        [base, rest].concat()
    }
    let o = perturb_stdin(
        &with(
            &base,
            &[
                "--layers",
                "2,2,1",
                "--epochs",
                "2",
                "--data",
                "/dev/stdin",
                "--checkpoint",
                &ck,
            ],
        ),
        PIPED,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ck).unwrap()).unwrap();
    assert_eq!(saved["settings"]["data"]["stream"], true, "{saved}");
    assert_eq!(saved["settings"]["data"]["bytes"], PIPED.len(), "{saved}");
    // Without --data the resume cannot read the pipe again: refused, never the book's sample.
    assert_fails(
        &with(&base, &["--epochs", "4", "--resume", &ck]),
        &["--data", "pipe", "give --data"],
    );
    // Other bytes through the pipe are refused by hash.
    let o = perturb_stdin(
        &with(
            &base,
            &["--epochs", "4", "--resume", &ck, "--data", "/dev/stdin"],
        ),
        "x1,x2,y\n1,2,0.5\n3,4,0.75\n",
    );
    assert_eq!(o.status.code(), Some(EXIT_CONFIG), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is not the data the checkpoint trained on"),
        "{}",
        stderr(&o)
    );
    // The same bytes resume.
    let o = perturb_stdin(
        &with(
            &base,
            &["--epochs", "4", "--resume", &ck, "--data", "/dev/stdin"],
        ),
        PIPED,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("resuming after epoch 2"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_csv_with_a_byte_order_mark_trains_on_every_row() {
    let d = dir("csv-bom");
    let f = write(&d, "bom.csv", "\u{feff}1,2,0.5\n3,4,0.25\n5,6,0.125\n");
    let o = perturb(&[
        "train", "--device", "cpu", "--layers", "2,2,1", "--epochs", "1", "--data", &f,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("3 samples"), "{}", stdout(&o));
    let f = write(&d, "mixed.csv", "1,,0.5\n3,4,0.25\n");
    assert_fails_with(
        EXIT_FILE,
        &[
            "train", "--device", "cpu", "--layers", "2,2,1", "--data", &f,
        ],
        &["mixed.csv:1:", "mixes numbers and text"],
    );
    let f = write(&d, "cr.csv", "1,2,0.5\r3,4,0.25\r");
    assert_fails_with(
        EXIT_FILE,
        &[
            "train", "--device", "cpu", "--layers", "2,2,1", "--data", &f,
        ],
        &["cr.csv", "carriage return"],
    );
}

#[test]
fn a_file_name_with_a_newline_gives_a_one_line_error() {
    let d = dir("newline-name");
    let f = write(&d, "bad\nname.csv", "a,b,y\n");
    // assert_fails_with checks stderr is one line.
    assert_fails_with(
        EXIT_FILE,
        &[
            "train", "--device", "cpu", "--layers", "2,2,1", "--data", &f,
        ],
        &["bad\\nname.csv", "no samples"],
    );
}

#[test]
fn check_refuses_zero_samples_as_train_does() {
    assert_fails(
        &["check", "--samples", "0"],
        &["--samples", "between 1 and"],
    );
}
