//! Hostile input for every loader (model JSON, CSV data, checkpoints, NumPy `.npy`/`.npz` models
//! and data): arbitrary bytes, random edits of valid files and structurally plausible but wrong
//! documents. No input may panic, take long, or allocate more than a fixed multiple of its own size
//! (for an `.npz`, of its unpacked size); whatever loads must satisfy the loader's invariants and
//! survive a round trip.

use perturb::checkpoint::Checkpoint;
use perturb::npy::{self, Values};
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
fn bounded<I: AsRef<[u8]> + ?Sized, T>(input: &I, load: impl FnOnce(&I) -> T) -> T {
    bounded_by(input.as_ref().len(), || load(input))
}

/// Runs `load`, asserting it is quick and its peak heap stays within the bound for `size` bytes of
/// input (the file's length, or an archive's unpacked length).
fn bounded_by<T>(size: usize, load: impl FnOnce() -> T) -> T {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let start = Instant::now();
    let out = load();
    let took = start.elapsed();
    let peak = PEAK.with(Cell::get) - base;
    let limit = ALLOC_PER_INPUT_BYTE * size + ALLOC_SLACK;
    assert!(took < SLOW, "took {took:?} on {size} bytes");
    assert!(
        peak <= limit,
        "peak heap {peak} bytes on {size} bytes of input (limit {limit})"
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
    String::from_utf8_lossy(&apply_bytes(text.as_bytes(), edits)).into_owned()
}

fn apply_bytes(bytes: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = bytes.to_vec();
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
    b
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

// NumPy files: `.npy` arrays, `.npz` models and data, `x.npy,y.npy` pairs.

fn load_npy(bytes: &[u8]) -> Option<npy::Array> {
    match bounded(bytes, npy::parse) {
        Ok(a) => Some(a),
        Err(message) => {
            assert!(!message.is_empty());
            None
        }
    }
}

/// A parsed array holds as many values as its shape says, and writes back to itself.
fn check_array(a: &npy::Array) {
    let count: usize = a.shape.iter().product();
    match &a.values {
        Values::Numbers(v) => {
            assert_eq!(v.len(), count, "{a:?}");
            let again = npy::parse(&npy::encode_f64(&a.shape, v)).unwrap();
            assert_eq!(again.shape, a.shape);
            let Values::Numbers(w) = again.values else {
                panic!("numbers came back as strings")
            };
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&w), bits(v));
        }
        Values::Strings(v) => assert_eq!(v.len(), count, "{a:?}"),
    }
}

/// A `.npy` file from its parts: version, header text (ended by '\n' when `newline`), data.
fn npy_file(major: u8, header: &str, newline: bool, data: &[u8]) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    if newline {
        h.push(b'\n');
    }
    let mut out = b"\x93NUMPY".to_vec();
    out.extend([major, 0]);
    if major == 1 {
        out.extend((h.len() as u16).to_le_bytes());
    } else {
        out.extend((h.len() as u32).to_le_bytes());
    }
    out.extend(h);
    out.extend(data);
    out
}

/// A `descr` value as header text and its item size: supported dtypes, unsupported and malformed
/// ones, structured (list) descriptions and random strings.
fn npy_descr() -> impl Strategy<Value = (String, usize)> {
    let known: Vec<(&str, usize)> = vec![
        ("'<f4'", 4),
        ("'<f8'", 8),
        ("'>f4'", 4),
        ("'>f8'", 8),
        ("'=f8'", 8),
        ("'|b1'", 1),
        ("'|i1'", 1),
        ("'<i2'", 2),
        ("'>i4'", 4),
        ("'<i8'", 8),
        ("'|u1'", 1),
        ("'<u2'", 2),
        ("'>u8'", 8),
        ("'<U1'", 4),
        ("'<U7'", 28),
        ("'>U2'", 8),
        ("'|S1'", 1),
        ("'|S5'", 5),
        ("\"<f4\"", 4),
    ];
    let hostile: Vec<(&str, usize)> = vec![
        ("'|O'", 8),
        ("'O'", 8),
        ("'<f2'", 2),
        ("'<c16'", 16),
        ("''", 1),
        ("'<'", 1),
        ("'<f'", 4),
        ("'<U0'", 1),
        ("'<U4097'", 4),
        ("'|S16385'", 1),
        ("'<U99999999999999999999'", 4),
        ("'<U4611686018427387904'", 4),
        ("'|S-1'", 1),
        ("'<V8'", 8),
        ("'<M8[ns]'", 8),
        ("'f4'", 4),
        ("'<i16'", 16),
        ("'<ff'", 4),
        ("'<f4\u{e9}'", 4),
        ("[('a', '<f4'), ('b', '<i2')]", 6),
        ("3", 1),
        ("None", 1),
    ];
    prop_oneof![
        4 => prop::sample::select(known).prop_map(|(d, n)| (d.to_string(), n)),
        2 => prop::sample::select(hostile).prop_map(|(d, n)| (d.to_string(), n)),
        1 => ("[<>|=]?[a-zA-Z]{0,2}[0-9]{0,22}", 1usize..9).prop_map(|(d, n)| (format!("'{d}'"), n)),
    ]
}

/// A dimension as header text and its value when it is one: small sizes, claims of 10^10 rows
/// and more, negative, non-integer and out-of-range dimensions.
fn npy_dim() -> impl Strategy<Value = (String, Option<u128>)> {
    let hostile: Vec<(&str, Option<u128>)> = vec![
        ("10000000000", Some(10_000_000_000)),
        ("2147483648", Some(1 << 31)),
        ("4294967297", Some((1 << 32) + 1)),
        ("9223372036854775807", Some(i64::MAX as u128)),
        ("18446744073709551615", None),
        ("99999999999999999999999", None),
        ("-1", None),
        ("-9223372036854775808", None),
        ("3L", Some(3)),
        ("'2'", None),
        ("2.0", None),
        ("(1,)", None),
        ("True", None),
        ("", None),
    ];
    prop_oneof![
        6 => (0u128..6).prop_map(|n| (n.to_string(), Some(n))),
        1 => prop::sample::select(hostile).prop_map(|(d, n)| (d.to_string(), n)),
    ]
}

/// A `shape` value as header text and its element count when it is a tuple of known dimensions.
fn npy_shape() -> impl Strategy<Value = (String, Option<u128>)> {
    prop_oneof![
        6 => (prop::collection::vec(npy_dim(), 0..6), any::<bool>()).prop_map(|(dims, list)| {
            let count = dims
                .iter()
                .try_fold(1u128, |a, (_, d)| d.map(|d| a.saturating_mul(d)));
            let text: Vec<&str> = dims.iter().map(|(t, _)| t.as_str()).collect();
            let text = match (list, &text[..]) {
                (true, _) => format!("[{}]", text.join(", ")),
                (false, [one]) => format!("({one},)"),
                (false, _) => format!("({})", text.join(", ")),
            };
            (text, count)
        }),
        // Many dimensions of 1 (NumPy allows 64) around a few elements.
        1 => (1usize..300, 1u128..4).prop_map(|(ones, n)| {
            (format!("({}{n},)", "1, ".repeat(ones)), Some(n))
        }),
        1 => prop::sample::select(vec!["3", "'(2, 3)'", "None", "{}", "((2, 3), 4)", "(2, 3"])
            .prop_map(|s| (s.to_string(), None)),
    ]
}

/// A `.npy` file with a structured but hostile header: any dtype, order and shape, keys missing,
/// repeated or extra, in any order, any version, and data of the claimed length or not.
fn npy_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        npy_descr(),
        prop::sample::select(vec!["False", "True", "1", "0", "'True'", "None"]),
        npy_shape(),
        prop::collection::vec(0u8..8, 3..7), // which entries, in order: 0-2 the keys, others extra
        prop::sample::select(vec![1u8, 1, 1, 2, 3, 0, 4]),
        any::<bool>(),
        prop_oneof![3 => Just(None), 1 => (0usize..300).prop_map(Some)],
        prop::collection::vec(any::<u8>(), 1..64),
    )
        .prop_map(
            |((descr, size), fortran, (shape, count), keys, major, newline, wrong_len, pattern)| {
                let entries: Vec<String> = keys
                    .iter()
                    .map(|k| match k {
                        0 => format!("'descr': {descr}"),
                        1 => format!("'fortran_order': {fortran}"),
                        2 => format!("'shape': {shape}"),
                        3 => "'extra': {'a': (1, [2, 3])}".to_string(),
                        _ => "'descr': '<f8'".to_string(),
                    })
                    .collect();
                let header = format!("{{{}, }}", entries.join(", "));
                let claimed = count
                    .and_then(|c| c.checked_mul(size as u128))
                    .filter(|&n| n <= 4096)
                    .map(|n| n as usize);
                let len = wrong_len.or(claimed).unwrap_or(pattern.len());
                let data: Vec<u8> = pattern.iter().copied().cycle().take(len).collect();
                npy_file(major, &header, newline, &data)
            },
        )
}

/// A valid float `.npy` of a small shape, as float32 or float64, with any values (NaN included).
fn float_npy() -> impl Strategy<Value = Vec<u8>> {
    (prop::collection::vec(0usize..4, 0..3), any::<bool>()).prop_flat_map(|(shape, wide)| {
        let count = shape.iter().product::<usize>();
        prop::collection::vec(any::<u64>(), count).prop_map(move |bits| {
            if wide {
                let v: Vec<f64> = bits.iter().map(|&b| f64::from_bits(b)).collect();
                npy::encode_f64(&shape, &v)
            } else {
                let v: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b as u32)).collect();
                npy::encode_f32(&shape, &v)
            }
        })
    })
}

/// The contents of one `.npz` member: a valid float or string array, a hostile `.npy`, or bytes.
fn npz_member() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => float_npy(),
        1 => prop::collection::vec(
            prop::sample::select(vec!["sigmoid", "tanh", "relu", "identity", "softmax", ""]),
            0..4,
        )
        .prop_map(|names| npy::encode_strings(&names)),
        3 => npy_bytes(),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

fn npz_name() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "W1",
            "b1",
            "W2",
            "b2",
            "W3",
            "b3",
            "W0",
            "b0",
            "W01",
            "Wx",
            "activations",
            "x",
            "y",
            "X",
            "",
            "dir/x",
        ]),
        prop::bool::weighted(0.9),
    )
        .prop_map(|(n, suffix)| if suffix { format!("{n}.npy") } else { n.into() })
}

/// An `.npz` (zip) of `members`, stored or deflated, and its unpacked size. Repeated names are
/// written once.
fn npz(members: &[(String, Vec<u8>)], deflate: bool) -> (Vec<u8>, usize) {
    use std::io::Write;
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let options = zip::write::SimpleFileOptions::default().compression_method(method);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut seen = std::collections::HashSet::new();
    let mut unpacked = 0;
    for (name, bytes) in members {
        if seen.insert(name.clone()) {
            zip.start_file(name.as_str(), options).unwrap();
            zip.write_all(bytes).unwrap();
            unpacked += bytes.len();
        }
    }
    (zip.finish().unwrap().into_inner(), unpacked)
}

/// Members of a consistent model `.npz` (layers whose widths chain, optional `activations`), with
/// one member dropped or replaced when `damage` says so.
fn model_npz_members() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    (
        prop::collection::vec(1usize..5, 2..5),
        any::<bool>(),
        prop_oneof![2 => Just(None), 1 => (any::<usize>(), prop::option::of(npz_member())).prop_map(Some)],
        any::<u64>(),
    )
        .prop_map(|(widths, activations, damage, seed)| {
            let mut members = Vec::new();
            let mut next = seed;
            let mut value = || {
                next = next.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((next >> 40) as f32 / (1u64 << 23) as f32) - 1.0
            };
            for (k, w) in widths.windows(2).enumerate() {
                let weights: Vec<f32> = (0..w[0] * w[1]).map(|_| value()).collect();
                let biases: Vec<f32> = (0..w[1]).map(|_| value()).collect();
                members.push((format!("W{}.npy", k + 1), npy::encode_f32(&[w[0], w[1]], &weights)));
                members.push((format!("b{}.npy", k + 1), npy::encode_f32(&[w[1]], &biases)));
            }
            if activations {
                let names = vec!["tanh"; widths.len() - 1];
                members.push(("activations.npy".into(), npy::encode_strings(&names)));
            }
            if let Some((at, replacement)) = damage {
                let at = at % members.len();
                match replacement {
                    Some(bytes) => members[at].1 = bytes,
                    None => {
                        members.remove(at);
                    }
                }
            }
            members
        })
}

fn load_npz_model(bytes: &[u8], unpacked: usize) -> Option<Model> {
    match bounded_by(bytes.len().max(unpacked), || {
        npy::model_from_npz(bytes, "m.npz")
    }) {
        Ok(m) => Some(m),
        Err(Error::Model { origin, .. }) => {
            assert_eq!(origin, "m.npz");
            None
        }
        Err(e) => panic!("npz model loader: untyped error {e:?}"),
    }
}

/// A model loaded from an `.npz` is consistent and writes back to itself (as JSON and as `.npz`).
fn check_npz_model(m: &Model) {
    check_model(m);
    let (bytes, _) = npz(&npy::model_arrays(m), false);
    assert_eq!(&npy::model_from_npz(&bytes, "again").unwrap(), m);
}

fn load_npz_data(bytes: &[u8], unpacked: usize) -> Option<Dataset> {
    match bounded_by(bytes.len().max(unpacked), || {
        npy::data_from_npz(bytes, "d.npz")
    }) {
        Ok(d) => Some(d),
        Err(Error::Data { origin, .. }) => {
            assert_eq!(origin, "d.npz");
            None
        }
        Err(e) => panic!("npz data loader: untyped error {e:?}"),
    }
}

/// A one-layer model of the given widths (what the `.npy` data loader needs to split columns).
fn model_of(inputs: usize, outputs: usize) -> Model {
    let layer = perturb::Layer {
        inputs,
        outputs,
        activation: perturb::Activation::Identity,
    };
    Model::new(vec![layer], vec![0.0; (inputs + 1) * outputs]).unwrap()
}

fn load_npy_data(bytes: &[u8], inputs: usize, outputs: usize) -> Option<Dataset> {
    let model = model_of(inputs, outputs);
    match bounded(bytes, |b| npy::data_from_npy(b, &model, "d.npy")) {
        Ok(d) => Some(d),
        Err(Error::Data { origin, .. }) => {
            assert_eq!(origin, "d.npy");
            None
        }
        Err(e) => panic!("npy data loader: untyped error {e:?}"),
    }
}

/// A data `.npy`: a float matrix of about the model's width, or any of [`npz_member`]'s.
fn data_npy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => (1usize..5, 1usize..7, any::<bool>(), any::<u32>()).prop_map(|(rows, cols, wide, seed)| {
            let v: Vec<f32> = (0..rows * cols).map(|i| (i as u32 ^ seed) as f32 / 7.0).collect();
            if wide {
                let v: Vec<f64> = v.iter().map(|&x| x as f64).collect();
                npy::encode_f64(&[rows, cols], &v)
            } else {
                npy::encode_f32(&[rows, cols], &v)
            }
        }),
        3 => npz_member(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn npy_parser_survives_arbitrary_bytes(
        magic in any::<bool>(),
        version in any::<[u8; 4]>(),
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut input = if magic { b"\x93NUMPY".to_vec() } else { Vec::new() };
        if magic {
            input.extend([version[0] % 4, version[1], version[2], version[3] % 2]);
        }
        input.extend(bytes);
        if let Some(a) = load_npy(&input) {
            check_array(&a);
        }
    }

    #[test]
    fn npy_parser_survives_hostile_headers(bytes in npy_bytes()) {
        if let Some(a) = load_npy(&bytes) {
            check_array(&a);
        }
    }

    #[test]
    fn npy_parser_survives_edits_of_a_valid_file(e in edits(), fortran in any::<bool>()) {
        let mut valid = npy::encode_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        if fortran {
            let at = valid.windows(5).position(|w| w == b"False").unwrap();
            valid.splice(at..at + 5, *b"True ");
        }
        if let Some(a) = load_npy(&apply_bytes(&valid, &e)) {
            check_array(&a);
        }
    }

    #[test]
    fn npy_parser_reads_every_valid_float_file_exactly(bytes in float_npy()) {
        let a = load_npy(&bytes).expect("a valid float .npy parses");
        check_array(&a);
    }

    #[test]
    fn npz_model_loader_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut input = b"PK\x03\x04".to_vec();
        input.extend(bytes);
        if let Some(m) = load_npz_model(&input, 0) {
            check_npz_model(&m);
        }
    }

    #[test]
    fn npz_model_loader_survives_hostile_members(
        members in prop::collection::vec((npz_name(), npz_member()), 0..6),
        deflate in any::<bool>(),
    ) {
        let (bytes, unpacked) = npz(&members, deflate);
        if let Some(m) = load_npz_model(&bytes, unpacked) {
            check_npz_model(&m);
        }
    }

    #[test]
    fn npz_model_loader_survives_damaged_models(members in model_npz_members(), deflate in any::<bool>()) {
        let (bytes, unpacked) = npz(&members, deflate);
        if let Some(m) = load_npz_model(&bytes, unpacked) {
            check_npz_model(&m);
        }
    }

    #[test]
    fn npz_model_loader_survives_edits_of_a_valid_archive(
        members in model_npz_members(),
        deflate in any::<bool>(),
        e in edits(),
    ) {
        let (bytes, unpacked) = npz(&members, deflate);
        if let Some(m) = load_npz_model(&apply_bytes(&bytes, &e), unpacked) {
            check_npz_model(&m);
        }
    }

    #[test]
    fn npz_data_loader_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut input = b"PK\x03\x04".to_vec();
        input.extend(bytes);
        if let Some(d) = load_npz_data(&input, 0) {
            check_dataset(&d, d.x.ncols(), d.y.ncols());
        }
    }

    #[test]
    fn npz_data_loader_survives_hostile_members(
        x in prop::option::weighted(0.9, data_npy()),
        y in prop::option::weighted(0.9, data_npy()),
        others in prop::collection::vec((npz_name(), npz_member()), 0..3),
        deflate in any::<bool>(),
    ) {
        let mut members: Vec<(String, Vec<u8>)> = Vec::new();
        members.extend(x.map(|b| ("x.npy".to_string(), b)));
        members.extend(y.map(|b| ("y.npy".to_string(), b)));
        members.extend(others);
        let (bytes, unpacked) = npz(&members, deflate);
        if let Some(d) = load_npz_data(&bytes, unpacked) {
            check_dataset(&d, d.x.ncols(), d.y.ncols());
        }
    }

    #[test]
    fn npy_data_loader_survives_hostile_arrays(bytes in data_npy(), inputs in 1usize..4, outputs in 1usize..3) {
        if let Some(d) = load_npy_data(&bytes, inputs, outputs) {
            check_dataset(&d, inputs, outputs);
        }
    }

    #[test]
    fn npy_data_loader_survives_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        inputs in 1usize..4,
        outputs in 1usize..3,
    ) {
        let mut input = b"\x93NUMPY\x01\x00".to_vec();
        input.extend(bytes);
        if let Some(d) = load_npy_data(&input, inputs, outputs) {
            check_dataset(&d, inputs, outputs);
        }
    }
}

proptest! {
    // Files on disk: fewer cases.
    #![proptest_config(ProptestConfig { cases: CASES / 4, ..ProptestConfig::default() })]

    #[test]
    fn npy_pair_data_loader_survives_hostile_files(x in data_npy(), y in data_npy()) {
        let dir = std::env::temp_dir().join(format!("perturb-props-{}-pair", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (xp, yp) = (dir.join("x.npy"), dir.join("y.npy"));
        std::fs::write(&xp, &x).unwrap();
        std::fs::write(&yp, &y).unwrap();
        let pair = std::path::PathBuf::from(format!("{},{}", xp.display(), yp.display()));
        let model = model_of(1, 1);
        let got = bounded_by(x.len() + y.len(), || perturb::files::load_data(&pair, &model));
        std::fs::remove_dir_all(&dir).unwrap();
        match got {
            Ok(d) => check_dataset(&d, d.x.ncols(), d.y.ncols()),
            Err(Error::Data { .. }) => {}
            Err(e) => panic!("npy pair loader: untyped error {e:?}"),
        }
    }
}

#[test]
fn npy_header_claiming_ten_billion_rows_allocates_nothing() {
    for descr in ["<f8", "|b1", "<U8"] {
        let header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (10000000000, 3), }}");
        let file = npy_file(1, &header, true, &[0; 64]);
        let message = bounded(&file[..], npy::parse).unwrap_err();
        assert!(message.contains("10000000000"), "{message}");
        let model = model_of(2, 1);
        assert!(bounded(&file[..], |f| npy::data_from_npy(f, &model, "d.npy")).is_err());
        let (zip, unpacked) = npz(
            &[("x.npy".into(), file.clone()), ("W1.npy".into(), file)],
            true,
        );
        assert!(load_npz_data(&zip, unpacked).is_none());
        assert!(load_npz_model(&zip, unpacked).is_none());
    }
}
