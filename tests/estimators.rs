//! Gradient estimators: CPU against GPU for every probe shape, SPSA directions bit for bit, accuracy
//! against backprop, the vanished-step warning, sweeps equal to separate runs, resumed runs equal
//! to uninterrupted ones.

mod common;

use common::{assert_step_close, assert_ulp_close, gpu, max_ulp, random_data, run_kernel};
use perturb::check::{backprop, estimate};
use perturb::cpu::CpuEvaluator;
use perturb::estimate::{Estimator, Probe, Shape, StepMode};
use perturb::gpu::{AdapterOptions, GpuContext, GpuEvaluator, GpuOptions, RNG_WGSL};
use perturb::rng::{direction, philox4x32_10, Direction, DirectionKey};
use perturb::train::{train_runs, Control, Evaluator, Outcome, Run};
use perturb::{Activation, Dataset, Hyper, Method, Model};

fn fresh() -> GpuContext {
    GpuContext::new(&AdapterOptions::from_env()).unwrap()
}

fn small_net(seed: u64) -> (Model, Dataset) {
    let model = Model::random(
        &[4, 8, 6, 3],
        &[Activation::Tanh, Activation::Sigmoid, Activation::Identity],
        seed,
    )
    .unwrap();
    let data = random_data(&model, 12, seed + 100);
    (model, data)
}

/// One probe of one run: `[L, values…]`.
fn probe_once(ev: &mut impl Evaluator<Loss = f32>, params: &[f32], probe: Probe) -> Vec<f32> {
    let mut loss = [0.0f32];
    let mut values = vec![0.0f32; probe.len(params.len())];
    ev.probe(params, &[probe], &[true], &mut loss, &mut values)
        .unwrap();
    std::iter::once(loss[0]).chain(values).collect()
}

/// Runs `body` (with `k` the invocation index, `args` the input words, `out` the output words) in a
/// one-off compute shader that includes `shaders/rng.wgsl`; returns `n` output words.
fn run_rng_shader(ctx: &GpuContext, body: &str, args: &[u32], n: usize) -> Vec<u32> {
    let src = format!(
        "{RNG_WGSL}\n@group(0) @binding(0) var<storage, read> args: array<u32>;\n\
         @group(0) @binding(1) var<storage, read_write> out: array<u32>;\n\
         @compute @workgroup_size(64)\nfn main(@builtin(global_invocation_id) gid: vec3<u32>) {{\n\
         let k = gid.x;\nif (k >= arrayLength(&out)) {{ return; }}\n{body}\n}}\n"
    );
    run_kernel(ctx, &src, args, n, n)
}

#[test]
fn philox_words_match_the_rust_generator_bitwise_on_gpu() {
    let Some(ctx) = gpu() else { return };
    const COUNTERS: usize = 4096;
    // Counters (k, k * 2654435761, !k, k ^ 0xdeadbeef) under a key with every bit pattern class.
    let key = [0xa409_3822u32, 0xffff_ffff];
    let body =
        "let c = vec4<u32>(k / 4u, (k / 4u) * 2654435761u, ~(k / 4u), (k / 4u) ^ 0xdeadbeefu);\n\
                let w = philox4x32_10(c, vec2<u32>(args[0], args[1]));\n\
                out[k] = w[k % 4u];";
    let got = run_rng_shader(&ctx, body, &key, 4 * COUNTERS);
    for i in 0..COUNTERS as u32 {
        let c = [i, i.wrapping_mul(2_654_435_761), !i, i ^ 0xdead_beef];
        let want = philox4x32_10(c, key);
        let have = &got[4 * i as usize..4 * i as usize + 4];
        assert_eq!(have, want, "counter {c:x?}: gpu {have:x?} vs cpu {want:x?}");
    }
}

#[test]
fn spsa_directions_match_cpu_bitwise_on_gpu() {
    let Some(ctx) = gpu() else { return };
    const COMPONENTS: usize = 5000;
    for dist in [Direction::Rademacher, Direction::Gaussian] {
        for (seed, step, sample) in [(0u64, 0u32, 0u32), (0x0123_4567_89ab_cdef, 77, 5)] {
            let args = [seed as u32, (seed >> 32) as u32, step, sample, dist.code()];
            let body = "out[k] = bitcast<u32>(direction(vec2<u32>(args[0], args[1]), args[2], args[3], k, args[4]));";
            let got = run_rng_shader(&ctx, body, &args, COMPONENTS);
            let key = DirectionKey { seed, step, sample };
            for (k, &bits) in got.iter().enumerate() {
                let want = direction(key, k as u32, dist);
                assert_eq!(
                    bits,
                    want.to_bits(),
                    "{dist:?} {key:?} component {k}: gpu {} vs cpu {want}",
                    f32::from_bits(bits)
                );
            }
        }
    }
}

#[test]
fn spsa_losses_match_cpu_reference_on_gpu() {
    let Some(ctx) = gpu() else { return };
    let budget = max_ulp(&ctx);
    drop(ctx);
    let (model, data) = small_net(3);
    for dist in [Direction::Rademacher, Direction::Gaussian] {
        let probe = Estimator::Spsa {
            samples: 5,
            direction: dist,
        }
        .probe(1e-3, 42, 9);
        let opts = GpuOptions {
            shape: probe.shape(),
            ..Default::default()
        };
        let mut g = GpuEvaluator::with_options(fresh(), &model, &data, opts).unwrap();
        let mut c = CpuEvaluator::<f32>::new(&model, &data).unwrap();
        let gl = probe_once(&mut g, &model.params, probe);
        let cl = probe_once(&mut c, &model.params, probe);
        assert_step_close(&format!("spsa {dist:?}"), &gl, &cl, budget);
    }
}

#[test]
fn central_and_richardson_probes_match_cpu_reference_on_gpu() {
    let Some(ctx) = gpu() else { return };
    let budget = max_ulp(&ctx);
    drop(ctx);
    let (model, data) = small_net(5);
    for estimator in [Estimator::Central, Estimator::Richardson] {
        for method in [Method::Naive, Method::Reuse] {
            let probe = estimator.probe(1e-3, 0, 0);
            let opts = GpuOptions {
                method,
                shape: probe.shape(),
                ..Default::default()
            };
            let mut g = GpuEvaluator::with_options(fresh(), &model, &data, opts).unwrap();
            let mut c = CpuEvaluator::<f32>::with_method(&model, &data, method).unwrap();
            let gl = probe_once(&mut g, &model.params, probe);
            let cl = probe_once(&mut c, &model.params, probe);
            assert_step_close(
                &format!("{} ({})", estimator.name(), method.name()),
                &gl,
                &cl,
                budget,
            );
        }
    }
}

/// Runs of different lr, eps and seed (and so different SPSA directions and inits).
fn sweep_runs(estimator: Estimator) -> (Model, Dataset, Vec<Run>) {
    let (model, data) = small_net(8);
    let runs = [(0.05, 1e-3, 1u64), (0.2, 3e-3, 2), (0.5, 1e-2, 3)]
        .iter()
        .map(|&(lr, eps, seed)| {
            let init = Model::random(
                &[4, 8, 6, 3],
                &[Activation::Tanh, Activation::Sigmoid, Activation::Identity],
                seed,
            )
            .unwrap();
            let hyper = Hyper {
                epochs: 6,
                lr,
                eps,
                estimator,
                step: StepMode::Nominal,
                seed,
            };
            Run::new(hyper, init.params)
        })
        .collect();
    (model, data, runs)
}

fn assert_runs_equal(what: &str, together: &[Run], apart: &[Run]) {
    for (i, (a, b)) in together.iter().zip(apart).enumerate() {
        let la: Vec<f32> = a.losses.iter().map(|&l| l as f32).collect();
        let lb: Vec<f32> = b.losses.iter().map(|&l| l as f32).collect();
        assert_ulp_close(&format!("{what}: run {i} losses"), &la, &lb, 0);
        assert_ulp_close(&format!("{what}: run {i} params"), &a.params, &b.params, 0);
    }
}

#[test]
fn a_sweep_of_runs_equals_separate_runs_bitwise() {
    let spsa = Estimator::Spsa {
        samples: 3,
        direction: Direction::Rademacher,
    };
    for estimator in [Estimator::Forward, Estimator::Central, spsa] {
        let (model, data, runs) = sweep_runs(estimator);
        // CPU.
        let mut together = runs.clone();
        let mut c = CpuEvaluator::<f32>::new(&model, &data).unwrap();
        train_runs(&mut c, &mut together, Control::default(), |_| {}).unwrap();
        let mut apart = runs.clone();
        for run in &mut apart {
            train_runs(
                &mut c,
                std::slice::from_mut(run),
                Control::default(),
                |_| {},
            )
            .unwrap();
        }
        assert_runs_equal(&format!("cpu {}", estimator.name()), &together, &apart);
        // GPU: one evaluator holding every run, against one evaluator per run.
        if gpu().is_none() {
            continue;
        }
        let opts = GpuOptions {
            runs: runs.len(),
            shape: estimator.shape(),
            ..Default::default()
        };
        let mut g = GpuEvaluator::with_options(fresh(), &model, &data, opts).unwrap();
        let mut gpu_together = runs.clone();
        train_runs(&mut g, &mut gpu_together, Control::default(), |_| {}).unwrap();
        let mut gpu_apart = runs.clone();
        for run in &mut gpu_apart {
            let opts = GpuOptions {
                shape: estimator.shape(),
                ..Default::default()
            };
            let mut g = GpuEvaluator::with_options(fresh(), &model, &data, opts).unwrap();
            train_runs(
                &mut g,
                std::slice::from_mut(run),
                Control::default(),
                |_| {},
            )
            .unwrap();
        }
        assert_runs_equal(
            &format!("gpu {}", estimator.name()),
            &gpu_together,
            &gpu_apart,
        );
    }
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one_bitwise() {
    let spsa = Estimator::Spsa {
        samples: 2,
        direction: Direction::Gaussian,
    };
    for estimator in [Estimator::Richardson, spsa] {
        let (model, data, runs) = sweep_runs(estimator);
        let mut c = CpuEvaluator::<f32>::new(&model, &data).unwrap();
        let mut whole = runs[..1].to_vec();
        train_runs(&mut c, &mut whole, Control::default(), |_| {}).unwrap();
        // Stop after 2 epochs, then continue from the recorded losses and parameters.
        let mut first = runs[..1].to_vec();
        first[0].hyper.epochs = 2;
        train_runs(&mut c, &mut first, Control::default(), |_| {}).unwrap();
        let mut rest = first.clone();
        rest[0].hyper.epochs = whole[0].hyper.epochs;
        rest[0].outcome = None;
        train_runs(&mut c, &mut rest, Control::default(), |_| {}).unwrap();
        assert_runs_equal(&format!("resumed {}", estimator.name()), &rest, &whole);
    }
}

#[test]
fn a_raised_stop_flag_ends_every_run_after_a_whole_epoch() {
    let (model, data, mut runs) = sweep_runs(Estimator::Forward);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut c = CpuEvaluator::<f32>::new(&model, &data).unwrap();
    let control = Control {
        stop: Some(&stop),
        allow_divergence: false,
    };
    train_runs(&mut c, &mut runs, control, |e| {
        if e.epoch == 3 {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    })
    .unwrap();
    for run in &runs {
        assert_eq!(run.outcome, Some(Outcome::Stopped));
        assert_eq!(
            run.losses.len(),
            3,
            "every run finished epoch 3 and stopped"
        );
    }
}

#[test]
fn a_diverging_run_keeps_its_last_finite_parameters_and_the_others_go_on() {
    let (model, data) = (Model::book(), Dataset::book());
    let runs: Vec<Run> = [0.01, 1e30]
        .iter()
        .map(|&lr| {
            Run::new(
                Hyper {
                    epochs: 20,
                    lr,
                    ..Hyper::book()
                },
                model.params.clone(),
            )
        })
        .collect();
    let mut runs = runs;
    let mut c = CpuEvaluator::<f32>::new(&model, &data).unwrap();
    train_runs(&mut c, &mut runs, Control::default(), |_| {}).unwrap();
    assert_eq!(runs[0].outcome, Some(Outcome::Finished));
    assert_eq!(runs[0].losses.len(), 20);
    match &runs[1].outcome {
        Some(Outcome::Diverged { epoch, what }) => {
            assert!(*epoch <= 20, "diverged at {epoch}: {what}");
            assert_eq!(runs[1].losses.len(), epoch - 1, "finite losses kept");
        }
        other => panic!("lr 1e30 should diverge, got {other:?}"),
    }
    assert!(
        runs[1].params.iter().all(|p| p.is_finite()),
        "{:?}",
        runs[1].params
    );
}

/// Float64 losses on smooth networks: central and Richardson over exact steps are far closer to
/// backprop than the forward difference.
#[test]
fn central_and_richardson_errors_are_far_below_forward_against_backprop() {
    const EPS: f64 = 1e-4;
    // Measured: forward ~1e-4 relative, central (exact) ~1e-10, Richardson (exact) ~1e-11.
    const REQUIRED_GAIN: f64 = 1e3;
    let mut cases = vec![(Model::book(), Dataset::book())];
    for seed in 0..3 {
        let (m, d) = small_net(seed);
        cases.push((m, d));
    }
    for (i, (model, data)) in cases.iter().enumerate() {
        let (_, reference) = backprop(model, data).unwrap();
        let mut ev = CpuEvaluator::<f64>::new(model, data).unwrap();
        let err = |est: Estimator, step: StepMode, ev: &mut CpuEvaluator<f64>| {
            let (g, _) = estimate(ev, &model.params, est, step, EPS, 0).unwrap();
            perturb::check::agreement(&g, &reference).relative_error
        };
        let forward = err(Estimator::Forward, StepMode::Nominal, &mut ev);
        let central = err(Estimator::Central, StepMode::Exact, &mut ev);
        let richardson = err(Estimator::Richardson, StepMode::Exact, &mut ev);
        eprintln!("case {i}: forward {forward:e}, central {central:e}, richardson {richardson:e}");
        assert!(
            central * REQUIRED_GAIN < forward,
            "case {i}: central {central:e} vs forward {forward:e}"
        );
        assert!(
            richardson * REQUIRED_GAIN < forward,
            "case {i}: richardson {richardson:e} vs forward {forward:e}"
        );
    }
}

#[test]
fn spsa_averaged_over_many_directions_points_along_the_backprop_gradient() {
    const MIN_COSINE: f64 = 0.99;
    let model = Model::book();
    let data = Dataset::book();
    let (_, reference) = backprop(&model, &data).unwrap();
    let mut ev = CpuEvaluator::<f64>::new(&model, &data).unwrap();
    for direction in [Direction::Rademacher, Direction::Gaussian] {
        let est = Estimator::Spsa {
            samples: 1024,
            direction,
        };
        let (g, _) = estimate(&mut ev, &model.params, est, StepMode::Nominal, 1e-4, 7).unwrap();
        let cos = perturb::check::agreement(&g, &reference).cosine;
        assert!(cos > MIN_COSINE, "{direction:?}: cosine {cos}");
    }
}

#[test]
fn the_vanished_step_warning_fires_on_a_weight_of_12755_and_not_on_the_books() {
    let data = Dataset::book();
    let book = Model::book();
    let mut big = book.params.clone();
    big[9] = 12_755.0; // W2[0][0], as in the book's lr = 1 notebook
    let big = book.with_params(big).unwrap();
    for step in [StepMode::Nominal, StepMode::Exact] {
        for (model, want) in [(&book, 0), (&big, 1)] {
            let hyper = Hyper {
                epochs: 1,
                step,
                ..Hyper::book()
            };
            let mut runs = [Run::new(hyper, model.params.clone())];
            let mut c = CpuEvaluator::<f32>::new(model, &data).unwrap();
            train_runs(&mut c, &mut runs, Control::default(), |_| {}).unwrap();
            let v = &runs[0].vanished;
            assert_eq!(v.max_count, want, "{step:?}: {v:?}");
            if want == 1 {
                assert_eq!(v.first_params, vec![(9, 12_755.0)]);
                assert_eq!(v.first_epoch, 1);
            }
        }
    }
}

#[test]
fn probes_of_the_wrong_shape_or_length_are_errors_not_panics() {
    let model = Model::book();
    let data = Dataset::book();
    let mut c = CpuEvaluator::<f32>::new(&model, &data).unwrap();
    let p = model.num_params();
    let central = Probe::coordinates(&[1e-4, -1e-4]);
    let mut loss = [0.0f32; 2];
    let mut values = vec![0.0f32; 4 * p];
    let params = model.params.repeat(2);
    // Mixed shapes in one call.
    let e = c
        .probe(
            &params,
            &[central, Probe::coordinates(&[1e-4])],
            &[true, true],
            &mut loss,
            &mut values,
        )
        .unwrap_err();
    assert!(e.to_string().contains("same shape"), "{e}");
    // Too few value slots.
    let e = c
        .probe(
            &params,
            &[central, central],
            &[true, true],
            &mut loss,
            &mut values[..3],
        )
        .unwrap_err();
    assert!(e.to_string().contains("value slots"), "{e}");
    if gpu().is_none() {
        return;
    }
    let mut g = GpuEvaluator::new(fresh(), &model, &data).unwrap();
    let e = g
        .probe(
            &model.params,
            &[central],
            &[true],
            &mut loss[..1],
            &mut values[..2 * p],
        )
        .unwrap_err();
    assert!(e.to_string().contains("built for"), "{e}");
    let opts = GpuOptions {
        method: Method::Reuse,
        shape: Shape::Directions(2),
        ..Default::default()
    };
    let e = GpuEvaluator::with_options(fresh(), &model, &data, opts).unwrap_err();
    // The library names the setting; the command line words it as the flag.
    let m = perturb::cli::exit::message(&e);
    assert!(m.contains("--method naive"), "{m}");
}

/// Buffers are sized before anything is allocated: a sweep whose perturbed losses need more than
/// one storage binding allows is refused with both numbers, on any adapter.
#[test]
fn a_step_larger_than_the_storage_binding_limit_is_refused_with_the_numbers() {
    let Some(ctx) = gpu() else { return };
    let limit = ctx
        .limits
        .max_storage_buffer_binding_size
        .min(ctx.limits.max_buffer_size);
    // Three Richardson runs: 3 × (1 + 4P) floats of losses and the tripwire's word, just over the
    // limit.
    let runs = 3u64;
    let p_needed = (limit / 4 / runs / 4 + 1) as usize;
    let width = ((p_needed as f64).sqrt() as usize).clamp(2, 2048);
    let model = Model::random(
        &[1, width, p_needed.div_ceil(width + 1).max(1)],
        &[Activation::Sigmoid, Activation::Identity],
        0,
    );
    let Ok(model) = model else {
        eprintln!("SKIPPED: the adapter allows {limit} bytes, more than a model may have");
        return;
    };
    let data = random_data(&model, 1, 0);
    let needed = 4 * (runs * (1 + 4 * model.num_params() as u64) + 1);
    assert!(needed > limit, "{needed} vs {limit}");
    let opts = GpuOptions {
        runs: runs as usize,
        shape: Shape::Coordinates(4),
        ..Default::default()
    };
    let e = GpuEvaluator::with_options(ctx, &model, &data, opts).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&needed.to_string()) && msg.contains(&limit.to_string()),
        "{msg}"
    );
}
