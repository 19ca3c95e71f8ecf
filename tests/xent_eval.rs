//! Cross-entropy in both evaluators (issue 14).
//!
//! - **the CPU reference is right**: its float64 losses and nudged-loss changes (naive and reuse;
//!   forward, central and SPSA probes) equal a straightforward float64 forward pass and softmax
//!   cross-entropy written here, loop by loop;
//! - **the float32 reuse form is accurate**: its deltas (per sample `xent(new logits) − xent_s`,
//!   or the cumulant series for a unit of the last hidden layer) stay within a stated bound of
//!   the exact (float64) changes, as the naive differences do, from eps = 1e-4 (the series almost
//!   everywhere) to eps = 1 (the exact form almost everywhere);
//! - **the series switches where it says**: just below `series_max_x` a hidden unit's change is the
//!   series' value, just above it the exact difference's, bit for bit, both accurate;
//! - **GPU = CPU**: every kernel the planner picks for cross-entropy (naive, SPSA, each reuse
//!   kernel, the tiled and stored unperturbed passes, the deep reuse kernel) gives the CPU
//!   reference's float32 numbers bit for bit on llvmpipe, over a grid of shapes × estimators.

mod common;

use common::{assert_step_close, assert_ulp_close, gpu, largest, max_ulp};
use ndarray::Array2;
use perturb::cpu::CpuEvaluator;
use perturb::estimate::{Estimator, Probe};
use perturb::gpu::{GpuContext, GpuEvaluator, GpuOptions, ReuseKernel};
use perturb::model::Loss;
use perturb::rng::Direction;
use perturb::train::{train, Evaluator};
use perturb::{Activation, Dataset, Error, Hyper, Method, Model};
use rand::{RngExt, SeedableRng};

use Activation::{Identity as Id, Relu, Sigmoid as Sig, Tanh};

/// float64 CPU values vs the float64 computation here: both round only at float64's precision,
/// so they agree to this many float64 epsilons of `1 + L` (reuse's rank-one update and the
/// reduction order differ from the plain loops here; measured: 2.1).
const F64_TOL_EPS: f64 = 16.0;
/// float32 reuse deltas vs exact (float64) changes of the same float32 nudges, in float32
/// epsilons of `1 + L`: a sample's `xent(new) − xent_s` is a difference of two float32 losses
/// (each a few epsilons of `1 + L_s` off); the series has no such cancellation (its truncation is
/// under 1/32 epsilon, its rounding relative to the change). Measured worst before the series:
/// 0.61 (eps 1e-4 to 1e-2); with it, over eps 1e-4 to 1: see the test's print (the naive
/// differences of whole float32 losses are printed beside it).
const F32_REUSE_TOL_EPS: f64 = 2.0;

/// Seeded inputs uniform in [-1, 1) and targets: one-hot labels, or (`soft`) random probability
/// rows.
fn class_data(model: &Model, samples: usize, soft: bool, seed: u64) -> Dataset {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let x = Array2::from_shape_fn((samples, model.inputs()), |_| {
        rng.random_range(-1.0f32..1.0)
    });
    let k = model.outputs();
    let mut y = Array2::zeros((samples, k));
    for mut row in y.rows_mut() {
        if soft {
            let w: Vec<f32> = (0..k).map(|_| rng.random_range(0.0f32..1.0)).collect();
            let total: f32 = w.iter().sum();
            for (t, v) in row.iter_mut().zip(w) {
                *t = v / total;
            }
        } else {
            row[rng.random_range(0..k)] = 1.0;
        }
    }
    Dataset::new(x, y).unwrap()
}

fn widths(model: &Model) -> Vec<usize> {
    let spans = model.layer_spans();
    std::iter::once(model.inputs())
        .chain(spans.iter().map(|s| s.outputs))
        .collect()
}

fn act_f64(a: Activation, x: f64) -> f64 {
    match a {
        Activation::Identity => x,
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Activation::Tanh => x.tanh(),
        Activation::Relu => x.max(0.0),
    }
}

/// Mean softmax cross-entropy of the network with `params` on `data`, in float64, written out:
/// `Σ_k p_k·(logsumexp(z) − z_k)` per sample.
fn xent_loss_f64(model: &Model, params: &[f32], data: &Dataset) -> f64 {
    let spans = model.layer_spans();
    let mut total = 0.0;
    for s in 0..data.len() {
        let mut h: Vec<f64> = data.x.row(s).iter().map(|&v| v as f64).collect();
        for span in &spans {
            let mut next = vec![0.0; span.outputs];
            for (u, out) in next.iter_mut().enumerate() {
                let mut z = params[span.b_off + u] as f64;
                for (i, &hi) in h.iter().enumerate() {
                    z += hi * params[span.w_off + i * span.outputs + u] as f64;
                }
                *out = act_f64(span.activation, z);
            }
            h = next;
        }
        let m = h.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + h.iter().map(|z| (z - m).exp()).sum::<f64>().ln();
        let p = data.y.row(s);
        total += h
            .iter()
            .zip(p)
            .map(|(z, &pk)| pk as f64 * (lse - z))
            .sum::<f64>();
    }
    total / data.len() as f64
}

/// `[L, values…]` of one probe, computed here in float64 from the probe's float32 nudges.
fn exact_probe(model: &Model, data: &Dataset, probe: &Probe) -> Vec<f64> {
    let params = &model.params;
    let base = xent_loss_f64(model, params, data);
    let mut out = vec![base];
    let mut nudged = params.clone();
    match *probe {
        Probe::Coordinates { offsets, count } => {
            for &h in &offsets[..count] {
                for k in 0..params.len() {
                    nudged[k] = params[k] + h;
                    out.push(xent_loss_f64(model, &nudged, data) - base);
                    nudged[k] = params[k];
                }
            }
        }
        Probe::Directions { .. } => {
            for i in 0..probe.len(params.len()) {
                probe.perturbed(params, i, &mut nudged);
                out.push(xent_loss_f64(model, &nudged, data) - base);
            }
        }
    }
    out
}

/// `[L, values…]` of one probe from any evaluator.
fn probe_once<E: Evaluator>(ev: &mut E, params: &[f32], probe: Probe) -> Vec<E::Loss>
where
    E::Loss: Copy + Default,
{
    let mut loss = [E::Loss::default()];
    let mut values = vec![E::Loss::default(); probe.len(params.len())];
    ev.probe(params, &[probe], &[true], &mut loss, &mut values)
        .unwrap();
    std::iter::once(loss[0]).chain(values).collect()
}

fn spsa() -> Estimator {
    Estimator::Spsa {
        samples: 2,
        direction: Direction::Rademacher,
    }
}

/// The estimators of the grid and the methods each runs with (SPSA moves every parameter, so
/// it has no reuse form).
fn estimators() -> Vec<(Estimator, Vec<Method>)> {
    let both = vec![Method::Naive, Method::Reuse];
    vec![
        (Estimator::Forward, both.clone()),
        (Estimator::Central, both),
        (spsa(), vec![Method::Naive]),
    ]
}

/// Models for the CPU accuracy checks: one, two and three layers; K = 2, 10, 70.
fn cpu_models() -> Vec<(Model, usize, bool)> {
    vec![
        (Model::random(&[3, 2], &[Id], 1).unwrap(), 7, false),
        (Model::random(&[4, 6, 10], &[Tanh, Id], 2).unwrap(), 9, true),
        (
            Model::random(&[3, 5, 4, 10], &[Sig, Relu, Id], 3).unwrap(),
            6,
            false,
        ),
        (
            Model::random(&[2, 3, 70], &[Tanh, Id], 4).unwrap(),
            5,
            false,
        ),
    ]
}

/// Worst `|got − want| / (unit·(1 + |L|))` over a step, as (index, value).
fn worst_error(got: &[f64], want: &[f64], unit: f64) -> (usize, f64) {
    let scale = unit * (1.0 + want[0].abs());
    let errors: Vec<f64> = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs() / scale)
        .collect();
    largest(&errors)
}

#[test]
fn cpu_float64_cross_entropy_equals_an_independent_float64_computation() {
    for (model, samples, soft) in cpu_models() {
        let data = class_data(&model, samples, soft, 17);
        for (estimator, methods) in estimators() {
            let probe = estimator.probe(1e-3, 5, 0);
            let want = exact_probe(&model, &data, &probe);
            for method in methods {
                let mut ev =
                    CpuEvaluator::<f64>::with_options(&model, &data, method, Loss::CrossEntropy)
                        .unwrap();
                let got = probe_once(&mut ev, &model.params, probe);
                let (i, err) = worst_error(&got, &want, f64::EPSILON);
                let what = format!(
                    "{:?} {} {}",
                    widths(&model),
                    estimator.name(),
                    method.name()
                );
                eprintln!("{what}: worst {err:.1} float64 eps at {i}");
                assert!(
                    err <= F64_TOL_EPS,
                    "{what}: index {i} is {err:.1} eps off (allowed {F64_TOL_EPS}): cpu {:e} vs here {:e}",
                    got[i],
                    want[i]
                );
            }
        }
    }
}

#[test]
fn cpu_float32_reuse_deltas_are_within_their_bound_of_the_exact_changes() {
    let mut worst = [0.0f64; 2];
    for (model, samples, soft) in cpu_models() {
        let data = class_data(&model, samples, soft, 23);
        for eps in [1.0f32, 0.1, 1e-2, 1e-3, 1e-4] {
            let probe = Estimator::Forward.probe(eps, 0, 0);
            let want = exact_probe(&model, &data, &probe);
            for (m, method) in [Method::Naive, Method::Reuse].into_iter().enumerate() {
                let mut ev =
                    CpuEvaluator::<f32>::with_options(&model, &data, method, Loss::CrossEntropy)
                        .unwrap();
                let got: Vec<f64> = probe_once(&mut ev, &model.params, probe)
                    .into_iter()
                    .map(|v| v as f64)
                    .collect();
                let (i, err) = worst_error(&got, &want, f32::EPSILON as f64);
                worst[m] = worst[m].max(err);
                let what = format!("{:?} eps {eps} {}", widths(&model), method.name());
                // The last hidden layer's parameters (slots 1 + k): the series where it applies.
                let spans = model.layer_spans();
                let hidden = &spans[spans.len().saturating_sub(2)..];
                let (lo, hi) = (1 + hidden[0].w_off, 1 + spans[spans.len() - 1].w_off);
                let scale = f32::EPSILON as f64 * (1.0 + want[0].abs());
                let err_hidden = (lo..hi)
                    .map(|k| (got[k] - want[k]).abs() / scale)
                    .fold(0.0, f64::max);
                eprintln!(
                    "{what}: worst {err:.2} float32 eps of 1 + L at {i} (last hidden layer: \
                     {err_hidden:.2})"
                );
                if method == Method::Reuse {
                    assert!(
                        err <= F32_REUSE_TOL_EPS,
                        "{what}: index {i} is {err:.2} eps off (allowed {F32_REUSE_TOL_EPS}): \
                         cpu {:e} vs exact {:e}",
                        got[i],
                        want[i]
                    );
                }
            }
        }
    }
    eprintln!(
        "worst float32 error, eps of 1 + L: naive {:.2}, reuse {:.2}",
        worst[0], worst[1]
    );
}

/// A network whose hidden unit's change is exactly the nudge: one input of 1, an identity hidden
/// unit with zero weight and bias (so z = 0 and a nudge `eps` of its bias moves it by `eps`
/// exactly), ten logits `b2` and outgoing weights `w2`; one sample of label 3.
fn threshold_case() -> (Model, Dataset, f32) {
    let model = Model::random(&[1, 1, 10], &[Id, Id], 5).unwrap();
    let spans = model.layer_spans();
    let mut params = vec![0.0f32; model.num_params()];
    let (hidden, out) = (spans[0], spans[1]);
    for k in 0..10 {
        params[out.w_off + k] = (k as f32 * 0.37).sin() * 0.8;
        params[out.b_off + k] = (k as f32 * 1.3).cos() * 2.0;
    }
    params[hidden.w_off] = 0.0;
    params[hidden.b_off] = 0.0;
    let model = model.with_params(params).unwrap();
    let spread: f32 = perturb::xent::weight_spread(&model.params[out.w_off..][..10]);
    let mut y = Array2::zeros((1, 10));
    y[[0, 3]] = 1.0;
    let data = Dataset::new(Array2::ones((1, 1)), y).unwrap();
    (model, data, spread)
}

/// The hidden bias's float32 reuse delta at eps just below and just above the series threshold
/// (`eps·spread = series_max_x·(1 ∓ 2^-10)`): below, bit for bit the series of this sample's
/// coefficients; above, bit for bit the exact difference of the two float32 losses; both within
/// [`F32_REUSE_TOL_EPS`] of the exact change.
#[test]
fn the_series_gives_way_to_the_exact_difference_just_above_its_threshold() {
    use perturb::xent::{series_change, series_max_x, series_terms, softmax_probs};
    let (model, data, spread) = threshold_case();
    let out = model.layer_spans()[1];
    let w2 = &model.params[out.w_off..][..10];
    let b2 = &model.params[out.b_off..][..10];
    let t = data.y.row(0).to_vec();
    let bias = model.layer_spans()[0].b_off;
    for (side, factor) in [("below", 1.0 - 1.0 / 1024.0), ("above", 1.0 + 1.0 / 1024.0)] {
        let eps = series_max_x::<f32>() / spread * factor;
        let probe = Estimator::Forward.probe(eps, 0, 0);
        let mut ev =
            CpuEvaluator::<f32>::with_options(&model, &data, Method::Reuse, Loss::CrossEntropy)
                .unwrap();
        let got = probe_once(&mut ev, &model.params, probe)[1 + bias];
        let mut p = [0.0f32; 10];
        softmax_probs(b2, &mut p);
        let series = series_change(eps, series_terms(&p, &t, w2));
        let nudged: Vec<f32> = b2.iter().zip(w2).map(|(&z, &w)| z + eps * w).collect();
        let exact = perturb::xent::softmax_xent_soft_f32(&nudged, &t)
            - perturb::xent::softmax_xent_soft_f32(b2, &t);
        let want = if side == "below" { series } else { exact };
        eprintln!("{side}: eps {eps:e}: reuse {got:e}, series {series:e}, exact form {exact:e}");
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "{side} the threshold: reuse {got:e}, series {series:e}, exact form {exact:e}"
        );
        let truth = exact_probe(&model, &data, &probe);
        let (l, change) = (truth[0], truth[1 + bias]);
        let err = (got as f64 - change).abs() / (f32::EPSILON as f64 * (1.0 + l));
        eprintln!("{side}: {err:.3} float32 eps of 1 + L off the exact change {change:e}");
        assert!(
            err <= F32_REUSE_TOL_EPS,
            "{side}: {got:e} vs exact {change:e} ({err:.2} eps of 1 + L, allowed {F32_REUSE_TOL_EPS})"
        );
    }
}

/// The GPU grid's shapes: (widths, activations, samples, soft targets). One, two and three
/// layers; K = 2, 10, 70; a hidden layer past 64 units; B = 1, 7, 300.
fn gpu_shapes() -> Vec<(&'static [usize], &'static [Activation], usize, bool)> {
    vec![
        (&[5, 2], &[Id], 7, false),
        (&[4, 6, 10], &[Tanh, Id], 300, true),
        (&[3, 5, 4, 10], &[Sig, Relu, Id], 7, false),
        (&[3, 5, 4, 3], &[Tanh, Sig, Id], 300, false),
        (&[3, 70, 10], &[Tanh, Id], 1, false),
        (&[2, 3, 70], &[Sig, Id], 7, true),
    ]
}

fn gpu_xent(
    ctx: &GpuContext,
    model: &Model,
    data: &Dataset,
    method: Method,
    reuse_kernel: Option<ReuseKernel>,
    probe: &Probe,
) -> GpuEvaluator {
    let opts = GpuOptions {
        method,
        reuse_kernel,
        shape: probe.shape(),
        loss: Loss::CrossEntropy,
        ..GpuOptions::default()
    };
    GpuEvaluator::with_options(ctx.clone(), model, data, opts).unwrap()
}

/// Shapes × estimators × nudges × (naive, each reuse kernel): the GPU step equals the CPU
/// reference's float32 step, bit for bit on llvmpipe. The nudges put a last hidden layer's items
/// on the series (1e-4), on both sides of its threshold (0.1) and mostly above it (1).
#[test]
fn gpu_cross_entropy_steps_match_the_cpu_reference_over_the_grid() {
    let Some(ctx) = gpu() else { return };
    let budget = max_ulp(&ctx);
    let kernels = [
        None,
        Some(ReuseKernel::Split),
        Some(ReuseKernel::Workgroup),
        Some(ReuseKernel::Invocation),
    ];
    for (case, (widths, acts, samples, soft)) in gpu_shapes().into_iter().enumerate() {
        let model = Model::random(widths, acts, case as u64).unwrap();
        let data = class_data(&model, samples, soft, 40 + case as u64);
        for ((estimator, methods), eps) in estimators()
            .into_iter()
            .flat_map(|e| [1e-4f32, 0.1, 1.0].map(|eps| (e.clone(), eps)))
        {
            let probe = estimator.probe(eps, 9, 2);
            for method in methods {
                let mut c =
                    CpuEvaluator::<f32>::with_options(&model, &data, method, Loss::CrossEntropy)
                        .unwrap();
                let want = probe_once(&mut c, &model.params, probe);
                let picks: &[Option<ReuseKernel>] = match method {
                    Method::Naive => &kernels[..1],
                    Method::Reuse => &kernels[1..],
                };
                for &pick in picks {
                    let mut g = gpu_xent(&ctx, &model, &data, method, pick, &probe);
                    let got = probe_once(&mut g, &model.params, probe);
                    let what = format!(
                        "{widths:?} x {samples} eps {eps} {} {} {:?}",
                        estimator.name(),
                        method.name(),
                        g.reuse_kernel()
                    );
                    assert_step_close(&what, &got, &want, budget);
                }
            }
        }
    }
}

/// The threshold case of [`the_series_gives_way_to_the_exact_difference_just_above_its_threshold`]
/// on every reuse kernel: just below and just above the threshold, the GPU step equals the CPU's.
#[test]
fn gpu_series_threshold_matches_the_cpu_on_both_sides() {
    let Some(ctx) = gpu() else { return };
    let budget = max_ulp(&ctx);
    let (model, data, spread) = threshold_case();
    for factor in [1.0 - 1.0 / 1024.0, 1.0 + 1.0 / 1024.0] {
        let eps = perturb::xent::series_max_x::<f32>() / spread * factor;
        let probe = Estimator::Forward.probe(eps, 0, 0);
        let mut c =
            CpuEvaluator::<f32>::with_options(&model, &data, Method::Reuse, Loss::CrossEntropy)
                .unwrap();
        let want = probe_once(&mut c, &model.params, probe);
        for pick in [
            ReuseKernel::Split,
            ReuseKernel::Workgroup,
            ReuseKernel::Invocation,
        ] {
            let mut g = gpu_xent(&ctx, &model, &data, Method::Reuse, Some(pick), &probe);
            let got = probe_once(&mut g, &model.params, probe);
            assert_step_close(&format!("eps {eps:e} {pick:?}"), &got, &want, budget);
        }
    }
}

/// The resident loop (no fused_epochs for cross-entropy: the step's kernels, then update) equals
/// the host loop bit for bit on llvmpipe, for both methods.
#[test]
fn gpu_cross_entropy_resident_loop_equals_the_host_loop() {
    let Some(ctx) = gpu() else { return };
    let exact = max_ulp(&ctx) == 0;
    let model = Model::random(&[4, 6, 5, 3], &[Tanh, Sig, Id], 3).unwrap();
    let data = class_data(&model, 20, false, 4);
    let hyper = Hyper {
        epochs: 23,
        lr: 0.05,
        eps: 1e-3,
        ..Hyper::book()
    };
    for method in [Method::Naive, Method::Reuse] {
        let probe = Estimator::Forward.probe(hyper.eps as f32, 0, 0);
        let mut host = gpu_xent(&ctx, &model, &data, method, None, &probe);
        let mut resident = gpu_xent(&ctx, &model, &data, method, None, &probe);
        assert!(!resident.is_fused(), "fused_epochs computes MSE only");
        let mut cpu =
            CpuEvaluator::<f32>::with_options(&model, &data, method, Loss::CrossEntropy).unwrap();
        let h = train(&mut host, &model.params, &hyper, |_, _| {}).unwrap();
        let c = train(&mut cpu, &model.params, &hyper, |_, _| {}).unwrap();
        let r = resident
            .train_resident(&model.params, &hyper, 10, None, |_, _| {})
            .unwrap();
        assert!(
            h.losses[22] < h.losses[0],
            "{}: training lowers the loss",
            method.name()
        );
        if exact {
            let f = |l: &[f64]| l.iter().map(|&v| v as f32).collect::<Vec<f32>>();
            let what = method.name();
            assert_ulp_close(
                &format!("{what}: host vs cpu losses"),
                &f(&h.losses),
                &f(&c.losses),
                0,
            );
            assert_ulp_close(
                &format!("{what}: resident vs host losses"),
                &f(&r.losses),
                &f(&h.losses),
                0,
            );
            assert_ulp_close(
                &format!("{what}: resident vs cpu parameters"),
                &r.params,
                &c.params,
                0,
            );
        }
    }
}

/// Cross-entropy takes an identity output layer's logits: both evaluators refuse another one
/// with the typed error, before any buffer is made.
#[test]
fn cross_entropy_on_a_squashed_output_layer_is_refused_by_both_evaluators() {
    let model = Model::random(&[3, 4, 2], &[Tanh, Sig], 1).unwrap();
    let data = class_data(&model, 5, false, 2);
    let cpu = CpuEvaluator::<f32>::with_options(&model, &data, Method::Reuse, Loss::CrossEntropy);
    assert!(
        matches!(cpu, Err(Error::Unsupported { .. })),
        "cpu: {cpu:?}"
    );
    let Some(ctx) = gpu() else { return };
    let probe = Estimator::Forward.probe(1e-3, 0, 0);
    let opts = GpuOptions {
        shape: probe.shape(),
        loss: Loss::CrossEntropy,
        ..GpuOptions::default()
    };
    let g = GpuEvaluator::with_options(ctx, &model, &data, opts);
    assert!(
        matches!(g, Err(Error::Unsupported { .. })),
        "gpu: {:?}",
        g.err()
    );
}
