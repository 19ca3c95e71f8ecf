//! GPU evaluator against the CPU reference: every nudged loss of a step, and whole training runs.
//! Bit for bit on llvmpipe; within the stated bounds (tests/common) elsewhere.

mod common;

use common::{
    assert_rel_close, assert_step_close, assert_ulp_close, gpu, max_ulp, random_data, run_kernel,
    ulp_distance, OTHER_ADAPTER_TRAJECTORY_REL,
};
use perturb::cpu::CpuEvaluator;
use perturb::gpu::{AdapterOptions, GpuContext, GpuEvaluator, GpuOptions, ReuseKernel, MATH_WGSL};
use perturb::train::{train, Evaluator};
use perturb::{Activation, Dataset, Hyper, Loss, Method, Model};
use rand::{RngExt, SeedableRng};

/// One step: `[L, delta_0, delta_1, …]`.
fn step(ev: &mut impl Evaluator<Loss = f32>, params: &[f32], eps: f32) -> Vec<f32> {
    let mut deltas = vec![0.0; params.len()];
    let base = ev.evaluate(params, eps, &mut deltas).unwrap();
    std::iter::once(base).chain(deltas).collect()
}

fn gpu_eval(ctx: GpuContext, model: &Model, data: &Dataset, method: Method) -> GpuEvaluator {
    let opts = GpuOptions {
        method,
        ..Default::default()
    };
    GpuEvaluator::with_options(ctx, model, data, opts).unwrap()
}

fn fresh() -> GpuContext {
    GpuContext::new(&AdapterOptions::from_env()).unwrap()
}

/// One step on GPU and CPU with `method`; asserts the loss and every delta within the adapter's
/// ULP budget.
fn check_step(
    ctx: GpuContext,
    model: &Model,
    data: &Dataset,
    eps: f32,
    method: Method,
    what: &str,
) {
    let budget = max_ulp(&ctx);
    let mut g = gpu_eval(ctx, model, data, method);
    let mut c = CpuEvaluator::<f32>::with_method(model, data, method).unwrap();
    let gl = step(&mut g, &model.params, eps);
    let cl = step(&mut c, &model.params, eps);
    assert_step_close(&format!("{what} ({})", method.name()), &gl, &cl, budget);
}

#[test]
fn ulp_distance_is_sign_ordered() {
    assert_eq!(ulp_distance(0.0, -0.0), 0);
    assert_eq!(ulp_distance(1.0, f32::from_bits(1.0f32.to_bits() + 3)), 3);
    assert_eq!(ulp_distance(f32::from_bits(1), -f32::from_bits(1)), 2);
    assert_eq!(ulp_distance(f32::NAN, 1.0), u64::MAX);
}

#[test]
fn book_nudged_losses_match_cpu_reference_bitwise() {
    let Some(ctx) = gpu() else { return };
    check_step(
        ctx,
        &Model::book(),
        &Dataset::book(),
        1e-4,
        Method::Naive,
        "book step",
    );
    check_step(
        fresh(),
        &Model::book(),
        &Dataset::book(),
        1e-4,
        Method::Reuse,
        "book step",
    );
}

#[test]
fn book_training_run_matches_cpu_reference() {
    let Some(ctx) = gpu() else { return };
    let exact = max_ulp(&ctx) == 0;
    drop(ctx);
    let model = Model::book();
    let data = Dataset::book();
    for method in [Method::Naive, Method::Reuse] {
        let mut g = gpu_eval(fresh(), &model, &data, method);
        let mut c = CpuEvaluator::<f32>::with_method(&model, &data, method).unwrap();
        let gr = train(&mut g, &model.params, &Hyper::book(), |_, _| {}).unwrap();
        let cr = train(&mut c, &model.params, &Hyper::book(), |_, _| {}).unwrap();
        let what = method.name();
        if exact {
            let gl: Vec<f32> = gr.losses.iter().map(|&l| l as f32).collect();
            let cl: Vec<f32> = cr.losses.iter().map(|&l| l as f32).collect();
            assert_ulp_close(&format!("{what}: loss per epoch"), &gl, &cl, 0);
            assert_ulp_close(
                &format!("{what}: trained parameters"),
                &gr.params,
                &cr.params,
                0,
            );
        } else {
            assert_rel_close(
                &format!("{what}: loss per epoch"),
                &gr.losses,
                &cr.losses,
                OTHER_ADAPTER_TRAJECTORY_REL,
            );
            let gp: Vec<f64> = gr.params.iter().map(|&p| p as f64).collect();
            let cp: Vec<f64> = cr.params.iter().map(|&p| p as f64).collect();
            assert_rel_close(
                &format!("{what}: trained parameters"),
                &gp,
                &cp,
                OTHER_ADAPTER_TRAJECTORY_REL,
            );
        }
        assert_eq!(format!("{:.4}", gr.losses[0]), "0.3346");
    }
}

/// The resident loop (update on the GPU, many epochs per submission) equals the host-driven loop.
#[test]
fn resident_loop_equals_host_loop_bit_for_bit() {
    let Some(ctx) = gpu() else { return };
    let exact = max_ulp(&ctx) == 0;
    drop(ctx);
    let cases = [(Model::book(), Dataset::book()), {
        let m = Model::random(
            &[4, 6, 5, 2],
            &[Activation::Tanh, Activation::Sigmoid, Activation::Identity],
            3,
        )
        .unwrap();
        let d = random_data(&m, 20, 4);
        (m, d)
    }];
    for (model, data) in cases {
        for method in [Method::Naive, Method::Reuse] {
            let hyper = Hyper {
                epochs: 37,
                lr: 0.05,
                eps: 1e-3,
                ..Hyper::book()
            };
            let mut host = gpu_eval(fresh(), &model, &data, method);
            let mut resident = gpu_eval(fresh(), &model, &data, method);
            let h = train(&mut host, &model.params, &hyper, |_, _| {}).unwrap();
            let r = resident
                .train_resident(&model.params, &hyper, 10, None, |_, _| {})
                .unwrap();
            assert_eq!(r.losses.len(), 37);
            let what = format!("{} {}", model.num_params(), method.name());
            let hl: Vec<f32> = h.losses.iter().map(|&l| l as f32).collect();
            let rl: Vec<f32> = r.losses.iter().map(|&l| l as f32).collect();
            if exact {
                assert_ulp_close(&format!("{what}: resident vs host losses"), &rl, &hl, 0);
                assert_ulp_close(
                    &format!("{what}: resident vs host parameters"),
                    &r.params,
                    &h.params,
                    0,
                );
            } else {
                // GPU division need not be correctly rounded there, so trajectories drift apart.
                let what = format!("{what}: resident vs host losses");
                assert_rel_close(&what, &r.losses, &h.losses, OTHER_ADAPTER_TRAJECTORY_REL);
            }
        }
    }
}

/// 1–3 layers, every activation in every position, widths 1–24, 1–64 samples.
#[test]
fn random_models_nudged_losses_match_cpu_reference() {
    let Some(ctx) = gpu() else { return };
    let budget = max_ulp(&ctx);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2024);
    for case in 0..24u64 {
        let layers = 1 + (case as usize % 3);
        let widths: Vec<usize> = (0..=layers).map(|_| rng.random_range(1..=24)).collect();
        let acts: Vec<Activation> = (0..layers)
            .map(|l| Activation::ALL[(case as usize + l) % 4])
            .collect();
        let samples = rng.random_range(1..=64);
        let model = Model::random(&widths, &acts, case).unwrap();
        let data = random_data(&model, samples, case + 100);
        for method in [Method::Naive, Method::Reuse] {
            let mut g = gpu_eval(fresh(), &model, &data, method);
            let mut c = CpuEvaluator::<f32>::with_method(&model, &data, method).unwrap();
            let what = format!(
                "case {case} {}: widths {widths:?}, {acts:?}, {samples} samples",
                method.name()
            );
            let (gs, cs) = (
                step(&mut g, &model.params, 1e-3),
                step(&mut c, &model.params, 1e-3),
            );
            assert_step_close(&what, &gs, &cs, budget);
            // A short run: the update and the next steps stay together too.
            let hyper = Hyper {
                epochs: 3,
                lr: 0.1,
                eps: 1e-3,
                ..Hyper::book()
            };
            let gr = train(&mut g, &model.params, &hyper, |_, _| {}).unwrap();
            let cr = train(&mut c, &model.params, &hyper, |_, _| {}).unwrap();
            if budget == 0 {
                assert_ulp_close(&format!("{what}, trained"), &gr.params, &cr.params, 0);
            }
        }
    }
}

/// 64-128-10 with 64 samples: one invocation per evaluation would loop 64 × (64·128 + 128·10)
/// ≈ 606k times, far past llvmpipe's silent 65,535 cap; this design stays near 300. It also needs a
/// two-dimensional grid (9,611 × 64 workgroups > 65,535).
#[test]
fn medium_model_past_the_llvmpipe_loop_limit_matches_cpu_reference() {
    let Some(ctx) = gpu() else { return };
    let model =
        Model::random(&[64, 128, 10], &[Activation::Tanh, Activation::Identity], 5).unwrap();
    let data = random_data(&model, 64, 6);
    let plan = perturb::gpu::LoopPlan {
        model: &model,
        batch: 64,
        closed: false,
        epochs: 0,
        loss: Loss::Mse,
    };
    let passes = perturb::gpu::loop_passes(perturb::gpu::KernelId::NudgedSse, &plan);
    assert!(passes < 1_000, "{passes} loop passes");
    check_step(
        ctx,
        &model,
        &data,
        1e-3,
        Method::Naive,
        "64-128-10, 64 samples",
    );
    check_step(
        fresh(),
        &model,
        &data,
        1e-3,
        Method::Reuse,
        "64-128-10, 64 samples",
    );
}

/// Every reuse kernel (split, one workgroup per parameter, one invocation per parameter) gives the
/// same numbers as the CPU.
#[test]
fn every_reuse_kernel_matches_cpu_reference() {
    let Some(ctx) = gpu() else { return };
    let budget = max_ulp(&ctx);
    drop(ctx);
    let cases = [
        (Model::book(), Dataset::book()),
        {
            let m = Model::random(&[64, 128, 10], &[Activation::Tanh, Activation::Identity], 5)
                .unwrap();
            let d = random_data(&m, 300, 6);
            (m, d)
        },
        {
            // 50 inputs: the per-parameter kernel nudges 4 weights per invocation, the last of
            // them past the layer for some invocations.
            let m = Model::random(&[50, 7, 3], &[Activation::Sigmoid, Activation::Identity], 9)
                .unwrap();
            let d = random_data(&m, 37, 10);
            (m, d)
        },
        {
            // reuse_seq's unit path (MSE, closed form) on a hidden layer fed by another: one
            // input by 8 units per invocation, 19 units (the last block partial), 300 samples.
            let m = Model::random(
                &[6, 11, 19, 4],
                &[
                    Activation::Sigmoid,
                    Activation::Sigmoid,
                    Activation::Identity,
                ],
                13,
            )
            .unwrap();
            let d = random_data(&m, 300, 14);
            (m, d)
        },
        {
            let m = Model::random(
                &[5, 9, 6, 3],
                &[Activation::Relu, Activation::Sigmoid, Activation::Tanh],
                7,
            )
            .unwrap();
            let d = random_data(&m, 33, 8);
            (m, d)
        },
    ];
    for (model, data) in cases {
        let mut c = CpuEvaluator::<f32>::with_method(&model, &data, Method::Reuse).unwrap();
        let cs = step(&mut c, &model.params, 1e-3);
        for kernel in [
            ReuseKernel::Split,
            ReuseKernel::Workgroup,
            ReuseKernel::Invocation,
        ] {
            let opts = GpuOptions {
                method: Method::Reuse,
                reuse_kernel: Some(kernel),
                ..Default::default()
            };
            let mut g = GpuEvaluator::with_options(fresh(), &model, &data, opts).unwrap();
            let what = format!("{} params, {kernel:?}", model.num_params());
            assert_step_close(&what, &step(&mut g, &model.params, 1e-3), &cs, budget);
        }
    }
}

/// MNIST-sized (784-128-10, P = 101,770, 256 samples) with the reuse method: 26 million
/// (parameter, sample) items, split over several dispatch chunks.
#[test]
fn mnist_sized_reuse_step_matches_cpu_reference() {
    let Some(ctx) = gpu() else { return };
    let model = Model::random(
        &[784, 128, 10],
        &[Activation::Sigmoid, Activation::Identity],
        11,
    )
    .unwrap();
    assert_eq!(model.num_params(), 101_770);
    let data = random_data(&model, 256, 12);
    check_step(
        ctx,
        &model,
        &data,
        1e-3,
        Method::Reuse,
        "784-128-10, 256 samples",
    );
}

#[test]
fn chunked_dispatches_give_the_same_losses() {
    let Some(ctx) = gpu() else { return };
    let model = Model::random(
        &[5, 7, 4, 3],
        &[Activation::Sigmoid, Activation::Tanh, Activation::Relu],
        9,
    )
    .unwrap();
    let data = random_data(&model, 300, 10);
    let budget = max_ulp(&ctx);
    drop(ctx);
    for method in [Method::Naive, Method::Reuse] {
        let mut one = gpu_eval(fresh(), &model, &data, method);
        let opts = GpuOptions {
            method,
            max_evals_per_chunk: 7,
            ..Default::default()
        };
        let mut many = GpuEvaluator::with_options(fresh(), &model, &data, opts).unwrap();
        assert!(many.num_chunks() >= (model.num_params() + 1).div_ceil(7));
        let a = step(&mut one, &model.params, 1e-3);
        let b = step(&mut many, &model.params, 1e-3);
        let name = method.name();
        assert_ulp_close(
            &format!("{name}: 7-evaluation chunks vs one chunk"),
            &b,
            &a,
            0,
        );
        let mut cpu = CpuEvaluator::<f32>::with_method(&model, &data, method).unwrap();
        let c = step(&mut cpu, &model.params, 1e-3);
        assert_step_close(&format!("{name}: chunked vs CPU"), &b, &c, budget);
    }
}

/// More samples than the one-invocation reduction takes: the workgroup reduction must give the
/// same tree.
#[test]
fn many_samples_use_the_workgroup_reduction_and_still_match() {
    let Some(ctx) = gpu() else { return };
    let model = Model::random(&[3, 2, 1], &[Activation::Tanh, Activation::Identity], 21).unwrap();
    let data = random_data(&model, perturb::gpu::SEQ_REDUCE_MAX_BATCH + 1000, 22);
    check_step(ctx, &model, &data, 1e-3, Method::Reuse, "9,192 samples");
    check_step(fresh(), &model, &data, 1e-3, Method::Naive, "9,192 samples");
}

#[test]
fn layer_wider_than_workgroup_memory_is_refused_with_numbers() {
    let Some(ctx) = gpu() else { return };
    let model = Model::random(&[2, 3000, 1], &[Activation::Relu, Activation::Identity], 1).unwrap();
    let data = random_data(&model, 1, 1);
    let e = GpuEvaluator::new(ctx, &model, &data).unwrap_err();
    assert!(e.to_string().contains("3000 units"), "{e}");
}

/// The WGSL twins of exp, sigmoid and tanh give Rust's bits over their whole useful range.
#[test]
fn math_twins_agree_bitwise_on_the_gpu() {
    let Some(ctx) = gpu() else { return };
    let budget = max_ulp(&ctx);
    let xs: Vec<f32> = (0..20_000)
        .map(|i| -100.0 + i as f32 * 0.01)
        .chain([0.0, -0.0, 1e-30, -1e-30, 88.5, -87.5])
        .collect();
    let kernel = "
@group(0) @binding(0) var<storage, read> xin: array<f32>;
@group(0) @binding(1) var<storage, read_write> yout: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    let n = arrayLength(&xin);
    if (i >= n) { return; }
    let x = xin[i];
    yout[i] = exp_f32(x);
    yout[n + i] = sigmoid_f32(x);
    yout[2u * n + i] = tanh_f32(x);
}";
    let out: Vec<f32> = run_kernel(
        &ctx,
        &format!("{MATH_WGSL}{kernel}"),
        &xs,
        3 * xs.len(),
        xs.len(),
    );
    let n = xs.len();
    for (name, f, off) in [
        ("exp", perturb::math::exp_f32 as fn(f32) -> f32, 0),
        ("sigmoid", perturb::math::sigmoid_f32, n),
        ("tanh", perturb::math::tanh_f32, 2 * n),
    ] {
        let cpu: Vec<f32> = xs.iter().map(|&x| f(x)).collect();
        assert_ulp_close(name, &out[off..off + n], &cpu, budget);
    }
}

/// The per-parameter reuse kernel writes nothing per sample, so an MNIST-sized model with 1,024
/// samples (100,352 first-layer weights x 1,024 samples would need 411 MB of per-sample buffer)
/// fits a 128 MiB storage binding and gives finite deltas.
#[test]
fn per_parameter_reuse_kernel_needs_no_per_sample_buffer() {
    let Some(ctx) = gpu() else { return };
    let model = Model::random(
        &[784, 128, 10],
        &[Activation::Sigmoid, Activation::Identity],
        13,
    )
    .unwrap();
    let data = random_data(&model, 1024, 14);
    let opts = GpuOptions {
        method: Method::Reuse,
        reuse_kernel: Some(ReuseKernel::Invocation),
        ..Default::default()
    };
    let mut g = GpuEvaluator::with_options(ctx, &model, &data, opts).unwrap();
    let losses = step(&mut g, &model.params, 1e-3);
    let bad = losses.iter().position(|v| !v.is_finite());
    assert!(bad.is_none(), "non-finite value at index {bad:?}");
}
