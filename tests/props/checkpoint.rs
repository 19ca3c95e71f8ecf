//! Checkpoints: arbitrary bytes, edits of a valid one and wrong values in every field.

use perturb::checkpoint::Checkpoint;
use perturb::Error;
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::model_json::json_value;
use crate::support::*;

fn load_checkpoint(text: &str) -> Option<Checkpoint> {
    match bounded(text, |t| Checkpoint::from_json(t, "c.ckpt")) {
        Ok(c) => Some(c),
        Err(Error::Checkpoint { origin, .. }) => {
            assert_eq!(origin, "c.ckpt");
            None
        }
        Err(e) => panic!("checkpoint loader: untyped error {e:?}"),
    }
}

fn checkpoint_text() -> String {
    let text = format!(
        r#"{{"format":"perturb-checkpoint","version":1,"epochs_done":2,
        "settings":{{"epochs":5,"lr":0.01,"eps":0.0001,"seed":null,"precision":"f32",
        "method":"naive","device":"cpu","loop":"host","data":null,"extra":{{"estimator":"central"}}}},
        "losses":[0.3,"NaN"],"model":{BOOK_MODEL}}}"#
    );
    assert!(
        Checkpoint::from_json(&text, "c").is_ok(),
        "the seed checkpoint loads"
    );
    text
}

fn check_checkpoint(c: &Checkpoint) {
    c.validate().unwrap();
    let again = Checkpoint::from_json(&c.to_json(), "again").unwrap();
    assert_eq!(again.model, c.model);
    assert_eq!(again.settings, c.settings);
    let bits = |v: &[f64]| {
        v.iter()
            .map(|x| (x.to_bits(), x.is_nan()))
            .collect::<Vec<_>>()
    };
    let nan_blind = |v: &[f64]| {
        bits(v)
            .into_iter()
            .map(|(b, nan)| if nan { (0, true) } else { (b, false) })
            .collect::<Vec<_>>()
    };
    assert_eq!(nan_blind(&again.losses), nan_blind(&c.losses));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn checkpoint_loader_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Some(c) = load_checkpoint(&String::from_utf8_lossy(&bytes)) {
            check_checkpoint(&c);
        }
    }

    #[test]
    fn checkpoint_loader_survives_edits_of_a_valid_file(e in edits()) {
        if let Some(c) = load_checkpoint(&apply(&checkpoint_text(), &e)) {
            check_checkpoint(&c);
        }
    }

    #[test]
    fn checkpoint_loader_survives_wrong_values(
        field in prop::sample::select(vec![
            "/epochs_done", "/settings/epochs", "/settings/lr", "/settings/eps", "/settings/seed",
            "/settings/precision", "/settings/method", "/settings/device", "/settings/loop",
            "/settings/data", "/settings/extra", "/losses", "/losses/0", "/model", "/model/layers",
            "/version", "/format",
        ]),
        value in prop_oneof![
            json_value(),
            any::<i64>().prop_map(|v| json!(v)),
            "[a-z]{0,8}".prop_map(|s| json!(s)),
            prop::collection::vec(json_value(), 0..4).prop_map(Value::from),
        ],
    ) {
        let mut doc: Value = serde_json::from_str(&checkpoint_text()).unwrap();
        *doc.pointer_mut(field).unwrap() = value;
        if let Some(c) = load_checkpoint(&doc.to_string()) {
            check_checkpoint(&c);
        }
    }
}
