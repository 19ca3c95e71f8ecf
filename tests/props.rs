//! Hostile input for every loader (model JSON, CSV data, checkpoints): arbitrary bytes, random
//! edits of valid files and structurally plausible but wrong documents. No input may panic, take
//! long, or allocate more than a fixed multiple of its own size; whatever loads must satisfy the
//! loader's invariants and survive a round trip.
//!
//! (The npy/npz loaders live on another branch; add them here when they land.)

use perturb::checkpoint::Checkpoint;
use perturb::{Dataset, Error, Model};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// Cases per property: enough to find the bugs these found, quick enough for CI (seconds).
const CASES: u32 = 256;
/// Peak heap a loader may use: this many times its input's length…
const ALLOC_PER_INPUT_BYTE: usize = 64;
/// …plus this much.
const ALLOC_SLACK: usize = 1 << 20;
/// Longest a loader may take on inputs of these sizes (a few KiB; real times are microseconds).
const SLOW: Duration = Duration::from_secs(2);

/// Counts this thread's live and peak heap bytes, so that each property measures its own loader
/// even while the harness runs properties on several threads.
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn track(add: usize, sub: usize) {
    // `try_with`: the thread-locals may be gone while a thread shuts down.
    let _ = LIVE.try_with(|live| {
        let now = (live.get() + add).saturating_sub(sub);
        live.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size(), 0);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(0, layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(new_size, layout.size());
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `load` on `input`, asserting it is quick and its peak heap stays within the bound.
fn bounded<T>(input: &str, load: impl FnOnce(&str) -> T) -> T {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let start = Instant::now();
    let out = load(input);
    let took = start.elapsed();
    let peak = PEAK.with(Cell::get) - base;
    let limit = ALLOC_PER_INPUT_BYTE * input.len() + ALLOC_SLACK;
    assert!(took < SLOW, "took {took:?} on {} bytes", input.len());
    assert!(
        peak <= limit,
        "peak heap {peak} bytes on {} bytes of input (limit {limit})",
        input.len()
    );
    out
}

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

fn load_csv(text: &str, inputs: usize, outputs: usize) -> Option<Dataset> {
    match bounded(text, |t| Dataset::from_csv(t, inputs, outputs, "d.csv")) {
        Ok(d) => Some(d),
        Err(Error::Data { origin, .. }) => {
            assert!(origin.starts_with("d.csv"), "{origin}");
            None
        }
        Err(e) => panic!("CSV loader: untyped error {e:?}"),
    }
}

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

/// A loaded model is consistent and writes back to itself.
fn check_model(m: &Model) {
    assert!(m.params.iter().all(|p| p.is_finite()));
    assert_eq!(m.num_params(), m.weight_offset(m.layers().len()));
    let again = Model::from_json(&serde_json::to_string(&m.to_file()).unwrap(), "x").unwrap();
    assert_eq!(&again, m);
}

const BOOK_MODEL: &str = r#"{"layers": [
 {"weights": [[-0.0053, -0.5820, -0.2723], [0.3793, -0.5204, 0.1896]], "biases": [-0.0140, 0.5607, -0.0628], "activation": "sigmoid"},
 {"weights": [[0.1528], [-0.1745], [-0.1135]], "biases": [-0.5516], "activation": "identity"}]}"#;

const CSV: &str = "x1,x2,y\n1,1,0\n0.5,-1,1\n\n-2e3, 4 ,0.25\n";

fn checkpoint_text() -> String {
    let text = format!(
        r#"{{"format":"perturb-checkpoint","version":1,"epochs_done":2,
        "settings":{{"epochs":5,"lr":0.01,"eps":0.0001,"seed":null,"precision":"f32",
        "method":"naive","device":"cpu","loop":"host","data":null,"extra":{{"k":"v"}}}},
        "losses":[0.3,"NaN"],"model":{BOOK_MODEL}}}"#
    );
    assert!(
        Checkpoint::from_json(&text, "c").is_ok(),
        "the seed checkpoint loads"
    );
    text
}

/// Characters that matter to JSON and CSV syntax.
const SYNTAX: &[u8] = b"[]{},:\"\\ \n\r\t0123456789.-+eEaNnIifl";

/// One edit of a text: delete, insert or replace at a position (taken modulo the length).
#[derive(Clone, Debug)]
enum Edit {
    Delete(usize),
    Insert(usize, u8),
    Replace(usize, u8),
    Duplicate(usize, usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let byte = prop_oneof![prop::sample::select(SYNTAX), any::<u8>()];
    let edit = prop_oneof![
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), byte).prop_map(|(i, b)| Edit::Replace(i, b)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Duplicate(i, n)),
    ];
    prop::collection::vec(edit, 1..8)
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut b = text.as_bytes().to_vec();
    for e in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
        match *e {
            Edit::Delete(i) if !b.is_empty() => {
                b.remove(at(i, b.len()));
            }
            Edit::Delete(_) => {}
            Edit::Insert(i, c) => b.insert(at(i, b.len() + 1), c),
            Edit::Replace(i, c) if !b.is_empty() => {
                let i = at(i, b.len());
                b[i] = c;
            }
            Edit::Replace(..) => {}
            Edit::Duplicate(i, n) => {
                let i = at(i, b.len() + 1);
                let end = (i + n).min(b.len());
                let piece = b[i..end].to_vec();
                b.splice(i..i, piece);
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// JSON numbers and non-numbers where a float belongs.
fn json_value() -> impl Strategy<Value = Value> + Clone {
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

fn check_dataset(d: &Dataset, inputs: usize, outputs: usize) {
    assert!(!d.is_empty());
    assert_eq!(d.x.dim(), (d.len(), inputs));
    assert_eq!(d.y.dim(), (d.len(), outputs));
    assert!(d.x.iter().chain(d.y.iter()).all(|v| v.is_finite()));
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
