//! Mini-batch sweeps: every run of a sweep steps through the same batches (each epoch's order
//! drawn from the first run's seed), one evaluation per step for all, and each run equals the same
//! run trained alone bit for bit.

mod common;

use common::{gpu, random_data};
use perturb::optim::Optimizer;
use perturb::session::Backend;
use perturb::settings::Batching;
use perturb::train::Run;
use perturb::{Activation, Dataset, Device, Hyper, Model, Precision, Training};

const SEED: u64 = 3;
const BATCHING: Batching = Batching {
    size: 16,
    shuffle: true,
};

fn net() -> (Model, Dataset) {
    let model = Model::random(&[3, 8, 2], &[Activation::Tanh, Activation::Identity], 4).unwrap();
    let data = random_data(&model, 50, 9);
    (model, data)
}

/// lr × eps × optimiser, all with the sweep's first seed.
fn runs(model: &Model) -> Vec<Run> {
    let mut runs = Vec::new();
    for opt in [Optimizer::Sgd, Optimizer::momentum(), Optimizer::adam()] {
        for (lr, eps) in [(0.05, 1e-3), (0.1, 1e-4)] {
            let hyper = Hyper {
                epochs: 4,
                lr,
                eps,
                seed: SEED,
                ..Hyper::book()
            };
            runs.push(Run::new(hyper, model.params.clone()).with_optimizer(opt));
        }
    }
    runs
}

fn train(backend: impl Fn() -> Backend, runs: Vec<Run>) -> Vec<Run> {
    let (model, data) = net();
    Training::new(model, data)
        .backend(backend())
        .batching(BATCHING)
        .runs(runs)
        .run_all()
        .unwrap()
        .runs
}

fn assert_same(what: &str, sweep: &Run, alone: &Run) {
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(sweep.losses.len(), 4, "{what}: epochs run");
    assert_eq!(
        bits(&sweep.losses),
        bits(&alone.losses),
        "{what}: epoch losses"
    );
    assert_eq!(
        bits(&sweep.step_losses),
        bits(&alone.step_losses),
        "{what}: step losses"
    );
    if let Some(k) =
        (0..sweep.params.len()).find(|&k| sweep.params[k].to_bits() != alone.params[k].to_bits())
    {
        panic!(
            "{what}: parameter {k}: sweep {} vs alone {}",
            sweep.params[k], alone.params[k]
        );
    }
}

fn sweep_equals_single_runs(backend: impl Fn() -> Backend, device: &str) {
    let (model, _) = net();
    let swept = train(&backend, runs(&model));
    for (i, run) in runs(&model).into_iter().enumerate() {
        let alone = train(&backend, vec![run]);
        assert_same(&format!("{device} run {i}"), &swept[i], &alone[0]);
    }
}

/// On the CPU every run of a mini-batch sweep (sgd, momentum, adam; two lr/eps each) equals the
/// same run trained alone, bit for bit.
#[test]
fn minibatch_sweep_runs_equal_single_runs_on_the_cpu() {
    sweep_equals_single_runs(
        || Backend::open(&Device::Cpu(Precision::F32)).unwrap(),
        "cpu",
    );
}

/// The same on the GPU (each run of the sweep against the same run alone on the same adapter).
#[test]
fn minibatch_sweep_runs_equal_single_runs_on_the_gpu() {
    if gpu().is_none() {
        return;
    }
    sweep_equals_single_runs(|| Backend::Gpu(Box::new(gpu().unwrap())), "gpu");
}

/// A run whose seed is not the first run's trains on the first seed's batches: it differs from
/// itself trained alone, and equals the same run placed first in another sweep.
#[test]
fn the_batch_order_comes_from_the_first_runs_seed() {
    let (model, _) = net();
    let cpu = || Backend::open(&Device::Cpu(Precision::F32)).unwrap();
    let with_seed = |seed| {
        Run::new(
            Hyper {
                epochs: 4,
                lr: 0.05,
                seed,
                ..Hyper::book()
            },
            model.params.clone(),
        )
    };
    let swept = train(cpu, vec![with_seed(SEED), with_seed(SEED + 1)]);
    let alone = train(cpu, vec![with_seed(SEED + 1)]);
    assert_ne!(
        swept[1].params, alone[0].params,
        "the second run used its own order"
    );
    // Forward differences do not use the seed, so the second run is the first run exactly.
    assert_same(
        "second seed in the first seed's order",
        &swept[1],
        &swept[0],
    );
}

/// `perturb sweep --batch-size` trains every run in mini-batches; a run of the sweep reports the
/// losses `perturb train` reports for it alone.
#[test]
fn the_sweep_command_takes_a_batch_size() {
    let d = std::env::temp_dir().join(format!("perturb-sweep-batched-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let mut csv = String::new();
    for i in 0..20 {
        let (a, b) = (
            (i * 7 % 11) as f32 / 5.0 - 1.0,
            (i * 5 % 13) as f32 / 6.0 - 1.0,
        );
        csv += &format!("{a},{b},{}\n", a * b);
    }
    let data = d.join("data.csv");
    std::fs::write(&data, csv).unwrap();
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_perturb"))
            .args(args)
            .current_dir(&d)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let (sweep, single) = (d.join("sweep.json"), d.join("single.json"));
    let net = [
        "--data",
        data.to_str().unwrap(),
        "--layers",
        "2,4,1",
        "--device",
        "cpu",
        "--epochs",
        "3",
        "--batch-size",
        "6",
    ];
    let mut args = vec![
        "sweep",
        "--lr",
        "0.1,0.2",
        "--eps",
        "1e-3",
        "--report",
        sweep.to_str().unwrap(),
    ];
    args.extend(net);
    run(&args);
    let mut args = vec![
        "train",
        "--lr",
        "0.2",
        "--eps",
        "1e-3",
        "--quiet",
        "--report",
        single.to_str().unwrap(),
    ];
    args.extend(net);
    run(&args);
    let read = |p: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let (s, t) = (read(&sweep), read(&single));
    assert_eq!(s["runs"][1]["losses"], t["losses"], "sweep run 2 vs train");
}
