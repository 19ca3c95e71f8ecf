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
