//! Soak test, not in the default suite (it takes minutes):
//! `cargo test --release --test soak -- --ignored --nocapture`.
//! Thousands of epochs on the GPU and the CPU side by side: the two must still agree at the end,
//! and the process's resident memory must stay flat while the GPU trains.

mod common;

use common::{assert_ulp_close, gpu, max_ulp};
use perturb::cpu::CpuEvaluator;
use perturb::gpu::{GpuEvaluator, GpuOptions};
use perturb::train::{train_runs, Control, Run};
use perturb::{Activation, Dataset, Hyper, Method, Model};

/// Epochs per method.
const EPOCHS: usize = 3000;
/// Resident memory may grow by at most this much between the first checkpoint and the end.
const MAX_GROWTH_BYTES: u64 = 8 << 20;
/// Off llvmpipe, the trajectories may drift apart this much (relative) over the whole run.
const OTHER_ADAPTER_FINAL_REL: f64 = 1e-2;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[test]
#[ignore = "minutes long; run with --ignored"]
fn thousands_of_epochs_agree_and_memory_stays_flat() {
    let Some(ctx) = gpu() else { return };
    let exact = max_ulp(&ctx) == 0;
    let model = Model::random(&[4, 16, 3], &[Activation::Tanh, Activation::Identity], 9).unwrap();
    let x =
        ndarray::Array2::from_shape_fn((32, 4), |(i, j)| ((i * 5 + j * 3) % 17) as f32 / 8.5 - 1.0);
    let y = ndarray::Array2::from_shape_fn((32, 3), |(i, j)| ((i + 2 * j) % 7) as f32 / 7.0);
    let data = Dataset::new(x, y).unwrap();
    let mut ctx = Some(ctx);
    for method in [Method::Naive, Method::Reuse] {
        let hyper = Hyper {
            epochs: EPOCHS,
            lr: 0.05,
            eps: 1e-3,
            ..Hyper::book()
        };
        let ctx = ctx.take().unwrap_or_else(|| gpu().unwrap());
        let opts = GpuOptions {
            method,
            ..Default::default()
        };
        let mut g = GpuEvaluator::with_options(ctx, &model, &data, opts).unwrap();
        let mut c = CpuEvaluator::<f32>::with_method(&model, &data, method).unwrap();
        let mut gpu_run = [Run::new(hyper, model.params.clone())];
        let mut baseline = 0;
        train_runs(&mut g, &mut gpu_run, Control::default(), |e| {
            if e.epoch == EPOCHS / 10 {
                baseline = resident_bytes();
            }
        })
        .unwrap();
        let growth = resident_bytes().saturating_sub(baseline);
        eprintln!(
            "{}: resident memory grew {growth} bytes over {} epochs",
            method.name(),
            EPOCHS - EPOCHS / 10
        );
        assert!(
            growth <= MAX_GROWTH_BYTES,
            "{}: grew {growth} bytes",
            method.name()
        );
        let mut cpu_run = [Run::new(hyper, model.params.clone())];
        train_runs(&mut c, &mut cpu_run, Control::default(), |_| {}).unwrap();
        let what = format!("{} after {EPOCHS} epochs", method.name());
        if exact {
            let gl: Vec<f32> = gpu_run[0].losses.iter().map(|&l| l as f32).collect();
            let cl: Vec<f32> = cpu_run[0].losses.iter().map(|&l| l as f32).collect();
            assert_ulp_close(&format!("{what}: losses"), &gl, &cl, 0);
            assert_ulp_close(
                &format!("{what}: params"),
                &gpu_run[0].params,
                &cpu_run[0].params,
                0,
            );
        } else {
            let (g_last, c_last) = (gpu_run[0].losses[EPOCHS - 1], cpu_run[0].losses[EPOCHS - 1]);
            let rel = (g_last - c_last).abs() / c_last.abs().max(1e-12);
            assert!(
                rel <= OTHER_ADAPTER_FINAL_REL,
                "{what}: final loss gpu {g_last} vs cpu {c_last}"
            );
        }
    }
}
