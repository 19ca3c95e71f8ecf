//! `perturb sweep`: several learning rates side by side.

use crate::support::*;

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
