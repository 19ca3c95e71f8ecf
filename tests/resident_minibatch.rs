//! The resident GPU loop with mini-batches and optimisers against the host loop on the same
//! adapter (whichever `WGPU_BACKEND` selects: CI runs lavapipe Vulkan and GL llvmpipe): every
//! step's loss, every epoch's loss, the parameters and the optimiser state, bit for bit on
//! llvmpipe, over loss × optimiser × shuffle × batch size (dividing the samples and not) ×
//! method; resumes at an epoch boundary and in the middle of an epoch; validation; the CLI.

mod common;

use common::{assert_rel_close, assert_ulp_close, gpu, max_ulp, random_data};
use ndarray::Array2;
use perturb::evaluator::{ResidentBatches, ResidentJob};
use perturb::gpu::{GpuContext, GpuEvaluator, GpuOptions};
use perturb::optim::{OptState, Optimizer};
use perturb::session::{Backend, Finished};
use perturb::settings::Batching;
use perturb::train::{self, BatchEvaluators, Control, Run};
use perturb::{
    Activation, Dataset, Error, Evaluator, Hyper, Loop, Loss, Method, Model, Outcome, Training,
};
use rand::{RngExt, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};

/// Samples of the grid's data: batches of 4 divide them, batches of 5 leave a last batch of 2.
const SAMPLES: usize = 12;
const BATCH_SIZES: [usize; 2] = [4, 5];
const EPOCHS: usize = 3;
/// ULP distance allowed between the resident and the host loop on llvmpipe (sign-ordered bits,
/// float32 values and float64 epoch means alike): none.
const RESIDENT_VS_HOST_ULP: u64 = 0;

/// Seeded inputs in [-1, 1) and one-hot class targets.
fn class_data(model: &Model, samples: usize, seed: u64) -> Dataset {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let x = Array2::from_shape_fn((samples, model.inputs()), |_| {
        rng.random_range(-1.0f32..1.0)
    });
    let mut y = Array2::zeros((samples, model.outputs()));
    for mut row in y.rows_mut() {
        row[rng.random_range(0..model.outputs())] = 1.0;
    }
    Dataset::new(x, y).unwrap()
}

/// A small network and data for `loss` (an identity output layer for cross-entropy).
fn net(loss: Loss) -> (Model, Dataset) {
    let (act, model) = match loss {
        Loss::Mse => (Activation::Sigmoid, [3, 4, 2]),
        Loss::CrossEntropy => (Activation::Tanh, [3, 5, 3]),
    };
    let model = Model::random(&model, &[act, Activation::Identity], 4).unwrap();
    let data = match loss {
        Loss::Mse => random_data(&model, SAMPLES, 9),
        Loss::CrossEntropy => class_data(&model, SAMPLES, 9),
    };
    (model, data)
}

fn hyper(epochs: usize) -> Hyper {
    Hyper {
        epochs,
        lr: 0.05,
        eps: 1e-3,
        seed: 7,
        ..Hyper::book()
    }
}

fn optimizers() -> [Optimizer; 3] {
    [Optimizer::Sgd, Optimizer::momentum(), Optimizer::adam()]
}

/// One run through the library's session.
fn train_on(
    ctx: &GpuContext,
    loss: Loss,
    method: Method,
    batching: Batching,
    looping: Loop,
    start: Run,
    val: Option<&Dataset>,
) -> Finished {
    let (model, data) = net(loss);
    let mut t = Training::new(model, data)
        .backend(Backend::Gpu(Box::new(ctx.clone())))
        .method(method)
        .loss(loss)
        .batching(batching)
        .looping(looping)
        .runs(vec![start]);
    if let Some(v) = val {
        t = t.validation(v.clone());
    }
    let done = t.run_all().unwrap();
    assert!(done.fault.is_none(), "{:?}", done.fault);
    done
}

fn fresh_run(loss: Loss, opt: Optimizer, epochs: usize) -> Run {
    Run::new(hyper(epochs), net(loss).0.params).with_optimizer(opt)
}

/// Sign-ordered ULP distance of two float64 values (NaN infinitely far).
fn ulp64(a: f64, b: f64) -> u64 {
    if a.is_nan() || b.is_nan() {
        return u64::MAX;
    }
    let ordered = |x: f64| {
        let bits = x.to_bits() as i128;
        if bits & (1 << 63) != 0 {
            -(bits & 0x7fff_ffff_ffff_ffff)
        } else {
            bits
        }
    };
    (ordered(a) - ordered(b)).unsigned_abs() as u64
}

/// Asserts float64 values within `max` ULP, naming the worst index and both values.
fn assert_ulp64_close(what: &str, got: &[f64], want: &[f64], max: u64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let (worst, d) = got
        .iter()
        .zip(want)
        .map(|(&a, &b)| ulp64(a, b))
        .enumerate()
        .max_by_key(|&(_, d)| d)
        .unwrap_or((0, 0));
    assert!(
        d <= max,
        "{what}: index {worst} is {d} ULP apart (allowed {max}): resident {} vs host {}",
        got[worst],
        want[worst]
    );
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// The resident run equals the host run: bit for bit on llvmpipe, within the trajectory bound
/// elsewhere (another adapter may fuse the update's multiply-adds).
fn assert_same_run(what: &str, exact: bool, r: &Run, h: &Run) {
    assert_eq!(r.outcome, h.outcome, "{what}: outcome");
    assert_eq!(r.losses.len(), h.losses.len(), "{what}: epochs");
    assert_eq!(r.step_losses.len(), h.step_losses.len(), "{what}: steps");
    if !exact {
        let what = format!("{what}: epoch losses");
        assert_rel_close(
            &what,
            &r.losses,
            &h.losses,
            common::OTHER_ADAPTER_TRAJECTORY_REL,
        );
        return;
    }
    let max = RESIDENT_VS_HOST_ULP;
    assert_ulp64_close(&format!("{what}: epoch losses"), &r.losses, &h.losses, max);
    let (rs, hs) = (f32s(&r.step_losses), f32s(&h.step_losses));
    assert_ulp_close(&format!("{what}: step losses"), &rs, &hs, max);
    assert_ulp_close(&format!("{what}: parameters"), &r.params, &h.params, max);
    let state = |s: &OptState| [s.velocity.clone(), s.m.clone(), s.v.clone()].concat();
    let (rst, hst) = (state(&r.state), state(&h.state));
    assert_ulp_close(&format!("{what}: optimiser state"), &rst, &hst, max);
    assert_eq!(r.state.t, h.state.t, "{what}: adam steps");
}

#[test]
fn resident_minibatch_runs_equal_the_host_loop_over_the_grid() {
    let Some(ctx) = gpu() else { return };
    let exact = max_ulp(&ctx) == 0;
    for loss in [Loss::Mse, Loss::CrossEntropy] {
        for method in [Method::Naive, Method::Reuse] {
            for size in BATCH_SIZES {
                for shuffle in [true, false] {
                    for opt in optimizers() {
                        let what = format!(
                            "{loss:?} {} {} batch {size} shuffle {shuffle}",
                            method.name(),
                            opt.name()
                        );
                        let batching = Batching { size, shuffle };
                        let start = fresh_run(loss, opt, EPOCHS);
                        let go = |looping| {
                            let done = train_on(
                                &ctx,
                                loss,
                                method,
                                batching,
                                looping,
                                start.clone(),
                                None,
                            );
                            done.runs.into_iter().next().unwrap()
                        };
                        let r = go(Loop::Resident(100));
                        let h = go(Loop::Host);
                        assert_eq!(h.step_losses.len(), EPOCHS * SAMPLES.div_ceil(size));
                        assert_ne!(h.params, start.params, "{what}: training moves");
                        assert_same_run(&what, exact, &r, &h);
                    }
                }
            }
        }
    }
}

/// Full batches with momentum and Adam (and the book's sgd one epoch per submission) run the
/// resident step loop too.
#[test]
fn resident_full_batch_optimisers_equal_the_host_loop() {
    let Some(ctx) = gpu() else { return };
    let exact = max_ulp(&ctx) == 0;
    for (opt, per_submit) in [
        (Optimizer::momentum(), 100),
        (Optimizer::adam(), 100),
        (Optimizer::Sgd, 1),
    ] {
        let what = format!("full batch {} per submit {per_submit}", opt.name());
        let start = fresh_run(Loss::CrossEntropy, opt, 5);
        let go = |looping| {
            let full = Batching::full();
            let done = train_on(
                &ctx,
                Loss::CrossEntropy,
                Method::Reuse,
                full,
                looping,
                start.clone(),
                None,
            );
            done.runs.into_iter().next().unwrap()
        };
        let r = go(Loop::Resident(per_submit));
        let h = go(Loop::Host);
        assert_same_run(&what, exact, &r, &h);
    }
}

/// Validation loss and accuracy and the training accuracy after every epoch are the host
/// loop's (they are measured from each epoch's parameters, read back).
#[test]
fn resident_runs_report_validation_like_the_host_loop() {
    let Some(ctx) = gpu() else { return };
    let (model, _) = net(Loss::CrossEntropy);
    let val = class_data(&model, 7, 11);
    let batching = Batching {
        size: 5,
        shuffle: true,
    };
    let go = |looping| {
        let start = fresh_run(Loss::CrossEntropy, Optimizer::adam(), EPOCHS);
        train_on(
            &ctx,
            Loss::CrossEntropy,
            Method::Reuse,
            batching,
            looping,
            start,
            Some(&val),
        )
    };
    let (r, h) = (go(Loop::Resident(100)), go(Loop::Host));
    assert_eq!(r.val.len(), EPOCHS, "one validation per epoch");
    assert_eq!(
        r.train_accuracy.len(),
        EPOCHS,
        "one training accuracy per epoch"
    );
    if max_ulp(&ctx) == 0 {
        assert_eq!(r.val, h.val, "validation measurements");
        assert_eq!(r.train_accuracy, h.train_accuracy, "training accuracy");
    }
}

/// A run whose loss or parameters overflow stops at the same step as in the host loop, with its
/// last finite parameters and optimiser state, the steps taken in that epoch, and the same
/// message. The learning rate is the smallest power of √10 (from 1e17) that makes the host run
/// diverge; at least one optimiser diverges after its first step (a divergence mid-run).
#[test]
fn a_diverging_resident_run_stops_where_the_host_loop_stops() {
    let Some(ctx) = gpu() else { return };
    let exact = max_ulp(&ctx) == 0;
    let batching = Batching {
        size: 5,
        shuffle: true,
    };
    let mut longest = 0;
    for opt in [Optimizer::Sgd, Optimizer::momentum(), Optimizer::adam()] {
        let go = |looping, lr: f64| {
            let mut start = fresh_run(Loss::Mse, opt, 6);
            start.hyper.lr = lr;
            let done = train_on(
                &ctx,
                Loss::Mse,
                Method::Naive,
                batching,
                looping,
                start,
                None,
            );
            done.runs.into_iter().next().unwrap()
        };
        let (lr, h) = (34..76)
            .map(|e| 10f64.powf(f64::from(e) / 2.0))
            .map(|lr| (lr, go(Loop::Host, lr)))
            .find(|(_, h)| matches!(h.outcome, Some(Outcome::Diverged { .. })))
            .unwrap_or_else(|| panic!("{}: no learning rate diverges", opt.name()));
        let r = go(Loop::Resident(100), lr);
        let what = format!("{} at lr {lr:e}: {:?}", opt.name(), h.outcome);
        eprintln!("{what} after {} steps", h.step_losses.len());
        longest = longest.max(h.step_losses.len());
        assert_same_run(&what, exact, &r, &h);
    }
    assert!(longest > 1, "every run diverged at its first step");
}

/// An evaluator that raises `flag` once it has been probed `after` times: the host loop then
/// stops before its next step, in the middle of an epoch.
struct StopAfter<'f> {
    inner: GpuEvaluator,
    after: usize,
    flag: &'f AtomicBool,
}

impl Evaluator for StopAfter<'_> {
    type Loss = f32;
    fn num_params(&self) -> usize {
        self.inner.num_params()
    }
    fn probe(
        &mut self,
        params: &[f32],
        probes: &[perturb::Probe],
        active: &[bool],
        losses: &mut [f32],
        values: &mut [f32],
    ) -> perturb::Result<()> {
        self.after = self.after.saturating_sub(1);
        if self.after == 0 {
            self.flag.store(true, Ordering::Relaxed);
        }
        self.inner.probe(params, probes, active, losses, values)
    }
    fn device(&self) -> perturb::DeviceInfo {
        self.inner.device()
    }
    fn batch_len(&self) -> usize {
        self.inner.batch_len()
    }
    fn set_batch(&mut self, data: &Dataset) -> perturb::Result<()> {
        self.inner.set_batch(data)
    }
}

/// The evaluators of a mini-batch run on `data` (the full batches' and the last, shorter one's).
fn evaluators(
    ctx: &GpuContext,
    model: &Model,
    data: &Dataset,
    size: usize,
) -> BatchEvaluators<GpuEvaluator> {
    let opts = GpuOptions {
        method: Method::Reuse,
        loss: Loss::CrossEntropy,
        ..Default::default()
    };
    let first = |rows: usize| train::gather(data, &(0..rows as u32).collect::<Vec<_>>());
    let build = |rows| GpuEvaluator::with_options(ctx.clone(), model, &first(rows), opts).unwrap();
    BatchEvaluators {
        full: build(size),
        rest: (!data.len().is_multiple_of(size)).then(|| build(data.len() % size)),
    }
}

/// A run stopped at an epoch's end or in the middle of an epoch (as a checkpoint holds it:
/// parameters, optimiser state, epoch losses and the steps taken) and resumed in the resident
/// loop equals the uninterrupted resident run, bit for bit.
#[test]
fn resumed_resident_runs_equal_the_uninterrupted_run() {
    let Some(ctx) = gpu() else { return };
    let exact = max_ulp(&ctx) == 0;
    let (model, data) = net(Loss::CrossEntropy);
    let batching = Batching {
        size: 5,
        shuffle: true,
    };
    let whole = {
        let start = fresh_run(Loss::CrossEntropy, Optimizer::adam(), EPOCHS);
        let done = train_on(
            &ctx,
            Loss::CrossEntropy,
            Method::Reuse,
            batching,
            Loop::Resident(100),
            start,
            None,
        );
        done.runs.into_iter().next().unwrap()
    };
    // Steps per epoch: 5 + 5 on the full evaluator, then 2 on the rest one. Stops after the
    // full evaluator's 2nd probe (before epoch 1's last batch), its 3rd (after epoch 2's first
    // step), or the rest evaluator's 1st (at the end of epoch 1).
    for (full_after, rest_after) in [(2, usize::MAX), (3, usize::MAX), (usize::MAX, 1)] {
        let flag = AtomicBool::new(false);
        let BatchEvaluators { full, rest } = evaluators(&ctx, &model, &data, batching.size);
        let mut evs = BatchEvaluators {
            full: StopAfter {
                inner: full,
                after: full_after,
                flag: &flag,
            },
            rest: rest.map(|inner| StopAfter {
                inner,
                after: rest_after,
                flag: &flag,
            }),
        };
        let mut runs = vec![fresh_run(Loss::CrossEntropy, Optimizer::adam(), EPOCHS)];
        let control = Control {
            stop: Some(&flag),
            allow_divergence: false,
        };
        train::drive_batched(
            &mut evs,
            &data,
            batching,
            &mut runs,
            Loop::Host,
            control,
            |_| {},
        )
        .unwrap();
        let mut stopped = runs.pop().unwrap();
        let what = format!("stopped after probes ({full_after}, {rest_after})");
        assert_eq!(stopped.outcome, Some(Outcome::Stopped), "{what}");
        stopped.outcome = None;
        let resumed = train_on(
            &ctx,
            Loss::CrossEntropy,
            Method::Reuse,
            batching,
            Loop::Resident(100),
            stopped,
            None,
        );
        let resumed = resumed.runs.into_iter().next().unwrap();
        assert_same_run(&what, exact, &resumed, &whole);
    }
}

/// A batch size that does not divide the samples needs the evaluator built for the last,
/// shorter batch; without it the resident loop refuses (typed) rather than train differently.
#[test]
fn a_non_dividing_batch_without_its_rest_evaluator_is_refused() {
    let Some(ctx) = gpu() else { return };
    let (model, data) = net(Loss::CrossEntropy);
    let mut evs = evaluators(&ctx, &model, &data, 5);
    let h = hyper(EPOCHS);
    let state = OptState::default();
    let job = ResidentJob {
        init: &model.params,
        hyper: &h,
        optimizer: Optimizer::Sgd,
        state: &state,
        first_epoch: 0,
        skip_steps: 0,
        batches: Some(ResidentBatches {
            data: &data,
            batching: Batching {
                size: 5,
                shuffle: true,
            },
        }),
        stop: None,
    };
    let err = evs
        .full
        .resident_steps(None, &job, &mut |_| {})
        .unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported { what, .. } if what.contains("last, shorter batch")),
        "{err}"
    );
    // A rest evaluator built for another batch, or on another device, does not fit.
    let other = GpuContext::new(&perturb::gpu::AdapterOptions::from_env()).unwrap();
    for (what, ctx) in [("3 samples", &ctx), ("another device", &other)] {
        let rows = if what == "3 samples" { 3 } else { 2 };
        let mut wrong = evaluators(ctx, &model, &data, 5);
        if rows == 3 {
            wrong.rest = Some(evaluators(ctx, &model, &data, 9).rest.unwrap());
        }
        let err = evs
            .full
            .resident_steps(wrong.rest.as_mut(), &job, &mut |_| {})
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("the last batch of 2 samples")),
            "{what}: {err}"
        );
    }
    // With it, the same job runs.
    let done = evs
        .full
        .resident_steps(evs.rest.as_mut(), &job, &mut |_| {})
        .unwrap();
    assert_eq!(done.outcome, Outcome::Finished);
}

/// A scratch directory holding 23 samples of 3 inputs and a class label of 3 (a CSV).
fn cli_data(name: &str) -> (std::path::PathBuf, String) {
    let dir =
        std::env::temp_dir().join(format!("perturb-resident-mb-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut csv = String::from("a,b,c,y\n");
    for _ in 0..23 {
        let x: Vec<String> = (0..3)
            .map(|_| format!("{:.4}", rng.random_range(-1.0f32..1.0)))
            .collect();
        csv += &format!("{},{}\n", x.join(","), rng.random_range(0..3u32));
    }
    let data = dir.join("d.csv");
    std::fs::write(&data, csv).unwrap();
    (dir, data.to_str().unwrap().to_string())
}

/// Runs `perturb ARGS --report DIR/REPORT` in `dir` and returns the report less its wall time.
fn cli_report(dir: &std::path::Path, args: &[&str], report: &str) -> serde_json::Value {
    let path = dir.join(report);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(args)
        .args(["--report", path.to_str().unwrap()])
        .current_dir(dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{args:?}: {err}");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("seconds");
    v
}

/// The CLI's adam run on [`cli_data`] in batches of 7 (the last of 2), cross-entropy.
const CLI_RUN: [&str; 16] = [
    "train",
    "--layers",
    "3,5,3",
    "--activations",
    "tanh,identity",
    "--loss",
    "cross-entropy",
    "--batch-size",
    "7",
    "--optimizer",
    "adam",
    "--lr",
    "0.05",
    "--method",
    "reuse",
    "--seed",
];

/// `perturb train --loop resident --batch-size 7 --optimizer adam` writes the host loop's report
/// (all but its wall time), cross-entropy with a remainder batch.
#[test]
fn cli_resident_adam_minibatch_report_equals_the_host_loop() {
    let Some(ctx) = gpu() else { return };
    let (dir, data) = cli_data("report");
    let report = |looping: &str| {
        let mut args = CLI_RUN.to_vec();
        args.extend(["3", "--data", &data, "--epochs", "3", "--loop", looping]);
        cli_report(&dir, &args, &format!("{looping}.json"))
    };
    let (r, h) = (report("resident"), report("host"));
    assert_eq!(
        r["step_losses"].as_array().map(Vec::len),
        Some(12),
        "4 steps × 3 epochs"
    );
    if max_ulp(&ctx) == 0 {
        assert_eq!(r, h, "resident vs host report");
    }
}

/// A resident run checkpointed every epoch (optimiser state, epoch, steps, the shuffle's seed)
/// and resumed in the resident loop writes the uninterrupted run's report.
#[test]
fn cli_resident_checkpoints_resume_into_the_uninterrupted_run() {
    let Some(ctx) = gpu() else { return };
    let (dir, data) = cli_data("resume");
    let ck = dir.join("run.ckpt.json");
    let ck = ck.to_str().unwrap();
    let mut args = CLI_RUN.to_vec();
    args.extend(["3", "--data", &data, "--loop", "resident"]);
    let whole = cli_report(
        &dir,
        &[&args[..], &["--epochs", "4"]].concat(),
        "whole.json",
    );
    let flags = [
        "--epochs",
        "2",
        "--checkpoint-every",
        "1",
        "--checkpoint",
        ck,
    ];
    cli_report(&dir, &[&args[..], &flags].concat(), "first.json");
    let checkpoint: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck).unwrap()).unwrap();
    assert!(
        checkpoint.to_string().contains("\"m\""),
        "adam's state is checkpointed"
    );
    let resumed = ["train", "--resume", ck, "--epochs", "4"];
    let resumed = cli_report(&dir, &resumed, "resumed.json");
    if max_ulp(&ctx) == 0 {
        for key in ["losses", "step_losses", "model"] {
            assert_eq!(resumed[key], whole[key], "{key}: resumed vs uninterrupted");
        }
    }
}
