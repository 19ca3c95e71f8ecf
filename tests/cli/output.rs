//! What a run writes: the JSON report, the saved model, `--quiet` and `--json`.

use crate::support::*;

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
fn the_report_predicts_every_sample_while_the_console_shows_the_first_ten() {
    let d = dir("report-rows");
    let rows: String = (0..13)
        .map(|i| format!("{},{},{}\n", i as f32 / 13.0, 1.0 - i as f32 / 7.0, i % 2))
        .collect();
    let data = write(&d, "d.csv", &format!("x1,x2,y\n{rows}"));
    let report = d.join("r.json").display().to_string();
    let args = ["train", "--device", "cpu", "--epochs", "3", "--data", &data];
    let o = perturb(&[&args[..], &["--report", &report]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let predictions = r["predictions"].as_array().unwrap();
    assert_eq!(
        predictions.len(),
        13,
        "one prediction per sample in the report"
    );
    let out = stdout(&o);
    assert_eq!(out.matches("  x = [").count(), 10, "{out}");
    assert!(out.contains("  … 3 more samples"), "{out}");
    // Without a report the console shows the same ten predictions.
    let quiet = stdout(&perturb(&args));
    let shown = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with("  x = [") || l.starts_with("  …"))
            .map(String::from)
            .collect()
    };
    assert_eq!(shown(&quiet), shown(&out));
    // And they are the report's: the first row's printed outputs round its float64 values.
    let first = predictions[0][0].as_f64().unwrap();
    assert!(shown(&out)[0].contains(&format!("[{first:.7}]")), "{out}");
}
