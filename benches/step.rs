//! One training step (all P + 1 losses, no update) per named size × method, CPU reference vs GPU.
//! `cargo bench`; `perturb bench` prints the fuller table (loop modes, NumPy, speedups).
//! On lavapipe the "GPU" is a software rasteriser running on the CPU, and a naive medium step takes
//! over a minute there: filter, e.g. `cargo bench -- reuse`.

use criterion::{criterion_group, criterion_main, Criterion};
use perturb::bench::SIZES;
use perturb::cpu::CpuEvaluator;
use perturb::gpu::{AdapterOptions, GpuContext, GpuEvaluator, GpuOptions};
use perturb::{Evaluator, Method};
use std::hint::black_box;

fn bench_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("step");
    group.sample_size(10);
    let adapter = GpuContext::new(&AdapterOptions::from_env()).map(|ctx| ctx.info.name.clone());
    if let Err(e) = &adapter {
        eprintln!("no GPU rows: {e}");
    }
    for size in SIZES.into_iter().filter(|s| s.name != "mnist1k") {
        let (model, data) = size.build();
        let mut deltas = vec![0.0f32; model.num_params()];
        for method in [Method::Naive, Method::Reuse] {
            // A naive MNIST step is 2.6e12 multiply-adds: not a benchmark.
            if method == Method::Naive && size.naive_work() > 1e10 {
                continue;
            }
            let name = format!("{}/{}", size.name, method.name());
            let mut cpu = CpuEvaluator::<f32>::with_method(&model, &data, method).unwrap();
            group.bench_function(format!("{name}/cpu"), |b| {
                b.iter(|| {
                    cpu.evaluate(black_box(&model.params), 1e-4, &mut deltas)
                        .unwrap()
                })
            });
            if let Ok(label) = &adapter {
                let ctx = GpuContext::new(&AdapterOptions::from_env()).unwrap();
                let opts = GpuOptions {
                    method,
                    ..Default::default()
                };
                let mut gpu = GpuEvaluator::with_options(ctx, &model, &data, opts).unwrap();
                group.bench_function(format!("{name}/gpu ({label})"), |b| {
                    b.iter(|| {
                        gpu.evaluate(black_box(&model.params), 1e-4, &mut deltas)
                            .unwrap()
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench_step);
criterion_main!(benches);
