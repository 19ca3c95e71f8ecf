//! `perturb bench`: the table, the JSON rows and unknown names.

use crate::support::*;

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
        "--process-runs",
        "2",
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
    assert_eq!(
        rows.len(),
        5,
        "2 sizes x 2 methods, and the README command on the CPU"
    );
    let process: Vec<_> = rows.iter().filter(|r| r["mode"] == "process").collect();
    assert_eq!(process.len(), 1, "{rows:?}");
    assert_eq!(process[0]["runs"].as_u64(), Some(2), "{}", process[0]);
    assert!(
        out.contains("/run") && out.contains("/step") && out.contains("items/s"),
        "{out}"
    );
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
fn bench_cross_entropy_rows_are_labelled_and_the_book_is_skipped_with_a_reason() {
    let d = dir("bench-ce");
    let json = d.join("b.json").display().to_string();
    let o = perturb(&[
        "bench",
        "--sizes",
        "book,small",
        "--losses",
        "mse,cross-entropy",
        "--methods",
        "reuse",
        "--devices",
        "cpu",
        "--max-seconds",
        "0.2",
        "--process-runs",
        "0",
        "--json",
        &json,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    let found = |size: &str, loss: &str| {
        rows.iter()
            .find(|r| r["size"] == size && r["loss"] == loss)
            .unwrap_or_else(|| panic!("no {size} {loss} row in {rows:?}"))
    };
    assert_eq!(rows.len(), 4, "2 sizes x 2 losses: {rows:?}");
    for size in ["book", "small"] {
        assert!(found(size, "mse")["seconds"].as_f64().unwrap() > 0.0);
    }
    assert!(found("small", "cross-entropy")["seconds"].as_f64().unwrap() > 0.0);
    let book = found("book", "cross-entropy");
    assert!(book["seconds"].is_null(), "{book}");
    let note = book["note"].as_str().unwrap();
    assert!(
        note.starts_with("skipped") && note.contains("one output"),
        "{note}"
    );
    assert!(stdout(&o).contains("cross-entropy"), "{}", stdout(&o));
}

#[test]
fn bench_rejects_unknown_names() {
    assert_fails(&["bench", "--sizes", "huge"], &["huge"]);
    assert_fails(&["bench", "--methods", "magic"], &["magic"]);
    assert_fails(&["bench", "--devices", "tpu"], &["tpu"]);
    assert_fails(&["bench", "--losses", "hinge"], &["--losses", "hinge"]);
    assert_fails(&["bench", "--max-seconds", "0"], &["--max-seconds"]);
}

#[test]
fn bench_jax_adds_rows_or_says_why_it_skips_them() {
    let o = perturb(&[
        "bench",
        "--sizes",
        "book",
        "--methods",
        "reuse",
        "--devices",
        "cpu",
        "--max-seconds",
        "0.1",
        "--process-runs",
        "0",
        "--jax",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    // benches/jax_bench.py has no book rows: with jax installed it reports zero rows.
    assert!(
        out.contains("JAX ") || out.contains("--jax: no JAX rows: jax is not importable"),
        "{out}"
    );
    assert!(
        !out.contains("/run"),
        "--process-runs 0 spawns nothing: {out}"
    );
}
