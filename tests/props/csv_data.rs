//! CSV data: arbitrary bytes, structured rows of near-numbers and edits of a valid file.

use perturb::{Dataset, Error, Loss};
use proptest::prelude::*;

use crate::support::*;

/// The MSE reading of `text`; the cross-entropy reading (labels or probabilities) is made too and
/// held to the same invariants, its targets always `outputs` wide.
fn load_csv(text: &str, inputs: usize, outputs: usize) -> Option<Dataset> {
    if let Some(d) = load_csv_as(text, inputs, outputs, Loss::CrossEntropy) {
        check_dataset(&d, inputs, outputs);
        for row in d.y.rows() {
            let sum: f64 = row.iter().map(|&p| f64::from(p)).sum();
            assert!(row.iter().all(|&p| p >= 0.0), "{row}");
            assert!(
                (sum - 1.0).abs() <= perturb::data::PROBABILITY_SUM_TOLERANCE,
                "{row}"
            );
        }
    }
    load_csv_as(text, inputs, outputs, Loss::Mse)
}

fn load_csv_as(text: &str, inputs: usize, outputs: usize, loss: Loss) -> Option<Dataset> {
    match bounded(text, |t| {
        Dataset::from_csv(t, inputs, outputs, loss, "d.csv")
    }) {
        Ok(d) => Some(d),
        Err(Error::Data { origin, .. }) => {
            assert!(origin.starts_with("d.csv"), "{origin}");
            None
        }
        Err(e) => panic!("CSV loader ({loss:?}): untyped error {e:?}"),
    }
}

const CSV: &str = "x1,x2,y\n1,1,0\n0.5,-1,1\n\n-2e3, 4 ,0.25\n";

/// A CSV field: numbers, near-numbers, non-finite spellings and text.
fn csv_field() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<f32>().prop_map(|v| v.to_string()),
        1 => any::<i64>().prop_map(|v| v.to_string()),
        1 => prop::sample::select(vec![
            "", " ", "nan", "NaN", "inf", "-inf", "infinity", "1e39", "-1e39", "1e-50", "0x10",
            "1,5", "\"1\"", "1.2.3", "--1", "+1", ".5", "5.", "e5", "x", "é", "\t7\t",
        ])
        .prop_map(String::from),
        1 => "[0-9]{30,60}",
    ]
}

fn csv_text() -> impl Strategy<Value = String> {
    let row = prop::collection::vec(csv_field(), 0..6).prop_map(|f| f.join(","));
    (
        prop::collection::vec(row, 0..8),
        prop::sample::select(vec!["\n", "\r\n", "\n\n"]),
        any::<bool>(),
    )
        .prop_map(|(rows, nl, header)| {
            let mut text = if header {
                "a,b,c\n".to_string()
            } else {
                String::new()
            };
            text.push_str(&rows.join(nl));
            text
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn csv_loader_survives_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        inputs in 0usize..4,
        outputs in 0usize..3,
    ) {
        if let Some(d) = load_csv(&String::from_utf8_lossy(&bytes), inputs, outputs) {
            check_dataset(&d, inputs, outputs);
        }
    }

    #[test]
    fn csv_loader_survives_structured_rows(text in csv_text(), inputs in 0usize..4, outputs in 0usize..3) {
        if let Some(d) = load_csv(&text, inputs, outputs) {
            check_dataset(&d, inputs, outputs);
        }
    }

    #[test]
    fn csv_loader_survives_edits_of_a_valid_file(e in edits()) {
        if let Some(d) = load_csv(&apply(CSV, &e), 2, 1) {
            check_dataset(&d, 2, 1);
        }
    }

    #[test]
    fn csv_labels_come_back_as_the_one_hot_rows_they_name(
        labels in prop::collection::vec(0u32..7, 1..20),
        classes in 7usize..10,
    ) {
        let text: String = labels.iter().map(|l| format!("0.5,{l}\n")).collect();
        let d = Dataset::from_csv(&text, 1, classes, Loss::CrossEntropy, "d.csv").unwrap();
        prop_assert_eq!(d.y.dim(), (labels.len(), classes));
        prop_assert_eq!(d.labels(), Some(labels));
    }
}
