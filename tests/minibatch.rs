//! Mini-batches and optimisers: GPU = CPU bit for bit over a grid (method × optimiser × batch
//! size), the full batch unchanged by the batching machinery, the epoch loss as the mean of its
//! steps, and a checkpointed run resuming into the uninterrupted one.

mod common;

use common::{assert_ulp_close, gpu, max_ulp, random_data};
use perturb::optim::Optimizer;
use perturb::session::Backend;
use perturb::settings::Batching;
use perturb::{Activation, Dataset, Device, Hyper, Method, Model, Trained, Training};

/// Samples in the grid's data: 16 leaves a remainder batch of 2, 10 divides it.
const SAMPLES: usize = 50;
const BATCH_SIZES: [usize; 2] = [16, 10];
const EPOCHS: usize = 6;

fn net() -> (Model, Dataset) {
    let model = Model::random(&[3, 8, 2], &[Activation::Tanh, Activation::Identity], 4).unwrap();
    let data = random_data(&model, SAMPLES, 9);
    (model, data)
}

fn optimizers() -> [Optimizer; 3] {
    [Optimizer::Sgd, Optimizer::momentum(), Optimizer::adam()]
}

fn train(backend: Backend, method: Method, opt: Optimizer, batch: usize) -> Trained {
    let (model, data) = net();
    Training::new(model, data)
        .backend(backend)
        .method(method)
        .optimizer(opt)
        .batching(Batching {
            size: batch,
            shuffle: true,
        })
        .hyper(Hyper {
            epochs: EPOCHS,
            lr: 0.05,
            seed: 3,
            ..Hyper::book()
        })
        .run()
        .unwrap()
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn minibatch_runs_are_bit_for_bit_the_same_on_the_gpu_and_the_cpu() {
    let Some(ctx) = gpu() else { return };
    let budget = max_ulp(&ctx);
    let gpu_backend = Backend::Gpu(Box::new(ctx));
    for method in [Method::Naive, Method::Reuse] {
        for opt in optimizers() {
            for batch in BATCH_SIZES {
                let what = format!("{method:?} {} batch {batch}", opt.name());
                let cpu = train(Backend::Cpu(perturb::Precision::F32), method, opt, batch);
                let gpu = train(gpu_backend.clone(), method, opt, batch);
                assert_eq!(gpu.losses.len(), EPOCHS, "{what}");
                let losses32 =
                    |t: &Trained| -> Vec<f32> { t.losses.iter().map(|&l| l as f32).collect() };
                assert_ulp_close(
                    &format!("{what}: epoch losses"),
                    &losses32(&gpu),
                    &losses32(&cpu),
                    budget,
                );
                assert_ulp_close(
                    &format!("{what}: parameters"),
                    &gpu.model.params,
                    &cpu.model.params,
                    budget,
                );
            }
        }
    }
}

#[test]
fn an_epoch_is_every_sample_once_and_its_loss_the_mean_of_its_steps() {
    for batch in BATCH_SIZES {
        let run = train(
            Backend::Cpu(perturb::Precision::F64),
            Method::Naive,
            Optimizer::Sgd,
            batch,
        );
        let per_epoch = SAMPLES.div_ceil(batch);
        let (model, data) = net();
        let steps = Training::new(model, data)
            .device(Device::cpu_f64())
            .batching(Batching {
                size: batch,
                shuffle: true,
            })
            .hyper(Hyper {
                epochs: EPOCHS,
                lr: 0.05,
                seed: 3,
                ..Hyper::book()
            })
            .run_all()
            .unwrap()
            .runs
            .remove(0)
            .step_losses;
        assert_eq!(steps.len(), EPOCHS * per_epoch, "batch {batch}");
        for (e, chunk) in steps.chunks(per_epoch).enumerate() {
            let mean = chunk.iter().sum::<f64>() / chunk.len() as f64;
            assert_eq!(
                mean.to_bits(),
                run.losses[e].to_bits(),
                "batch {batch}, epoch {}",
                e + 1
            );
        }
    }
}

#[test]
fn a_full_batch_is_the_books_step_whatever_the_batching_says() {
    let (model, data) = net();
    let base = |b: Batching| {
        Training::new(model.clone(), data.clone())
            .device(Device::cpu())
            .batching(b)
            .hyper(Hyper {
                epochs: EPOCHS,
                lr: 0.05,
                ..Hyper::book()
            })
            .run()
            .unwrap()
    };
    let book = base(Batching::full());
    for b in [SAMPLES, SAMPLES + 7] {
        let same = base(Batching {
            size: b,
            shuffle: true,
        });
        assert_eq!(bits(&same.losses), bits(&book.losses), "batch {b}");
        assert_eq!(same.model.params, book.model.params, "batch {b}");
    }
}

#[test]
fn shuffling_changes_the_trajectory_and_no_shuffle_keeps_file_order() {
    let (model, data) = net();
    let run = |shuffle: bool, seed: u64| {
        Training::new(model.clone(), data.clone())
            .device(Device::cpu())
            .batching(Batching { size: 16, shuffle })
            .hyper(Hyper {
                epochs: 2,
                lr: 0.05,
                seed,
                ..Hyper::book()
            })
            .run()
            .unwrap()
            .losses
    };
    assert_ne!(
        bits(&run(true, 1)),
        bits(&run(true, 2)),
        "the seed draws the order"
    );
    assert_eq!(
        bits(&run(false, 1)),
        bits(&run(false, 2)),
        "file order ignores the seed"
    );
    assert_ne!(bits(&run(true, 1)), bits(&run(false, 1)));
}

#[test]
fn a_resumed_minibatch_adam_run_equals_the_uninterrupted_run_bit_for_bit() {
    let (model, data) = net();
    let d = std::env::temp_dir().join(format!("perturb-minibatch-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let csv = d.join("d.csv");
    let mut text = String::new();
    for (x, y) in data.x.rows().into_iter().zip(data.y.rows()) {
        let row: Vec<String> = x.iter().chain(y.iter()).map(|v| format!("{v:?}")).collect();
        text += &(row.join(",") + "\n");
    }
    std::fs::write(&csv, text).unwrap();
    let model_path = d.join("m.json");
    perturb::files::save_model(&model, &model_path).unwrap();
    let common = |extra: &[&str]| {
        let mut args: Vec<String> = [
            "train",
            "--device",
            "cpu",
            "--quiet",
            "--batch-size",
            "16",
            "--optimizer",
            "adam",
            "--lr",
            "0.01",
            "--seed",
            "5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_perturb"))
            .args(&args)
            .current_dir(&d)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let (m, c) = (model_path.to_str().unwrap(), csv.to_str().unwrap());
    common(&[
        "--model",
        m,
        "--data",
        c,
        "--epochs",
        "8",
        "--report",
        "full.json",
    ]);
    common(&[
        "--model",
        m,
        "--data",
        c,
        "--epochs",
        "3",
        "--checkpoint",
        "ck.json",
    ]);
    common(&[
        "--resume",
        "ck.json",
        "--epochs",
        "8",
        "--report",
        "resumed.json",
    ]);
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join(f)).unwrap()).unwrap()
    };
    let (full, resumed) = (read("full.json"), read("resumed.json"));
    for key in ["losses", "step_losses"] {
        assert_eq!(full[key], resumed[key], "{key}");
    }
    assert_eq!(full["model"], resumed["model"]);
    std::fs::remove_dir_all(&d).unwrap();
}
