//! `--shard`: a step split over this machine's adapters (here lavapipe on Vulkan and llvmpipe on
//! GL, which agree bit for bit) trains exactly as one adapter does, over a grid of method ×
//! estimator × loss × full/mini-batch, for sweeps, and through the CLI's report; shares cut at any
//! parameter gather to the whole probe; the resident loop refuses a split step.
//!
//! Two adapters are required under CI (`CI` or `PERTURB_REQUIRE_GPU=1`): with fewer the tests fail.

mod common;

use common::random_data;
use perturb::cpu::CpuEvaluator;
use perturb::error::{Error, Setting};
use perturb::estimate::{Estimator, Probe, Shape};
use perturb::gpu::{open_adapters, AdapterOptions, GpuContext, GpuEvaluator, GpuOptions};
use perturb::optim::Optimizer;
use perturb::rng::Direction;
use perturb::session::Backend;
use perturb::settings::{Batching, Loop};
use perturb::shard::{ShardedEvaluator, Share};
use perturb::train::{Evaluator, Run};
use perturb::{Activation, Dataset, Hyper, Loss, Method, Model, Trained, Training};
use std::process::Command;

const SAMPLES: usize = 20;
const EPOCHS: usize = 3;
/// Mini-batches of 8 leave a remainder batch of 4.
const BATCH: usize = 8;

/// Every compute adapter on Vulkan and GL (whatever WGPU_BACKEND says), or `None` after saying the
/// test is skipped; under CI fewer than two fail the test.
fn adapters() -> Option<Vec<GpuContext>> {
    let opts = AdapterOptions {
        backend: Some("vulkan,gl".into()),
        ..AdapterOptions::default()
    };
    let found = open_adapters(&opts, &[]);
    let count = found.as_ref().map_or(0, Vec::len);
    if count >= 2 {
        return found.ok();
    }
    let required = std::env::var_os("CI").is_some()
        || std::env::var("PERTURB_REQUIRE_GPU").as_deref() == Ok("1");
    assert!(
        !required,
        "sharding needs two adapters and CI requires them; found {count}: {:?}",
        found.err()
    );
    eprintln!("SKIPPED: {count} adapter(s), sharding needs two");
    None
}

/// Three layers, so that the reuse method runs its deep, sequential and fused kernels.
fn net(loss: Loss) -> (Model, Dataset) {
    let model = Model::random(
        &[3, 8, 6, 3],
        &[Activation::Tanh, Activation::Sigmoid, Activation::Identity],
        5,
    )
    .unwrap();
    let mut data = random_data(&model, SAMPLES, 11);
    if loss == Loss::CrossEntropy {
        // One-hot class labels.
        data.y
            .indexed_iter_mut()
            .for_each(|((s, o), v)| *v = ((s % 3) == o) as u8 as f32);
    }
    (model, data)
}

fn estimators(method: Method) -> Vec<Estimator> {
    let mut all = vec![
        Estimator::Forward,
        Estimator::Central,
        Estimator::Richardson,
    ];
    if method == Method::Naive {
        all.push(Estimator::Spsa {
            samples: 3,
            direction: Direction::Rademacher,
        });
    }
    all
}

struct Case {
    method: Method,
    estimator: Estimator,
    loss: Loss,
    batch: usize,
}

fn train(backend: Backend, c: &Case) -> Trained {
    let (model, data) = net(c.loss);
    Training::new(model, data)
        .backend(backend)
        .method(c.method)
        .loss(c.loss)
        .optimizer(if c.batch == 0 {
            Optimizer::Sgd
        } else {
            Optimizer::adam()
        })
        .batching(Batching {
            size: c.batch,
            shuffle: true,
        })
        .hyper(Hyper {
            epochs: EPOCHS,
            lr: 0.05,
            eps: 1e-3,
            estimator: c.estimator,
            seed: 7,
            ..Hyper::book()
        })
        .run()
        .unwrap()
}

/// The first index where two float slices differ in bits, with both values.
fn first_difference<T: Copy + std::fmt::Debug>(
    a: &[T],
    b: &[T],
    bits: impl Fn(T) -> u64,
) -> Option<(usize, T, T)> {
    if a.len() != b.len() {
        return Some((a.len().min(b.len()), a[0], b[0]));
    }
    (0..a.len())
        .find(|&i| bits(a[i]) != bits(b[i]))
        .map(|i| (i, a[i], b[i]))
}

/// Shards listed in order, covering [0, P) without gap or overlap.
fn assert_covers(what: &str, shards: &[[usize; 2]], p: usize) {
    let mut at = 0;
    for (i, s) in shards.iter().enumerate() {
        assert_eq!(
            s[0], at,
            "{what}: shard {i} starts at {} not {at}: {shards:?}",
            s[0]
        );
        assert!(s[1] >= s[0], "{what}: shard {i} runs backwards: {shards:?}");
        at = s[1];
    }
    assert_eq!(at, p, "{what}: shards end at {at}, not P = {p}: {shards:?}");
}

#[test]
fn a_step_split_over_two_adapters_trains_bit_for_bit_as_one_adapter() {
    let Some(ctxs) = adapters() else { return };
    let one = Backend::Gpu(Box::new(ctxs[0].clone()));
    let split = Backend::Shards(ctxs.clone());
    for method in [Method::Naive, Method::Reuse] {
        for estimator in estimators(method) {
            for loss in [Loss::Mse, Loss::CrossEntropy] {
                for batch in [0, BATCH] {
                    let c = Case {
                        method,
                        estimator,
                        loss,
                        batch,
                    };
                    let what = format!("{method:?} {} {loss:?} batch {batch}", estimator.name());
                    let a = train(one.clone(), &c);
                    let b = train(split.clone(), &c);
                    assert_eq!(a.losses.len(), EPOCHS, "{what}: epochs");
                    if let Some((i, x, y)) = first_difference(&a.losses, &b.losses, f64::to_bits) {
                        panic!("{what}: epoch {i} loss: one adapter {x:e}, split {y:e}");
                    }
                    let bits = |v: f32| v.to_bits() as u64;
                    if let Some((k, x, y)) =
                        first_difference(&a.model.params, &b.model.params, bits)
                    {
                        panic!("{what}: parameter {k}: one adapter {x:e}, split {y:e}");
                    }
                    assert_eq!(b.device.shards.len(), ctxs.len(), "{what}: shards listed");
                    let ranges: Vec<[usize; 2]> =
                        b.device.shards.iter().map(|s| s.params).collect();
                    assert_covers(&what, &ranges, a.model.num_params());
                    let spsa = matches!(estimator, Estimator::Spsa { .. });
                    for s in &b.device.shards {
                        assert_eq!(s.evaluations.is_some(), spsa, "{what}: {s:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn a_sweep_split_over_two_adapters_equals_one_adapter() {
    let Some(ctxs) = adapters() else { return };
    let (model, data) = net(Loss::Mse);
    let runs = || -> Vec<Run> {
        [(0.05, 1e-3), (0.1, 1e-4), (0.02, 1e-3)]
            .into_iter()
            .map(|(lr, eps)| {
                let hyper = Hyper {
                    epochs: EPOCHS,
                    lr,
                    eps,
                    estimator: Estimator::Central,
                    ..Hyper::book()
                };
                Run::new(hyper, model.params.clone()).with_optimizer(Optimizer::momentum())
            })
            .collect()
    };
    let sweep = |backend: Backend| {
        Training::new(model.clone(), data.clone())
            .backend(backend)
            .method(Method::Reuse)
            .runs(runs())
            .run_all()
            .unwrap()
    };
    let a = sweep(Backend::Gpu(Box::new(ctxs[1].clone())));
    let b = sweep(Backend::Shards(ctxs.clone()));
    for (r, (x, y)) in a.runs.iter().zip(&b.runs).enumerate() {
        if let Some((i, u, v)) = first_difference(&x.losses, &y.losses, f64::to_bits) {
            panic!("run {r}: epoch {i} loss: one adapter {u:e}, split {v:e}");
        }
        let bits = |v: f32| v.to_bits() as u64;
        if let Some((k, u, v)) = first_difference(&x.params, &y.params, bits) {
            panic!("run {r}: parameter {k}: one adapter {u:e}, split {v:e}");
        }
    }
}

/// One probe: `[L, values…]`.
fn probe_once<E: Evaluator<Loss = f32>>(ev: &mut E, params: &[f32], probe: Probe) -> Vec<f32> {
    let mut loss = [0.0f32];
    let mut values = vec![f32::NAN; probe.len(params.len())];
    ev.probe(params, &[probe], &[true], &mut loss, &mut values)
        .unwrap();
    std::iter::once(loss[0]).chain(values).collect()
}

/// Cuts every probe shape at parameters inside units, at layer edges and at the ends: the two
/// shares, each on its own adapter, gather to exactly what one evaluator computes for all.
#[test]
fn shares_cut_anywhere_gather_to_the_whole_probe() {
    let Some(ctxs) = adapters() else { return };
    let (model, data) = net(Loss::Mse);
    let p = model.num_params();
    let spsa = Probe::Directions {
        eps: 1e-3,
        seed: 3,
        step: 1,
        samples: 4,
        direction: Direction::Gaussian,
    };
    let shapes = [
        (Method::Naive, Probe::coordinates(&[1e-3])),
        (Method::Naive, Probe::coordinates(&[1e-3, -1e-3])),
        (Method::Naive, spsa),
        (Method::Reuse, Probe::coordinates(&[1e-3])),
        (
            Method::Reuse,
            Probe::coordinates(&[1e-3, -1e-3, 5e-4, -5e-4]),
        ),
    ];
    // Mid-unit, at the first layer's end (32) and the last layers' (86, 107), at both ends.
    let cuts = [0, 1, 5, 31, 32, 33, 50, 85, 86, 87, 95, 100, 106, 107];
    for (method, probe) in shapes {
        let opts = |share| GpuOptions {
            method,
            shape: probe.shape(),
            share,
            ..Default::default()
        };
        let build = |ctx: &GpuContext, share| {
            GpuEvaluator::with_options(ctx.clone(), &model, &data, opts(share)).unwrap()
        };
        let whole = probe_once(&mut build(&ctxs[0], Share::ALL), &model.params, probe);
        let n = match probe.shape() {
            Shape::Coordinates(_) => p,
            Shape::Directions(q) => 2 * q as usize,
        };
        for &cut in cuts.iter().filter(|&&c| c <= n) {
            let speeds = vec![cut as u64, (n - cut) as u64];
            let shares = perturb::shard::shares(p, probe.shape(), &speeds);
            assert_eq!(shares[0].range(n), 0..cut, "the rule cuts where asked");
            let parts = vec![build(&ctxs[0], shares[0]), build(&ctxs[1], shares[1])];
            let mut split = ShardedEvaluator::new(parts, speeds, probe.shape()).unwrap();
            let got = probe_once(&mut split, &model.params, probe);
            let bits = |v: f32| v.to_bits() as u64;
            if let Some((i, x, y)) = first_difference(&whole, &got, bits) {
                panic!(
                    "{method:?} {:?} cut at {cut}: value {i} (0 = the loss): whole {x:e}, split {y:e}",
                    probe.shape()
                );
            }
        }
    }
}

/// The CPU reference's shares (what `--distributed mpi --device cpu` ranks compute) gather the
/// same way, for every method and shape.
#[test]
fn cpu_shares_cut_anywhere_gather_to_the_whole_probe() {
    let (model, data) = net(Loss::CrossEntropy);
    let p = model.num_params();
    let spsa = Probe::Directions {
        eps: 1e-3,
        seed: 3,
        step: 1,
        samples: 4,
        direction: Direction::Rademacher,
    };
    let shapes = [
        (Method::Naive, Probe::coordinates(&[1e-3, -1e-3])),
        (Method::Naive, spsa),
        (
            Method::Reuse,
            Probe::coordinates(&[1e-3, -1e-3, 5e-4, -5e-4]),
        ),
    ];
    for (method, probe) in shapes {
        let build = |share| {
            let mut ev =
                CpuEvaluator::<f32>::with_options(&model, &data, method, Loss::CrossEntropy)
                    .unwrap();
            ev.set_share(share);
            ev
        };
        let whole = probe_once(&mut build(Share::ALL), &model.params, probe);
        let n = perturb::shard::share_len(p, probe.shape());
        for cut in [0, 1, 7, 32, 33, 86, 100, n]
            .into_iter()
            .filter(|&c| c <= n)
        {
            let speeds = vec![cut as u64, (n - cut) as u64];
            let shares = perturb::shard::shares(p, probe.shape(), &speeds);
            let parts = vec![build(shares[0]), build(shares[1])];
            let mut split = ShardedEvaluator::new(parts, speeds, probe.shape()).unwrap();
            let got = probe_once(&mut split, &model.params, probe);
            let bits = |v: f32| v.to_bits() as u64;
            if let Some((i, x, y)) = first_difference(&whole, &got, bits) {
                panic!(
                    "{method:?} {:?} cut at {cut}: value {i} (0 = the loss): whole {x:e}, split {y:e}",
                    probe.shape()
                );
            }
        }
    }
}

#[test]
fn the_resident_loop_refuses_a_split_step() {
    let Some(ctxs) = adapters() else { return };
    let (model, data) = net(Loss::Mse);
    let err = Training::new(model, data)
        .backend(Backend::Shards(ctxs))
        .looping(Loop::Resident(10))
        .run()
        .unwrap_err();
    match &err {
        Error::Unsupported { given, .. } => assert!(
            given.iter().any(|(s, _)| *s == Setting::Shard),
            "the refusal names the sharding: {err}"
        ),
        other => panic!("expected a refusal naming --shard, got {other:?}"),
    }
}

fn perturb(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(args)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run perturb")
}

fn report(args: &[&str], path: &std::path::Path) -> serde_json::Value {
    let path_s = path.display().to_string();
    let mut all = args.to_vec();
    all.extend(["--report", path_s.as_str(), "--quiet"]);
    let o = perturb(&all);
    assert!(
        o.status.success(),
        "perturb {all:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn train_with_shard_all_writes_the_one_adapter_report_and_lists_the_shards() {
    let Some(ctxs) = adapters() else { return };
    let dir = std::env::temp_dir().join(format!("perturb-shard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let args = [
        "train",
        "--layers",
        "2,5,4,1",
        "--activations",
        "tanh,sigmoid,identity",
        "--epochs",
        "5",
        "--method",
        "reuse",
        "--estimator",
        "central",
        "--backend",
        "vulkan,gl",
    ];
    let one = report(&args, &dir.join("one.json"));
    let mut sharded = args.to_vec();
    sharded.extend(["--shard", "all"]);
    let two = report(&sharded, &dir.join("two.json"));
    for key in ["losses", "step_losses", "model", "predictions", "settings"] {
        assert_eq!(one[key], two[key], "report field {key:?}");
    }
    let shards = two["device"]["shards"].as_array().expect("device.shards");
    assert_eq!(shards.len(), ctxs.len(), "{shards:?}");
    let ranges: Vec<[usize; 2]> = shards
        .iter()
        .map(|s| {
            assert!(s["adapter"].is_string() && s["backend"].is_string(), "{s}");
            let r = s["params"].as_array().unwrap();
            [
                r[0].as_u64().unwrap() as usize,
                r[1].as_u64().unwrap() as usize,
            ]
        })
        .collect();
    let backends: Vec<&str> = shards
        .iter()
        .map(|s| s["backend"].as_str().unwrap())
        .collect();
    assert!(
        backends.contains(&"vulkan") && backends.contains(&"gl"),
        "{backends:?}"
    );
    // 2·5 + 5 + 5·4 + 4 + 4·1 + 1 parameters.
    assert_covers("report", &ranges, 44);
    assert!(
        one["device"].get("shards").is_none(),
        "one adapter lists no shards"
    );
}

#[test]
fn bad_shard_flags_are_refused_with_one_line() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["train", "--shard", "all", "--loop", "resident"],
            "--shard",
        ),
        (
            &["train", "--shard", "all", "--device", "cpu"],
            "--device gpu",
        ),
        (&["train", "--shard", " , "], "--shard"),
        (
            &["train", "--shard", "all", "--adapter", "llvmpipe"],
            "--adapter",
        ),
    ];
    for (args, needle) in cases {
        let o = perturb(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "perturb {args:?} should fail");
        assert!(
            !err.contains("panicked"),
            "perturb {args:?} panicked: {err}"
        );
        assert!(
            err.contains(needle),
            "perturb {args:?}: {err:?} should name {needle}"
        );
    }
    let o = perturb(&["train", "--shard", "no-such-adapter", "--epochs", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "an unknown adapter: {err}");
    assert!(err.contains("no-such-adapter"), "{err}");
}

/// A build without the `mpi` feature refuses `--distributed mpi` in one line naming the rebuild.
#[cfg(not(feature = "mpi"))]
#[test]
fn distributed_mpi_without_the_feature_is_one_clear_error() {
    let o = perturb(&["train", "--distributed", "mpi", "--epochs", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a setting this build cannot honour: {err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("--distributed") && err.contains("--features mpi"),
        "{err}"
    );
}
