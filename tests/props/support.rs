//! Shared by all loaders' properties: heap and time bounds, random edits, model and data checks.

use perturb::{Dataset, Model};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// Cases per property: enough to find the bugs these found, quick enough for CI (seconds).
pub const CASES: u32 = 256;
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
pub fn bounded<I: AsRef<[u8]> + ?Sized, T>(input: &I, load: impl FnOnce(&I) -> T) -> T {
    bounded_by(input.as_ref().len(), || load(input))
}

/// Runs `load`, asserting it is quick and its peak heap stays within the bound for `size` bytes of
/// input (the file's length, or an archive's unpacked length).
pub fn bounded_by<T>(size: usize, load: impl FnOnce() -> T) -> T {
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

/// A loaded model is consistent and writes back to itself.
pub fn check_model(m: &Model) {
    assert!(m.params.iter().all(|p| p.is_finite()));
    assert_eq!(m.num_params(), m.weight_offset(m.layers().len()));
    let again = Model::from_json(&serde_json::to_string(&m.to_file()).unwrap(), "x").unwrap();
    assert_eq!(&again, m);
}

pub const BOOK_MODEL: &str = r#"{"layers": [
 {"weights": [[-0.0053, -0.5820, -0.2723], [0.3793, -0.5204, 0.1896]], "biases": [-0.0140, 0.5607, -0.0628], "activation": "sigmoid"},
 {"weights": [[0.1528], [-0.1745], [-0.1135]], "biases": [-0.5516], "activation": "identity"}]}"#;

/// Characters that matter to JSON and CSV syntax.
const SYNTAX: &[u8] = b"[]{},:\"\\ \n\r\t0123456789.-+eEaNnIifl";

/// One edit of a text: delete, insert or replace at a position (taken modulo the length).
#[derive(Clone, Debug)]
pub enum Edit {
    Delete(usize),
    Insert(usize, u8),
    Replace(usize, u8),
    Duplicate(usize, usize),
}

pub fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let byte = prop_oneof![prop::sample::select(SYNTAX), any::<u8>()];
    let edit = prop_oneof![
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), byte).prop_map(|(i, b)| Edit::Replace(i, b)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Duplicate(i, n)),
    ];
    prop::collection::vec(edit, 1..8)
}

pub fn apply(text: &str, edits: &[Edit]) -> String {
    String::from_utf8_lossy(&apply_bytes(text.as_bytes(), edits)).into_owned()
}

pub fn apply_bytes(bytes: &[u8], edits: &[Edit]) -> Vec<u8> {
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

pub fn check_dataset(d: &Dataset, inputs: usize, outputs: usize) {
    assert!(!d.is_empty());
    assert_eq!(d.x.dim(), (d.len(), inputs));
    assert_eq!(d.y.dim(), (d.len(), outputs));
    assert!(d.x.iter().chain(d.y.iter()).all(|v| v.is_finite()));
}
