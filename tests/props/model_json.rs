//! Model JSON: arbitrary bytes, edits, wrong structures and values; finite floats load exactly.

use perturb::{Error, Model};
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::support::*;

fn load_model(text: &str) -> Option<Model> {
    match bounded(text, |t| Model::from_json(t, "m.json")) {
        Ok(m) => Some(m),
        Err(Error::Model { origin, .. }) => {
            assert_eq!(origin, "m.json");
            None
        }
        Err(e) => panic!("model loader: untyped error {e:?}"),
    }
}

/// JSON numbers and non-numbers where a float belongs.
pub fn json_value() -> impl Strategy<Value = Value> + Clone {
    prop_oneof![
        4 => any::<f32>().prop_filter("finite", |v| v.is_finite()).prop_map(|v| json!(v)),
        1 => any::<f64>().prop_filter("finite", |v| v.is_finite()).prop_map(|v| json!(v)),
        1 => prop::sample::select(vec![json!(1e39), json!(-3.5e38), json!(u64::MAX), json!(-1)]),
        1 => prop::sample::select(vec![json!(null), json!("1"), json!([]), json!({}), json!(true)]),
    ]
}

fn layer_value() -> impl Strategy<Value = Value> {
    let row = prop::collection::vec(json_value(), 0..4);
    (
        prop::collection::vec(row, 0..4),
        prop::collection::vec(json_value(), 0..4),
        prop::sample::select(vec![
            "sigmoid", "tanh", "relu", "identity", "Tanh", "softmax", "",
        ]),
        any::<bool>(),
    )
        .prop_map(|(w, b, a, extra)| {
            let mut layer = json!({"weights": w, "biases": b, "activation": a});
            if extra {
                layer["dropout"] = json!(0.5);
            }
            layer
        })
}

/// Layers whose widths chain, with parameter values from `value`, and those values in order.
fn chained_layers<S: Strategy<Value = Value> + Clone>(
    value: S,
) -> impl Strategy<Value = (Value, Vec<Value>)> {
    prop::collection::vec(1usize..5, 2..5).prop_flat_map(move |widths| {
        let count = widths.windows(2).map(|w| (w[0] + 1) * w[1]).sum::<usize>();
        prop::collection::vec(value.clone(), count).prop_map(move |vals| {
            let mut it = vals.iter().cloned();
            let layers: Vec<Value> = widths
                .windows(2)
                .map(|w| {
                    let weights: Vec<Vec<Value>> = (0..w[0])
                        .map(|_| it.by_ref().take(w[1]).collect())
                        .collect();
                    let biases: Vec<Value> = it.by_ref().take(w[1]).collect();
                    json!({"weights": weights, "biases": biases, "activation": "tanh"})
                })
                .collect();
            (json!({ "layers": layers }), vals)
        })
    })
}

fn finite_f32() -> impl Strategy<Value = Value> + Clone {
    any::<u32>()
        .prop_map(f32::from_bits)
        .prop_filter("finite", |v| v.is_finite())
        .prop_map(|v| json!(v))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn model_loader_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Some(m) = load_model(&String::from_utf8_lossy(&bytes)) {
            check_model(&m);
        }
    }

    #[test]
    fn model_loader_survives_edits_of_a_valid_file(e in edits()) {
        if let Some(m) = load_model(&apply(BOOK_MODEL, &e)) {
            check_model(&m);
        }
    }

    #[test]
    fn model_loader_survives_wrong_structures(layers in prop::collection::vec(layer_value(), 0..4)) {
        if let Some(m) = load_model(&json!({ "layers": layers }).to_string()) {
            check_model(&m);
        }
    }

    #[test]
    fn model_loader_survives_chained_layers_with_wrong_values((doc, _) in chained_layers(json_value())) {
        if let Some(m) = load_model(&doc.to_string()) {
            check_model(&m);
        }
    }

    #[test]
    fn model_loader_takes_every_finite_f32_exactly((doc, vals) in chained_layers(finite_f32())) {
        let m = load_model(&doc.to_string()).expect("a consistent finite model loads");
        check_model(&m);
        let want: Vec<u32> = vals.iter().map(|v| (v.as_f64().unwrap() as f32).to_bits()).collect();
        let got: Vec<u32> = m.params.iter().map(|p| p.to_bits()).collect();
        prop_assert_eq!(got, want);
    }
}
