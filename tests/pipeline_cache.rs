//! The pipeline cache kept on disk (`src/gpu/pipeline_cache.rs`): written after a run, handed to
//! the driver by the next one, and never trusted when damaged or foreign.
//!
//! Every case trains the same step with and without a cache and requires the same bits: a cache
//! can only change how long pipelines take to build. The file format is rebuilt here independently
//! (magic `PRTBPC01`, data length and FNV-1a of the data, both u64 little-endian, then the data).
//! Vulkan adapters keep a cache; on others (GL) the tests check that none is made and say so.

mod common;

use common::gpu;
use perturb::fileio::fnv1a64;
use perturb::gpu::{AdapterOptions, CacheLoad, GpuContext, GpuEvaluator, GpuOptions};
use perturb::train::Evaluator;
use perturb::{Dataset, Method, Model};
use std::path::{Path, PathBuf};

/// The nudge of every step here (the book's).
const EPS: f32 = 1e-4;

/// A fresh directory of this test process for `what`.
fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("perturb-pcache-{}-{what}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn open(cache: Option<&Path>) -> GpuContext {
    GpuContext::new(&AdapterOptions {
        pipeline_cache: cache.map(Path::to_path_buf),
        ..AdapterOptions::from_env()
    })
    .unwrap()
}

/// The loss and every nudged difference of one reuse step of the book's example, as bits.
fn step_bits(ctx: GpuContext) -> Vec<u32> {
    let (model, data) = (Model::book(), Dataset::book());
    let opts = GpuOptions {
        method: Method::Reuse,
        ..GpuOptions::default()
    };
    let mut ev = GpuEvaluator::with_options(ctx, &model, &data, opts).unwrap();
    let mut deltas = vec![0.0f32; model.params.len()];
    let loss = ev.evaluate(&model.params, EPS, &mut deltas).unwrap();
    std::iter::once(loss)
        .chain(deltas)
        .map(f32::to_bits)
        .collect()
}

/// Asserts `got` equals the reference bits, naming the first index that differs.
fn assert_same_bits(what: &str, got: &[u32], want: &[u32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        panic!(
            "{what}: index {i} (0 = the loss): {} with the cache, {} without",
            f32::from_bits(got[i]),
            f32::from_bits(want[i])
        );
    }
}

/// A file in the cache's format around `data`.
fn wrapped(data: &[u8]) -> Vec<u8> {
    let mut f = b"PRTBPC01".to_vec();
    f.extend_from_slice(&(data.len() as u64).to_le_bytes());
    f.extend_from_slice(&fnv1a64(data).to_le_bytes());
    f.extend_from_slice(data);
    f
}

/// The cache file of `ctx`, or `None` after saying why this adapter keeps none.
fn cache_path(ctx: &GpuContext) -> Option<PathBuf> {
    match ctx.pipeline_cache() {
        Some(s) => Some(s.path.clone()),
        None => {
            assert_ne!(
                ctx.backend(),
                "vulkan",
                "a Vulkan adapter keeps a pipeline cache"
            );
            eprintln!("SKIPPED: {} keeps no pipeline cache", ctx.backend());
            None
        }
    }
}

/// The step's bits without a cache and a fresh directory for `what`, or `None` when there is no
/// adapter (after [`gpu`] has said so, or failed under CI).
fn reference(what: &str) -> Option<(Vec<u32>, PathBuf)> {
    drop(gpu()?);
    Some((step_bits(open(None)), temp_dir(what)))
}

#[test]
fn a_cache_written_by_one_run_is_loaded_by_the_next_and_changes_no_bit() {
    let Some((want, dir)) = reference("roundtrip") else {
        return;
    };
    let ctx = open(Some(&dir));
    let Some(path) = cache_path(&ctx) else { return };
    assert_eq!(path.parent(), Some(dir.as_path()));
    assert_eq!(ctx.pipeline_cache().unwrap().load, CacheLoad::Missing);
    assert_same_bits("first run", &step_bits(ctx), &want);
    let file = std::fs::read(&path).expect("the cache file is written when the device is dropped");
    assert_eq!(&file[..8], b"PRTBPC01");
    assert_eq!(
        file,
        wrapped(&file[24..]),
        "length and checksum in the header"
    );

    let ctx = open(Some(&dir));
    let load = ctx.pipeline_cache().unwrap().load.clone();
    assert_eq!(
        load,
        CacheLoad::Loaded {
            bytes: file.len() - 24
        }
    );
    assert_same_bits("second run", &step_bits(ctx), &want);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_damaged_or_foreign_cache_file_is_not_trusted_and_is_replaced() {
    let Some((want, dir)) = reference("damaged") else {
        return;
    };
    let ctx = open(Some(&dir));
    let Some(path) = cache_path(&ctx) else { return };
    assert_same_bits("writing run", &step_bits(ctx), &want);
    let good = std::fs::read(&path).unwrap();
    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 0x40;
    let mut foreign_data = b"WGPUPLCH".to_vec();
    foreign_data.extend((0..200u32).map(|i| (i * 37 % 251) as u8));
    let cases: [(&str, Vec<u8>, bool); 5] = [
        ("empty", Vec::new(), false),
        (
            "garbage",
            b"this is not a pipeline cache, only text".to_vec(),
            false,
        ),
        ("truncated", good[..good.len() - 1].to_vec(), false),
        ("flipped data byte", flipped, false),
        // Passes perturb's checksum, so it reaches wgpu, whose header check refuses it.
        ("foreign data", wrapped(&foreign_data), true),
    ];
    for (what, bytes, passes_checksum) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let ctx = open(Some(&dir));
        let load = ctx.pipeline_cache().unwrap().load.clone();
        match passes_checksum {
            true => assert!(matches!(load, CacheLoad::Loaded { .. }), "{what}: {load:?}"),
            false => assert!(matches!(load, CacheLoad::Ignored(_)), "{what}: {load:?}"),
        }
        assert_same_bits(what, &step_bits(ctx), &want);
        let after = std::fs::read(&path).unwrap();
        assert_ne!(after, bytes, "{what}: the file is replaced");
        assert_eq!(
            after,
            wrapped(&after[24..]),
            "{what}: the new file is whole"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_cache_directory_that_cannot_be_made_fails_nothing_and_touches_nothing() {
    let Some((want, dir)) = reference("blocked") else {
        return;
    };
    // A regular file where the cache directory would be: the cache cannot be written.
    let blocker = dir.join("not-a-dir");
    std::fs::write(&blocker, b"a user's file").unwrap();
    let ctx = open(Some(&blocker));
    if cache_path(&ctx).is_none() {
        return;
    }
    assert!(matches!(
        ctx.pipeline_cache().unwrap().load,
        CacheLoad::Ignored(_)
    ));
    assert_same_bits("blocked cache", &step_bits(ctx), &want);
    assert_eq!(std::fs::read(&blocker).unwrap(), b"a user's file");
    std::fs::remove_dir_all(&dir).unwrap();
}
