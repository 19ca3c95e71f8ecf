//! llvmpipe's silent loop cap, kernel by kernel.
//!
//! llvmpipe ends every loop of a shader invocation once 65,535 loop passes have run in it, with
//! no error. The planner counts each kernel's passes from its plan ([`loop_passes`]) and splits or
//! refuses what would cross the cap; every kernel ends in a tripwire that turns a cut-short
//! invocation into [`Error::LoopCap`]. These tests hold the two together:
//!
//! - **the counts are the driver's**: for every kernel of [`KernelId::ALL`] over a grid of shapes,
//!   the headroom the driver leaves (measured by bisecting the tripwire's extra passes) equals
//!   what the planner counted, exactly;
//! - **the tripwire fires**: one pass past the cap is an error, never a loss;
//! - **the boundaries hold**: models whose counts land just below and just above the cap train
//!   bit for bit like the CPU reference, host and resident loops, or are refused with both
//!   numbers.
//!
//! They run on llvmpipe only (lavapipe, and GL llvmpipe in CI's second pass); other adapters have
//! no cap to measure, and the tests say so and pass only when no llvmpipe adapter is in use.

mod common;

use common::{assert_ulp_close, gpu, random_data, run_kernel};
use perturb::cpu::CpuEvaluator;
use perturb::estimate::{Estimator, Shape, StepMode};
use perturb::gpu::{
    loop_passes, GpuContext, GpuEvaluator, GpuOptions, KernelId, LoopPlan, ReuseKernel,
    GUARD_PASSES, KERNEL_PASS_BUDGET, LLVMPIPE_LOOP_CAP,
};
use perturb::train::{train, Evaluator};
use perturb::{Activation, Dataset, Error, Hyper, Loss, Method, Model};

/// Measured and counted passes must agree exactly: the planner's counts are the driver's...
const COUNT_TOLERANCE_PASSES: u64 = 0;
/// ...but for `reuse_dsse`, counted as if a SIMD group held parameters of both of its layers
/// (the deeper one's target loop, the hidden one's output loop): one pass above the driver where
/// no group does (which depends on the SIMD width), never below.
const DSSE_UNMIXED_GROUP_PASSES: u64 = 1;

/// Whether `measured` passes agree with the `planned` count for `kernel`.
fn agrees(kernel: KernelId, planned: u64, measured: u64) -> bool {
    let above = if kernel == KernelId::ReuseDsse {
        DSSE_UNMIXED_GROUP_PASSES
    } else {
        COUNT_TOLERANCE_PASSES
    };
    measured <= planned && planned - measured <= above
}

/// An llvmpipe context, or `None` (with a note) on an adapter without the cap.
fn llvmpipe() -> Option<GpuContext> {
    let ctx = gpu()?;
    if !ctx.is_llvmpipe() {
        eprintln!(
            "not llvmpipe ({}): no loop cap to measure; these tests hold on llvmpipe",
            ctx.info.name
        );
        return None;
    }
    Some(ctx)
}

/// The smallest batch whose `reuse_seq` loop count (its largest part) is over llvmpipe's budget
/// for `model` (MSE, no closed-form output): one below runs the invocation kernel, this one the
/// split kernel.
fn first_batch_over_reuse_seq_cap(model: &Model) -> usize {
    let seq_count = |batch: usize| {
        let plan = LoopPlan {
            model,
            batch,
            closed: false,
            epochs: 0,
            loss: Loss::Mse,
        };
        (0..4)
            .map(|part| loop_passes(KernelId::ReuseSeq(part), &plan))
            .max()
            .unwrap()
    };
    (1..100_000)
        .find(|&b| seq_count(b) > KERNEL_PASS_BUDGET)
        .unwrap()
}

/// One shape of the grid: what the evaluator is built for.
struct Case {
    name: &'static str,
    widths: &'static [usize],
    acts: &'static [Activation],
    batch: usize,
    method: Method,
    reuse: Option<ReuseKernel>,
    shape: Shape,
    /// Runs evaluated together (a sweep).
    runs: usize,
    /// The loss (cross-entropy adds loops to every kernel that computes a loss).
    loss: Loss,
    /// Measure only this kernel (each try costs every invocation a whole cap of passes, which a
    /// dispatch of thousands of workgroups makes slow).
    only: Option<KernelId>,
}

use Activation::{Identity as Id, Relu, Sigmoid as Sig, Tanh};

/// The grid: every kernel of [`KernelId::ALL`] is dispatched by at least one case (checked by
/// `every_kernel_is_measured`); widths past 64 units exercise the strided unit loops, batches past
/// 256 the strided sample loops, every activation the specialised `reuse_seq` pipelines.
fn cases() -> Vec<Case> {
    let c = |name, widths, acts, batch, method, reuse, shape| Case {
        name,
        widths,
        acts,
        batch,
        method,
        reuse,
        shape,
        runs: 1,
        loss: Loss::Mse,
        only: None,
    };
    let xent = |case: Case| Case {
        loss: Loss::CrossEntropy,
        ..case
    };
    let one = Shape::Coordinates(1);
    vec![
        c(
            "book naive",
            &[2, 3, 1],
            &[Sig, Sig],
            4,
            Method::Naive,
            None,
            one,
        ),
        c(
            "wide naive",
            &[3, 70, 2],
            &[Tanh, Id],
            5,
            Method::Naive,
            None,
            one,
        ),
        c(
            "deep naive",
            &[2, 4, 3, 2],
            &[Relu, Sig, Tanh],
            3,
            Method::Naive,
            None,
            one,
        ),
        c(
            "spsa",
            &[3, 5, 2],
            &[Tanh, Sig],
            6,
            Method::Naive,
            None,
            Shape::Directions(2),
        ),
        c(
            "central",
            &[2, 3, 1],
            &[Sig, Sig],
            7,
            Method::Naive,
            None,
            Shape::Coordinates(2),
        ),
        c(
            "seq book",
            &[2, 3, 1],
            &[Sig, Sig],
            4,
            Method::Reuse,
            Some(ReuseKernel::Invocation),
            one,
        ),
        c(
            "seq deep",
            &[5, 9, 70, 3],
            &[Tanh, Relu, Sig],
            300,
            Method::Reuse,
            Some(ReuseKernel::Invocation),
            one,
        ),
        // Hidden weights of 32 inputs: SEQ_R = 2, output_change inside the loop over R.
        c(
            "seq wide hidden",
            &[2, 32, 32, 1],
            &[Tanh, Sig, Sig],
            5,
            Method::Reuse,
            Some(ReuseKernel::Invocation),
            one,
        ),
        c(
            "seq closed",
            &[4, 6, 3],
            &[Tanh, Id],
            33,
            Method::Reuse,
            Some(ReuseKernel::Invocation),
            one,
        ),
        // reuse_seq's unit path (MSE, closed form; "seq closed" above: tanh, 4 units per
        // invocation): sigmoid on a hidden layer fed by another, one input by 8 units per
        // invocation, 20 units (the last block partial) and 300 samples (strided tree lanes)...
        c(
            "seq closed deep",
            &[3, 5, 20, 2],
            &[Tanh, Sig, Id],
            300,
            Method::Reuse,
            Some(ReuseKernel::Invocation),
            one,
        ),
        // ...and 4 inputs by 2 units per invocation, as at the bench's sizes.
        c(
            "seq closed wide",
            &[64, 9, 3],
            &[Sig, Id],
            20,
            Method::Reuse,
            Some(ReuseKernel::Invocation),
            one,
        ),
        c(
            "seq one layer",
            &[6, 2],
            &[Relu],
            9,
            Method::Reuse,
            Some(ReuseKernel::Invocation),
            one,
        ),
        c(
            "split",
            &[3, 70, 4, 2],
            &[Sig, Tanh, Sig],
            20,
            Method::Reuse,
            Some(ReuseKernel::Split),
            one,
        ),
        c(
            "split closed",
            &[3, 5, 3],
            &[Relu, Id],
            260,
            Method::Reuse,
            Some(ReuseKernel::Split),
            one,
        ),
        c(
            "fused",
            &[4, 6, 5, 2],
            &[Tanh, Sig, Sig],
            300,
            Method::Reuse,
            Some(ReuseKernel::Workgroup),
            one,
        ),
        c(
            "fused closed",
            &[2, 70, 3],
            &[Sig, Id],
            11,
            Method::Reuse,
            Some(ReuseKernel::Workgroup),
            one,
        ),
        // reduce_losses: llvmpipe takes it past SEQ_REDUCE_MAX_BATCH samples only.
        Case {
            runs: 3,
            ..c(
                "sweep naive",
                &[2, 4, 1],
                &[Tanh, Sig],
                6,
                Method::Naive,
                None,
                one,
            )
        },
        Case {
            runs: 2,
            ..c(
                "sweep seq",
                &[3, 5, 2],
                &[Sig, Id],
                17,
                Method::Reuse,
                Some(ReuseKernel::Invocation),
                one,
            )
        },
        // Cross-entropy: every kernel that computes a loss, with its three loops over the
        // outputs (K = 2 to 70; hidden and output weights with SEQ_R >= 2 for reuse_seq).
        xent(c(
            "xent naive",
            &[3, 70, 10],
            &[Tanh, Id],
            5,
            Method::Naive,
            None,
            one,
        )),
        xent(c(
            "xent spsa",
            &[3, 5, 4],
            &[Sig, Id],
            6,
            Method::Naive,
            None,
            Shape::Directions(2),
        )),
        xent(c(
            "xent seq deep",
            &[5, 9, 32, 10],
            &[Tanh, Relu, Id],
            300,
            Method::Reuse,
            Some(ReuseKernel::Invocation),
            one,
        )),
        xent(c(
            "xent seq wide",
            &[2, 32, 32, 3],
            &[Tanh, Sig, Id],
            5,
            Method::Reuse,
            Some(ReuseKernel::Invocation),
            one,
        )),
        xent(c(
            "xent seq one",
            &[6, 2],
            &[Id],
            9,
            Method::Reuse,
            Some(ReuseKernel::Invocation),
            one,
        )),
        xent(c(
            "xent split",
            &[3, 70, 4, 70],
            &[Sig, Tanh, Id],
            20,
            Method::Reuse,
            Some(ReuseKernel::Split),
            one,
        )),
        xent(c(
            "xent fused",
            &[4, 6, 5, 2],
            &[Tanh, Sig, Id],
            300,
            Method::Reuse,
            Some(ReuseKernel::Workgroup),
            one,
        )),
        Case {
            only: Some(KernelId::ReduceLosses),
            ..c(
                "many samples",
                &[1, 1],
                &[Sig],
                8200,
                Method::Reuse,
                Some(ReuseKernel::Split),
                one,
            )
        },
    ]
}

fn build(ctx: &GpuContext, case: &Case) -> (Model, Dataset, GpuEvaluator) {
    let model = Model::random(case.widths, case.acts, 7).unwrap();
    let data = random_data(&model, case.batch, 11);
    let opts = GpuOptions {
        method: case.method,
        reuse_kernel: case.reuse,
        shape: case.shape,
        runs: case.runs,
        loss: case.loss,
        ..GpuOptions::default()
    };
    let ev = GpuEvaluator::with_options(ctx.clone(), &model, &data, opts).unwrap();
    (model, data, ev)
}

/// One step of the host loop with this case's probe shape, every run of the sweep active.
fn step(ev: &mut GpuEvaluator, model: &Model, shape: Shape) -> Result<(), Error> {
    let runs = ev.max_runs();
    let estimator = match shape {
        Shape::Directions(q) => Estimator::Spsa {
            samples: q,
            direction: perturb::rng::Direction::Rademacher,
        },
        Shape::Coordinates(2) => Estimator::Central,
        _ => Estimator::Forward,
    };
    let probes: Vec<_> = (0..runs)
        .map(|r| estimator.probe(1e-3 * (r + 1) as f32, 5 + r as u64, 0))
        .collect();
    let mut loss = vec![0.0f32; runs];
    let mut values = vec![0.0f32; runs * probes[0].len(model.num_params())];
    let params = model.params.repeat(runs);
    ev.probe(&params, &probes, &vec![true; runs], &mut loss, &mut values)
}

/// Resident training for `epochs` epochs in submissions of `per`.
fn resident(ev: &mut GpuEvaluator, model: &Model, epochs: usize, per: usize) -> Result<(), Error> {
    let hyper = Hyper {
        epochs,
        ..Hyper::book()
    };
    ev.train_resident(&model.params, &hyper, per, None, |_, _| {})
        .map(|_| ())
}

/// The passes `kernel` runs, measured: the largest extra tripwire burn under which `run` still
/// succeeds is the cap less the kernel's passes and the tripwire's own.
fn measure(
    ev: &mut GpuEvaluator,
    kernel: KernelId,
    planned: u64,
    mut run: impl FnMut(&mut GpuEvaluator) -> Result<(), Error>,
) -> Option<u64> {
    let mut ok = |ev: &mut GpuEvaluator, burn: u64| {
        ev.set_loop_burn(Some((kernel, burn as u32)));
        match run(ev) {
            Ok(()) => true,
            Err(Error::LoopCap { .. }) => false,
            Err(e) => panic!("{}: burn {burn}: {e}", kernel.name()),
        }
    };
    // Each try costs every invocation a whole cap of passes: try the planned count's edge first.
    let headroom = |passes: u64| KERNEL_PASS_BUDGET - passes;
    if planned <= KERNEL_PASS_BUDGET && ok(ev, headroom(planned)) && !ok(ev, headroom(planned) + 1)
    {
        ev.set_loop_burn(None);
        return Some(planned);
    }
    if !ok(ev, 0) {
        ev.set_loop_burn(None);
        return None;
    }
    let (mut lo, mut hi) = (0, LLVMPIPE_LOOP_CAP);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if ok(ev, mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    ev.set_loop_burn(None);
    Some(headroom(lo))
}

#[test]
fn every_kernels_loop_count_equals_what_llvmpipe_runs() {
    let Some(ctx) = llvmpipe() else { return };
    let mut rows = Vec::new();
    let mut seen: Vec<KernelId> = Vec::new();
    for case in cases() {
        let (model, _, mut ev) = build(&ctx, &case);
        for &(kernel, planned) in &ev.loop_counts().to_vec() {
            if case.only.is_some_and(|k| k != kernel) {
                continue;
            }
            let measured = match kernel {
                // The resident loop runs the forward difference only.
                KernelId::Update
                    if case.shape == Shape::Coordinates(1) && case.runs == 1 && !ev.is_fused() =>
                {
                    measure(&mut ev, kernel, planned, |ev| resident(ev, &model, 1, 1))
                }
                KernelId::Update | KernelId::FusedEpochs => continue,
                _ => measure(&mut ev, kernel, planned, |ev| step(ev, &model, case.shape)),
            };
            eprintln!(
                "{:>14} {:>28}: planned {planned:>6}, measured {measured:?}",
                case.name,
                kernel.name()
            );
            seen.push(kernel);
            rows.push((case.name, kernel, planned, measured));
        }
    }
    // fused_epochs: its count depends on the epochs one dispatch runs.
    for (widths, acts, batch, epochs) in [
        (&[2usize, 3, 1][..], &[Sig, Sig][..], 4usize, 1usize),
        (&[2, 3, 1], &[Sig, Sig], 32, 7),
        (&[8, 5, 1], &[Tanh, Relu], 16, 3),
        (&[3, 4, 4, 2], &[Relu, Tanh, Id], 9, 2),
    ] {
        let model = Model::random(widths, acts, 3).unwrap();
        let data = random_data(&model, batch, 4);
        let mut ev = GpuEvaluator::new(ctx.clone(), &model, &data).unwrap();
        assert!(
            ev.is_fused(),
            "{widths:?} x {batch} should run fused_epochs"
        );
        let plan = LoopPlan {
            model: &model,
            batch,
            closed: false,
            epochs: epochs as u64,
            loss: Loss::Mse,
        };
        let planned = loop_passes(KernelId::FusedEpochs, &plan);
        let kernel = KernelId::FusedEpochs;
        let measured = measure(&mut ev, kernel, planned, |ev| {
            resident(ev, &model, epochs, epochs)
        });
        seen.push(kernel);
        rows.push(("fused epochs", kernel, planned, measured));
    }
    let mut bad = Vec::new();
    for &(case, kernel, planned, measured) in &rows {
        let line = format!(
            "{case:>14} {:>28}: planned {planned:>6}, measured {}",
            kernel.name(),
            measured.map_or("over the cap".into(), |m| m.to_string())
        );
        eprintln!("{line}");
        if measured.is_none_or(|m| !agrees(kernel, planned, m)) {
            bad.push(line);
        }
    }
    assert!(
        bad.is_empty(),
        "counts differ from llvmpipe's:\n{}",
        bad.join("\n")
    );
    let missing: Vec<&str> = KernelId::ALL
        .iter()
        .filter(|k| !seen.contains(k))
        .map(|k| k.name())
        .collect();
    assert!(missing.is_empty(), "kernels no case measures: {missing:?}");
}

#[test]
fn the_tripwire_turns_a_cut_short_kernel_into_an_error() {
    let Some(ctx) = llvmpipe() else { return };
    let case = &cases()[0];
    let (model, _, mut ev) = build(&ctx, case);
    let (kernel, planned) = ev.loop_counts()[0];
    // Exactly at the cap: fine. One pass more: the kernel's own id in the error.
    let at_cap = (KERNEL_PASS_BUDGET - planned) as u32;
    ev.set_loop_burn(Some((kernel, at_cap)));
    step(&mut ev, &model, case.shape).unwrap();
    ev.set_loop_burn(Some((kernel, at_cap + 1)));
    match step(&mut ev, &model, case.shape) {
        Err(e @ Error::LoopCap { kernel: name, .. }) => {
            assert_eq!(name, kernel.name());
            assert_eq!(
                perturb::cli::exit::exit_code(&e),
                perturb::cli::exit::EXIT_GPU_FAULT
            );
        }
        other => panic!("one pass past the cap gave {other:?}"),
    }
    // The word stays set until cleared: a later step is no less wrong.
    ev.set_loop_burn(None);
    step(&mut ev, &model, case.shape).unwrap();
}

#[test]
fn a_model_whose_kernel_would_pass_the_cap_is_refused_with_both_numbers() {
    let Some(ctx) = llvmpipe() else { return };
    // nudged_sse runs every input of invocation 0's units: find the narrowest single layer whose
    // count passes the budget, and the one below it.
    let count = |n_in: usize| {
        let model = Model::random(&[n_in, 1], &[Sig], 1).unwrap();
        let plan = LoopPlan {
            model: &model,
            batch: 1,
            closed: false,
            epochs: 0,
            loss: Loss::Mse,
        };
        loop_passes(KernelId::NudgedSse, &plan)
    };
    let over = (1..200_000)
        .find(|&n| count(n) > KERNEL_PASS_BUDGET)
        .unwrap();
    for (n_in, fits) in [(over - 1, true), (over, false)] {
        let model = Model::random(&[n_in, 1], &[Sig], 1).unwrap();
        let data = random_data(&model, 1, 2);
        match GpuEvaluator::new(ctx.clone(), &model, &data) {
            // (Not run: a step of tens of thousands of evaluations each looping to the cap takes
            // minutes on llvmpipe; the fused and reuse_seq boundaries below are run.)
            Ok(ev) => {
                assert!(fits, "{n_in} inputs: built though over the cap");
                let planned = ev.loop_counts()[0].1;
                assert_eq!(planned, KERNEL_PASS_BUDGET);
            }
            Err(e @ Error::LoopsExceedCap { passes, cap, .. }) => {
                assert!(!fits, "{n_in} inputs: refused though within the cap: {e}");
                assert_eq!(passes, count(n_in) + GUARD_PASSES);
                assert_eq!(cap, LLVMPIPE_LOOP_CAP);
                let msg = e.to_string();
                assert!(
                    msg.contains(&passes.to_string()) && msg.contains("65535"),
                    "{msg}"
                );
            }
            Err(e) => panic!("{n_in} inputs: {e}"),
        }
    }
}

/// Host-loop losses of `epochs` full-batch steps on the CPU reference.
fn cpu_losses(model: &Model, data: &Dataset, hyper: &Hyper, method: Method) -> Vec<f32> {
    let mut cpu = CpuEvaluator::<f32>::with_method(model, data, method).unwrap();
    train(&mut cpu, &model.params, hyper, |_, _| {})
        .unwrap()
        .losses
        .iter()
        .map(|&l| l as f32)
        .collect()
}

#[test]
fn fused_epochs_just_below_and_above_the_cap_train_like_the_cpu_bit_for_bit() {
    let Some(ctx) = llvmpipe() else { return };
    // The issue's cases (32 samples of the book's network; 8-5-1 on 16) and ones where a naive
    // count would be off by a factor: many samples on tiny layers, a deeper net.
    for (widths, acts, batch) in [
        (&[2usize, 3, 1][..], &[Sig, Sig][..], 32usize),
        (&[8, 5, 1], &[Tanh, Sig], 16),
        (&[1, 1, 1], &[Sig, Sig], 200),
        (&[3, 4, 4, 2], &[Relu, Tanh, Id], 12),
    ] {
        let model = Model::random(widths, acts, 5).unwrap();
        let data = random_data(&model, batch, 6);
        let mut ev = GpuEvaluator::new(ctx.clone(), &model, &data).unwrap();
        let Some(&(_, planned)) = ev
            .loop_counts()
            .iter()
            .find(|(k, _)| *k == KernelId::FusedEpochs)
        else {
            panic!("{widths:?} x {batch}: not fused");
        };
        // The planner's epochs per dispatch: the most that fit, one more would not.
        let per = (1..=1024u64)
            .take_while(|&e| {
                let plan = LoopPlan {
                    model: &model,
                    batch,
                    closed: false,
                    epochs: e,
                    loss: Loss::Mse,
                };
                loop_passes(KernelId::FusedEpochs, &plan) <= KERNEL_PASS_BUDGET
            })
            .last()
            .unwrap();
        let plan = |epochs| LoopPlan {
            model: &model,
            batch,
            closed: false,
            epochs,
            loss: Loss::Mse,
        };
        assert_eq!(planned, loop_passes(KernelId::FusedEpochs, &plan(per)));
        if per < 1024 {
            assert!(loop_passes(KernelId::FusedEpochs, &plan(per + 1)) > KERNEL_PASS_BUDGET);
        }
        let epochs = 2 * per as usize + 3;
        let hyper = Hyper {
            epochs,
            lr: 0.5,
            ..Hyper::book()
        };
        let host = cpu_losses(&model, &data, &hyper, Method::Naive);
        // Asked for more epochs per submission than fit: the planner caps them; asked for
        // exactly as many, and one fewer.
        for ask in [per as usize + 1, per as usize, per as usize - 1, 4096] {
            let r = ev
                .train_resident(&model.params, &hyper, ask, None, |_, _| {})
                .unwrap_or_else(|e| panic!("{widths:?} x {batch}, {ask} per submission: {e}"));
            let losses: Vec<f32> = r.losses.iter().map(|&l| l as f32).collect();
            let what = format!("{widths:?} x {batch}, {per} epochs fit, {ask} asked: resident");
            assert_ulp_close(&what, &losses, &host, 0);
        }
    }
}

#[test]
fn reuse_seq_and_forward_tile_fall_back_just_above_the_cap_and_stay_bit_exact() {
    let Some(ctx) = llvmpipe() else { return };
    // reuse_seq loops over every sample per weight: find the batch where the book's network
    // crosses the budget, then run one batch below and one above (where the planner must pick
    // the split kernel instead).
    let model = Model::random(&[2, 3, 1], &[Sig, Sig], 9).unwrap();
    let over = first_batch_over_reuse_seq_cap(&model);
    for (batch, kernel) in [
        (over - 1, ReuseKernel::Invocation),
        (over, ReuseKernel::Split),
    ] {
        let data = random_data(&model, batch, 10);
        let opts = GpuOptions {
            method: Method::Reuse,
            reuse_kernel: Some(ReuseKernel::Invocation),
            ..GpuOptions::default()
        };
        let mut ev = GpuEvaluator::with_options(ctx.clone(), &model, &data, opts).unwrap();
        assert_eq!(ev.reuse_kernel(), Some(kernel), "{batch} samples");
        let hyper = Hyper {
            epochs: 3,
            lr: 0.5,
            ..Hyper::book()
        };
        let host = cpu_losses(&model, &data, &hyper, Method::Reuse);
        let gpu: Vec<f32> = train(&mut ev, &model.params, &hyper, |_, _| {})
            .unwrap()
            .losses
            .iter()
            .map(|&l| l as f32)
            .collect();
        assert_ulp_close(&format!("{batch} samples, host loop"), &gpu, &host, 0);
        let resident: Vec<f32> = ev
            .train_resident(&model.params, &hyper, 2, None, |_, _| {})
            .unwrap()
            .losses
            .iter()
            .map(|&l| l as f32)
            .collect();
        assert_ulp_close(&format!("{batch} samples, resident"), &resident, &host, 0);
    }
}

#[test]
fn every_estimator_on_a_fused_size_model_matches_the_cpu_in_the_host_loop() {
    let Some(ctx) = llvmpipe() else { return };
    let model = Model::random(&[2, 3, 1], &[Sig, Sig], 2).unwrap();
    let data = random_data(&model, 32, 3);
    for estimator in [
        Estimator::Forward,
        Estimator::Central,
        Estimator::Richardson,
        Estimator::Spsa {
            samples: 2,
            direction: perturb::rng::Direction::Gaussian,
        },
    ] {
        let hyper = Hyper {
            epochs: 5,
            lr: 0.5,
            estimator,
            step: StepMode::Nominal,
            ..Hyper::book()
        };
        let opts = GpuOptions {
            shape: estimator.shape(),
            ..GpuOptions::default()
        };
        let mut ev = GpuEvaluator::with_options(ctx.clone(), &model, &data, opts).unwrap();
        let gpu: Vec<f32> = train(&mut ev, &model.params, &hyper, |_, _| {})
            .unwrap()
            .losses
            .iter()
            .map(|&l| l as f32)
            .collect();
        let host = cpu_losses(&model, &data, &hyper, Method::Naive);
        assert_ulp_close(&format!("{estimator:?}"), &gpu, &host, 0);
    }
}

/// A one-off shader: `body` (with `n`, `m`, `kind` and `lid` to use, `acc` to write), then the
/// same tripwire as the kernels with `burn` extra passes; whether the tripwire held.
fn rule_shader(body: &str) -> String {
    format!(
        r#"
@group(0) @binding(0) var<storage, read> args: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
fn pick(x: f32, kind: u32) -> f32 {{
    switch kind {{
        case 1u: {{ return x * 2.0; }}
        case 2u: {{ return x + 1.0; }}
        default: {{ return x; }}
    }}
}}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {{
    let lid = gid.x;
    let n = args[0];
    let m = args[1];
    let burn = args[2];
    let kind = args[3];
    var acc = 0.0;
    {body}
    let g = burn + 2u;
    var c = 0u;
    for (var i = 0u; i < g; i++) {{ c = c + 1u; }}
    out[gid.x] = select(0u, 1u, c == g) + select(0u, 2u, acc == 12345.0);
}}
"#
    )
}

#[test]
fn the_pass_rules_the_counts_rest_on_hold_on_this_driver() {
    let Some(ctx) = llvmpipe() else { return };
    let for_n = "for (var i = 0u; i < n; i++) { acc = acc + f32(i); }";
    let nested =
        "for (var i = 0u; i < n; i++) { for (var j = 0u; j < m; j++) { acc = acc + f32(j); } }";
    let if_m = "if (m == 1u) { for (var i = 0u; i < n; i++) { acc = acc + f32(i); } }";
    let if_else = "if (m == 1u) { for (var i = 0u; i < n; i++) { acc = acc + f32(i); } } \
                   else { for (var i = 0u; i < n; i++) { acc = acc + 2.0 * f32(i); } }";
    // (what, body, n, m, kind, passes): the rules of src/gpu/kernels.rs, one construct each.
    let rules: &[(&str, &str, u32, u32, u32, u64)] = &[
        ("nothing", "", 0, 0, 0, 0),
        ("a loop of 0 iterations: one exit test", for_n, 0, 0, 0, 1),
        ("a loop of 5: 5 + 1", for_n, 5, 0, 0, 6),
        (
            "3 x 0 nested: 4 + 3 x 1 + 1 at the exit",
            nested,
            3,
            0,
            0,
            8,
        ),
        (
            "3 x 4 nested: 4 + 3 x 5 + 1 at the exit",
            nested,
            3,
            4,
            0,
            20,
        ),
        ("a branch no lane takes: its loop once", if_m, 5, 0, 0, 1),
        ("a branch taken: its loop", if_m, 5, 1, 0, 6),
        (
            "if/else: the taken loop and the other once",
            if_else,
            5,
            1,
            0,
            7,
        ),
        (
            "a branch one lane takes: the group runs its loop",
            "if (lid == 0u) { for (var i = 0u; i < n; i++) { acc = acc + f32(i); } }",
            5,
            0,
            0,
            6,
        ),
        (
            "a switch: nothing",
            "acc = pick(acc + 1.0, kind);",
            0,
            0,
            1,
            0,
        ),
        (
            "a switch in a loop of 3: the loop's 4",
            "for (var i = 0u; i < n; i++) { acc = pick(acc + 1.0, kind); }",
            3,
            0,
            1,
            4,
        ),
        (
            "100 samples strided by 64: lane 0's 2 + 1",
            "for (var s = lid; s < n; s += 64u) { acc = acc + f32(s); }",
            100,
            0,
            0,
            3,
        ),
        (
            "a while loop of 3: 3 + 1",
            "var l = 0u; while (l < n) { l++; acc = acc + 1.0; }",
            3,
            0,
            0,
            4,
        ),
    ];
    let mut bad = Vec::new();
    for &(what, body, n, m, kind, passes) in rules {
        let src = rule_shader(body);
        let held = |burn: u64| {
            let out: Vec<u32> = run_kernel(&ctx, &src, &[n, m, burn as u32, kind], 64, 64);
            out[0] & 1 == 1
        };
        // The body's passes plus the tripwire's fit exactly: one burn pass more does not.
        let burn = KERNEL_PASS_BUDGET - passes;
        let (at, past) = (held(burn), held(burn + 1));
        eprintln!("{what}: {passes} passes: at the cap {at}, one past {past}");
        if !at || past {
            bad.push(what);
        }
    }
    assert!(bad.is_empty(), "rules that do not hold here: {bad:?}");
}

/// `perturb train … --report` in a scratch directory; the report's losses.
fn cli_losses(dir: &std::path::Path, args: &[&str], report: &str) -> Vec<f64> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(args)
        .args(["--quiet", "--report", report])
        .current_dir(dir)
        .output()
        .expect("run perturb");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(dir.join(report)).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    r["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

#[test]
fn the_issues_commands_agree_host_and_resident_bit_for_bit() {
    let Some(_ctx) = llvmpipe() else { return };
    let dir = std::env::temp_dir().join(format!("perturb-loopcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The issue's data: 32 rows of the book's network, and 16 rows of 8 inputs.
    let r32: String = (0..32)
        .map(|i| format!("{},{},{}\n", i as f64 / 32.0, 1.0 - i as f64 / 32.0, i % 2))
        .collect();
    std::fs::write(dir.join("r32.csv"), r32).unwrap();
    let r16: String = (0..16)
        .map(|i| {
            let x: Vec<String> = (0..8)
                .map(|j| format!("{}", ((i * 8 + j) % 13) as f64 / 13.0))
                .collect();
            format!("{},{}\n", x.join(","), i % 2)
        })
        .collect();
    std::fs::write(dir.join("r16.csv"), r16).unwrap();
    for (layers, data, epochs) in [("2,3,1", "r32.csv", "200"), ("8,5,1", "r16.csv", "30")] {
        let base = [
            "train", "--layers", layers, "--data", data, "--epochs", epochs,
        ];
        let host = cli_losses(&dir, &base, "host.json");
        let resident = cli_losses(
            &dir,
            &[&base[..], &["--loop", "resident"]].concat(),
            "r.json",
        );
        assert_eq!(host.len(), resident.len());
        let worst = host
            .iter()
            .zip(&resident)
            .position(|(h, r)| h.to_bits() != r.to_bits());
        if let Some(i) = worst {
            panic!(
                "{layers} on {data}: epoch {}: host {} resident {}",
                i + 1,
                host[i],
                resident[i]
            );
        }
        // No loss of exactly 0.0 (what a cut-short loop used to read as).
        assert!(resident.iter().all(|&l| l != 0.0), "{layers}: a zero loss");
    }
}

/// The mini-batch resident loop runs the step kernels of the evaluators built for its batches
/// (the full batches' and the last, shorter one's) and `update` (no loop), so its loop counts
/// are theirs. With batches just below reuse_seq's cap (the invocation kernel) and just above it
/// (the split kernel), in an epoch whose last batch lands on the other side, it equals the host
/// loop bit for bit.
#[test]
fn minibatch_resident_batches_just_below_and_above_the_cap_equal_the_host_loop() {
    use perturb::optim::Optimizer;
    use perturb::settings::Batching;
    use perturb::train::{drive_batched, gather, BatchEvaluators, Control, Run};
    use perturb::Loop;
    let Some(ctx) = llvmpipe() else { return };
    let model = Model::random(&[2, 3, 1], &[Sig, Sig], 9).unwrap();
    let over = first_batch_over_reuse_seq_cap(&model);
    // 2·over − 1 samples: batches of over − 1 leave a last batch of 1; batches of over leave
    // one of over − 1.
    let data = random_data(&model, 2 * over - 1, 12);
    let kernel = |rows: usize| match rows {
        r if r < over => ReuseKernel::Invocation,
        _ => ReuseKernel::Split,
    };
    let build = |rows: usize| {
        let opts = GpuOptions {
            method: Method::Reuse,
            reuse_kernel: Some(ReuseKernel::Invocation),
            ..GpuOptions::default()
        };
        let first = gather(&data, &(0..rows as u32).collect::<Vec<_>>());
        let ev = GpuEvaluator::with_options(ctx.clone(), &model, &first, opts).unwrap();
        assert_eq!(ev.reuse_kernel(), Some(kernel(rows)), "{rows} samples");
        ev
    };
    for size in [over - 1, over] {
        let batching = Batching {
            size,
            shuffle: true,
        };
        let mut evs = BatchEvaluators {
            full: build(size),
            rest: Some(build(data.len() % size)),
        };
        let hyper = Hyper {
            epochs: 2,
            lr: 0.5,
            ..Hyper::book()
        };
        let mut go = |looping| {
            let mut runs =
                vec![Run::new(hyper, model.params.clone()).with_optimizer(Optimizer::adam())];
            drive_batched(
                &mut evs,
                &data,
                batching,
                &mut runs,
                looping,
                Control::default(),
                |_| {},
            )
            .unwrap_or_else(|e| panic!("batches of {size}, {looping:?}: {e}"));
            runs.pop().unwrap()
        };
        let (r, h) = (go(Loop::Resident(1)), go(Loop::Host));
        assert_eq!(
            h.step_losses.len(),
            2 * data.len().div_ceil(size),
            "steps of two epochs"
        );
        let f = |v: &[f64]| v.iter().map(|&l| l as f32).collect::<Vec<f32>>();
        let what = format!("batches of {size} ({over} crosses the cap)");
        assert_ulp_close(
            &format!("{what}: step losses"),
            &f(&r.step_losses),
            &f(&h.step_losses),
            0,
        );
        assert_ulp_close(&format!("{what}: parameters"), &r.params, &h.params, 0);
    }
}
