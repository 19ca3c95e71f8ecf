//! One training step (all P + 1 nudged losses) per size, CPU reference vs GPU.
//! `cargo bench` (on lavapipe the "GPU" is a software rasteriser running on the CPU, and one naive
//! medium step takes over a minute there: filter with `cargo bench -- small`).

use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::Array2;
use perturb::cpu::CpuEvaluator;
use perturb::gpu::{AdapterOptions, GpuContext, GpuEvaluator};
use perturb::{Activation, Dataset, Evaluator, Model};
use rand::{RngExt, SeedableRng};
use std::hint::black_box;

fn size(name: &str) -> (Model, Dataset) {
    if name == "book" {
        return (Model::book(), Dataset::book());
    }
    let (widths, samples): (&[usize], usize) = match name {
        "small" => (&[16, 32, 4], 64),
        _ => (&[64, 128, 10], 64),
    };
    let acts = vec![Activation::Sigmoid; widths.len() - 2]
        .into_iter()
        .chain([Activation::Identity])
        .collect::<Vec<_>>();
    let model = Model::random(widths, &acts, 1).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let mut m = |c: usize| Array2::from_shape_fn((samples, c), |_| rng.random_range(-1.0f32..1.0));
    let x = m(model.inputs());
    let y = m(model.outputs());
    (model, Dataset::new(x, y).unwrap())
}

fn bench_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("step");
    group.sample_size(10);
    for name in ["book", "small", "medium"] {
        let (model, data) = size(name);
        let mut losses = vec![0.0f32; model.num_params() + 1];
        let mut cpu = CpuEvaluator::<f32>::new(&model, &data).unwrap();
        group.bench_function(format!("{name}/cpu"), |b| {
            b.iter(|| {
                cpu.nudged_losses(black_box(&model.params), 1e-4, &mut losses)
                    .unwrap()
            })
        });
        match GpuContext::new(&AdapterOptions::from_env()) {
            Ok(ctx) => {
                let label = ctx.info.name.clone();
                let mut gpu = GpuEvaluator::new(ctx, &model, &data).unwrap();
                group.bench_function(format!("{name}/gpu ({label})"), |b| {
                    b.iter(|| {
                        gpu.nudged_losses(black_box(&model.params), 1e-4, &mut losses)
                            .unwrap()
                    })
                });
            }
            Err(e) => eprintln!("no GPU rows: {e}"),
        }
    }
    group.finish();
}

criterion_group!(benches, bench_step);
criterion_main!(benches);
