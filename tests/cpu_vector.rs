//! The CPU reuse method's lane path (rows of the last hidden layer with units as lanes, blocks of
//! the output layer's rows with inputs as lanes, zero inputs skipped) equals the per-sample
//! scalar reference bit for bit, over a grid of shapes × activations × losses × batch sizes
//! (sizes that are no multiple of any vector width, one sample, more samples than reduction
//! lanes, hidden rows wider than one block, no hidden layer), inputs with many exact zeros of both
//! signs (a whole zero column, an all-zero sample), relu units that are off, soft and zero
//! cross-entropy targets and a nudge that overflows a logit, float32 and float64, and one to three threads. The reuse
//! method's unperturbed loss (computed over all samples as lanes, skipping all-zero input rows)
//! equals the naive evaluator's, which skips nothing.

use ndarray::Array2;
use perturb::cpu::CpuEvaluator;
use perturb::train::Evaluator;
use perturb::{Activation, Dataset, Loss, Method, Model, Real};
use rand::{RngExt, SeedableRng};

/// Units in the last places two results may differ by: none.
const TOLERANCE_ULP: u64 = 0;
/// Batch sizes: one sample, odd sizes, around 8/16 lanes, and more than the 256 reduction lanes.
const BATCHES: [usize; 7] = [1, 3, 7, 16, 17, 33, 300];
/// Thread counts: one, the dev machine's two, and more threads than work units at small sizes.
const THREADS: [usize; 3] = [1, 2, 3];
/// Nudges: the training default's order and one large enough that some cross-entropy items fall
/// outside the series' range and take the exact difference.
const EPSILONS: [f32; 2] = [1e-3, 0.5];

/// Whether input i of sample s is an exact zero: all of input 0 (a zero column), all of sample 1
/// (an all-zero sample), and about half of the rest, of both signs.
fn zero_at(s: usize, i: usize) -> Option<f32> {
    let sign = if (s + i).is_multiple_of(2) { 0.0 } else { -0.0 };
    (i == 0 || s == 1 || (s * 5 + i * 3) % 4 < 2).then_some(sign)
}

fn case(widths: &[usize], acts: &[Activation], loss: Loss, samples: usize) -> (Model, Dataset) {
    let model = Model::random(widths, acts, samples as u64).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(samples as u64 + 7);
    let x = Array2::from_shape_fn((samples, model.inputs()), |(s, i)| {
        zero_at(s, i).unwrap_or_else(|| rng.random_range(-2.0f32..2.0))
    });
    let outputs = model.outputs();
    let y = Array2::from_shape_fn((samples, outputs), |(s, o)| match loss {
        Loss::CrossEntropy => f32::from(u8::from(o == s % outputs)),
        Loss::Mse => ((s * 31 + o * 7) % 13) as f32 / 13.0 - 0.5,
    });
    (model, Dataset::new(x, y).unwrap())
}

/// Distance in units in the last place of `R` between two values (0: identical bits). Two NaNs
/// count as equal: payloads are not part of the contract.
fn ulps<R: Real>(a: R, b: R) -> u64 {
    if a.to_f64().is_nan() && b.to_f64().is_nan() {
        return 0;
    }
    // Bit patterns mapped to a line where adjacent floats are adjacent integers (−0 next to +0).
    let key = |bits: i64, sign: i64| if bits < 0 { sign - bits } else { bits };
    if R::MANTISSA_DIGITS == f32::MANTISSA_DIGITS {
        let k = |v: R| key(i64::from(v.to_f32().to_bits() as i32), i64::from(i32::MIN));
        k(a).abs_diff(k(b))
    } else {
        let k = |v: R| key(v.to_f64().to_bits() as i64, i64::MIN);
        k(a).abs_diff(k(b))
    }
}

/// Panics naming the worst index and both values when `fast` and `reference` differ by more
/// than [`TOLERANCE_ULP`] anywhere.
// The tolerance is a named constant that happens to be the type's minimum.
#[allow(clippy::absurd_extreme_comparisons)]
fn assert_bits_equal<R: Real>(what: &str, fast: &[R], reference: &[R]) {
    let gaps: Vec<u64> = fast
        .iter()
        .zip(reference)
        .map(|(&a, &b)| ulps(a, b))
        .collect();
    let differ = gaps.iter().filter(|&&g| g > TOLERANCE_ULP).count();
    if let Some((k, &gap)) = gaps.iter().enumerate().max_by_key(|(_, &g)| g) {
        assert!(
            gap <= TOLERANCE_ULP,
            "{what}: {differ} of {} differ; worst index {k}: fast {:?}, reference {:?} ({gap} ulp)",
            fast.len(),
            fast[k],
            reference[k]
        );
    }
}

/// Every delta of the lane path and the scalar path, with `threads` threads; and the reuse
/// evaluator's loss against the naive evaluator's.
fn assert_lanes_equal_scalar<R: Real>(
    what: &str,
    (model, data): &(Model, Dataset),
    loss: Loss,
    threads: usize,
) {
    let naive = CpuEvaluator::<R>::with_options(model, data, Method::Naive, loss)
        .unwrap()
        .loss(&model.params);
    for eps in EPSILONS {
        let run = |lanes: bool| {
            let mut ev = CpuEvaluator::<R>::with_options(model, data, Method::Reuse, loss).unwrap();
            ev.set_threads(threads);
            ev.set_lanes(lanes);
            let mut d = vec![R::ZERO; model.num_params()];
            let base = ev.evaluate(&model.params, eps, &mut d).unwrap();
            (base, d)
        };
        let ((b1, lanes), (b0, scalar)) = (run(true), run(false));
        let what = format!("{what} eps {eps} threads {threads}");
        assert_bits_equal(
            &format!("{what}: base vs naive"),
            &[b1, b0],
            &[naive, naive],
        );
        assert_bits_equal(&format!("{what}: deltas"), &lanes, &scalar);
    }
}

#[test]
fn lane_path_equals_the_scalar_reference_bit_for_bit_over_the_grid() {
    use Activation::*;
    // [7, 4] has no hidden layer: the output layer's inputs are x, zeros included.
    let shapes: [&[usize]; 5] = [
        &[5, 9, 3],
        &[12, 20, 4],
        &[4, 6, 7, 3],
        &[6, 50, 3],
        &[7, 4],
    ];
    for widths in shapes {
        for hidden in [Identity, Relu, Sigmoid, Tanh] {
            for loss in [Loss::Mse, Loss::CrossEntropy] {
                let mut acts = vec![hidden; widths.len() - 1];
                // The closed forms need an identity output; a sigmoid output checks that the
                // lane path leaves those items to the scalar path.
                let last = if loss == Loss::Mse && hidden == Sigmoid {
                    Sigmoid
                } else {
                    Identity
                };
                *acts.last_mut().unwrap() = last;
                for b in BATCHES {
                    let c = case(widths, &acts, loss, b);
                    let what = format!("{widths:?} {acts:?} {loss:?} B={b}");
                    for threads in THREADS {
                        assert_lanes_equal_scalar::<f32>(&what, &c, loss, threads);
                    }
                    assert_lanes_equal_scalar::<f64>(&what, &c, loss, 2);
                }
            }
        }
    }
}

/// Batch sizes around the 64-sample chunks of the lane path's cross-entropy series terms (one
/// short, exact, one over, two chunks and one over) and the 32/64-lane widths.
const CHUNK_EDGE_BATCHES: [usize; 5] = [63, 64, 65, 128, 129];

/// The lane path's per-step series terms (samples as lanes, in 64-sample chunks) and its
/// two-stage hidden items (the sigmoid split into `1 + e^-x` and its reciprocal) equal the scalar
/// reference at every chunk edge, for every hidden activation, with zero inputs, on one thread and
/// two.
#[test]
fn lane_series_terms_and_staged_items_equal_the_reference_at_chunk_edges() {
    use Activation::*;
    for hidden in [Identity, Relu, Sigmoid, Tanh] {
        for loss in [Loss::Mse, Loss::CrossEntropy] {
            let acts = [hidden, Identity];
            for b in CHUNK_EDGE_BATCHES {
                let c = case(&[9, 40, 6], &acts, loss, b);
                let what = format!("[9, 40, 6] {acts:?} {loss:?} B={b}");
                for threads in [1, 2] {
                    assert_lanes_equal_scalar::<f32>(&what, &c, loss, threads);
                }
                assert_lanes_equal_scalar::<f64>(&what, &c, loss, 1);
            }
        }
    }
}

/// An input so large that one sample's pre-activations overflow to infinity: its items are NaN on
/// the scalar path, zero inputs included, so the lane path must not skip that step's zero inputs.
#[test]
fn lane_path_skips_no_zero_input_when_the_cache_is_not_finite() {
    for loss in [Loss::Mse, Loss::CrossEntropy] {
        let acts = [Activation::Relu, Activation::Identity];
        let (mut model, _) = case(&[4, 6, 3], &acts, loss, 5);
        // Input 1's weights to every unit positive and huge; sample 2 has a huge input 1.
        for u in 0..6 {
            model.params[6 + u] = 1e30;
        }
        let model = model.with_params(model.params.clone()).unwrap();
        let x = Array2::from_shape_fn((5, 4), |(s, i)| match (s, i) {
            (2, 1) => 1e30,
            (2, _) => 0.0,
            _ => ((s * 4 + i) % 7) as f32 * 0.25 - 0.5,
        });
        let y = Array2::from_shape_fn((5, 3), |(s, o)| f32::from(u8::from(o == s % 3)));
        let data = Dataset::new(x, y).unwrap();
        let mut deltas = Vec::new();
        for lanes in [true, false] {
            let mut ev =
                CpuEvaluator::<f32>::with_options(&model, &data, Method::Reuse, loss).unwrap();
            ev.set_lanes(lanes);
            let mut d = vec![0.0f32; model.num_params()];
            ev.evaluate(&model.params, 1e-3, &mut d).unwrap();
            deltas.push(d);
        }
        // The reference does see NaN for input 0's weights (x = 0 for sample 2 there).
        assert!(
            deltas[1][..6].iter().all(|d| d.is_nan()),
            "{loss:?}: the case does not make the zero items NaN: {:?}",
            &deltas[1][..6]
        );
        assert_bits_equal(&format!("{loss:?} non-finite"), &deltas[0], &deltas[1]);
    }
}

/// An infinite weight from an input that is zero for every sample: the per-sample reference adds
/// `0·inf = NaN` (it skips zero inputs only when all the layer's weights are finite), so the lane
/// path's unperturbed pass must not skip that all-zero input row either.
#[test]
fn lane_pass_adds_an_all_zero_input_row_when_a_weight_is_infinite() {
    for loss in [Loss::Mse, Loss::CrossEntropy] {
        let acts = [Activation::Sigmoid, Activation::Identity];
        let (mut model, data) = case(&[4, 6, 3], &acts, loss, 9);
        // Input 0 is zero for every sample (see `zero_at`); its weight to unit 2 is infinite.
        model.params[2] = f32::INFINITY;
        let run = |lanes: bool, method: Method| {
            let mut ev = CpuEvaluator::<f32>::with_options(&model, &data, method, loss).unwrap();
            ev.set_lanes(lanes);
            let mut d = vec![0.0f32; model.num_params()];
            let base = ev.evaluate(&model.params, 1e-3, &mut d).unwrap();
            (base, d)
        };
        let ((b1, lanes), (b0, scalar)) = (run(true, Method::Reuse), run(false, Method::Reuse));
        let (naive, _) = run(true, Method::Naive);
        assert!(
            naive.is_nan(),
            "{loss:?}: the case does not make the loss NaN: {naive}"
        );
        let what = format!("{loss:?} infinite weight");
        assert_bits_equal(&format!("{what}: base"), &[b1, b0], &[naive, naive]);
        assert_bits_equal(&format!("{what}: deltas"), &lanes, &scalar);
    }
}

/// One evaluator kept across steps (its worker threads and per-step copies reused) with new
/// parameters, a new batch and a new thread count between steps equals a fresh scalar evaluator
/// at every step.
#[test]
fn a_kept_evaluator_equals_fresh_scalar_ones_across_steps_batches_and_thread_counts() {
    let acts = [Activation::Relu, Activation::Tanh, Activation::Identity];
    for loss in [Loss::Mse, Loss::CrossEntropy] {
        let (model, first) = case(&[12, 20, 16, 4], &acts, loss, 33);
        let mut kept =
            CpuEvaluator::<f32>::with_options(&model, &first, Method::Reuse, loss).unwrap();
        let mut params = model.params.clone();
        for step in 0..6usize {
            let (_, data) = case(&[12, 20, 16, 4], &acts, loss, 33 + step % 2 * 64);
            let data = if step % 2 == 0 { first.clone() } else { data };
            let data = Dataset::new(
                data.x.slice(ndarray::s![..33, ..]).to_owned(),
                data.y.slice(ndarray::s![..33, ..]).to_owned(),
            )
            .unwrap();
            kept.set_batch(&data).unwrap();
            kept.set_threads(1 + step % 3);
            for (k, p) in params.iter_mut().enumerate() {
                *p += ((k * 13 + step * 7) % 11) as f32 * 1e-3 - 5e-3;
            }
            let mut fresh =
                CpuEvaluator::<f32>::with_options(&model, &data, Method::Reuse, loss).unwrap();
            fresh.set_lanes(false);
            fresh.set_threads(1);
            let mut d1 = vec![0.0f32; model.num_params()];
            let mut d0 = vec![0.0f32; model.num_params()];
            let b1 = kept.evaluate(&params, 1e-3, &mut d1).unwrap();
            let b0 = fresh.evaluate(&params, 1e-3, &mut d0).unwrap();
            let what = format!("{loss:?} step {step}");
            assert_bits_equal(&format!("{what}: base"), &[b1], &[b0]);
            assert_bits_equal(&format!("{what}: deltas"), &d1, &d0);
        }
    }
}

/// The naive method's deltas, taken by threads in ranges from a shared queue, do not depend on
/// the thread count.
#[test]
fn naive_deltas_do_not_depend_on_the_thread_count() {
    let acts = [Activation::Sigmoid, Activation::Identity];
    let (model, data) = case(&[16, 40, 10], &acts, Loss::Mse, 17);
    let run = |threads: usize| {
        let mut ev = CpuEvaluator::<f32>::new(&model, &data).unwrap();
        ev.set_threads(threads);
        let mut d = vec![0.0f32; model.num_params()];
        ev.evaluate(&model.params, 1e-3, &mut d).unwrap();
        d
    };
    let one = run(1);
    for threads in [2, 3, 5] {
        assert_bits_equal(&format!("naive threads {threads}"), &run(threads), &one);
    }
}

/// Cross-entropy against soft targets (fractions, exact zeros, a row of zeros): the output
/// blocks skip a zero target's term only where it adds ±0, so every target pattern must give the
/// reference's bits, with and without a hidden layer.
#[test]
fn output_blocks_equal_the_reference_for_soft_targets() {
    let loss = Loss::CrossEntropy;
    let shapes: [&[usize]; 2] = [&[6, 45, 5], &[40, 7]];
    for widths in shapes {
        let mut acts = vec![Activation::Tanh; widths.len() - 1];
        *acts.last_mut().unwrap() = Activation::Identity;
        for b in [1, 17, 64] {
            let (model, data) = case(widths, &acts, loss, b);
            let y = Array2::from_shape_fn(data.y.dim(), |(s, o)| {
                if s == 0 {
                    0.0
                } else {
                    ((s * 7 + o * 3) % 5) as f32 / 10.0
                }
            });
            let data = Dataset::new(data.x.clone(), y).unwrap();
            let what = format!("{widths:?} soft targets B={b}");
            for threads in [1, 2] {
                assert_lanes_equal_scalar::<f32>(
                    &what,
                    &(model.clone(), data.clone()),
                    loss,
                    threads,
                );
            }
        }
    }
}

/// A nudge that sends one logit to −inf while every kept value is finite: the reference's term of
/// that logit is `0·inf = NaN` where its target is 0, so the output block must not skip zero
/// targets in such a row.
#[test]
fn output_blocks_keep_zero_target_terms_when_a_nudged_logit_overflows() {
    let loss = Loss::CrossEntropy;
    let (model, _) = case(&[2, 3], &[Activation::Identity], loss, 3);
    let mut params = model.params.clone();
    // W[0][u] = 1 for every unit, so sample 0's logits are all about −3e38 (finite); a nudge of
    // 0.5 moves logit u by −1.5e38, to −inf.
    params[..3].fill(1.0);
    let model = model.with_params(params).unwrap();
    let x = Array2::from_shape_fn((3, 2), |(s, i)| match (s, i) {
        (0, 0) => -3e38,
        _ => ((s * 2 + i) % 5) as f32 * 0.25 - 0.5,
    });
    let y = Array2::from_shape_fn((3, 3), |(s, o)| f32::from(u8::from(o == (s + 1) % 3)));
    let data = Dataset::new(x, y).unwrap();
    // W[0][0]: sample 0's target for unit 0 is 0 and its logit goes to −inf.
    assert_nan_case_equal("overflowing nudge", (&model, &data), 0.5);
}

/// Finite logits whose difference overflows: a kept logit of −3e38 and a nudged one of 1e38 give
/// `m − z = inf` in the zero target's term, `0·inf = NaN` on the reference, so the output block
/// must not skip that term although every logit is finite.
#[test]
fn output_blocks_keep_zero_target_terms_when_a_logit_difference_overflows() {
    let loss = Loss::CrossEntropy;
    let (model, _) = case(&[2, 3], &[Activation::Identity], loss, 1);
    // Logits [0, 0, −3e38] for x = [1, 0]: W[0] = (0, 0, −3e38), W[1] and the biases 0.
    let mut params = vec![0.0f32; model.num_params()];
    params[2] = -3e38;
    let model = model.with_params(params).unwrap();
    let x = Array2::from_shape_vec((1, 2), vec![1.0, 0.0]).unwrap();
    let y = Array2::from_shape_vec((1, 3), vec![1.0, 0.0, 0.0]).unwrap();
    let data = Dataset::new(x, y).unwrap();
    // A nudge of 1e38 moves logit 0 to 1e38: the maximum, 4e38 above logit 2.
    assert_nan_case_equal("overflowing difference", (&model, &data), 1e38);
}

/// Cross-entropy deltas of the lane path and the scalar reference at `eps` for a case built so
/// that the kept loss is finite and the reference's delta of parameter 0 is NaN: checks both
/// premises, then that the two paths agree bit for bit.
fn assert_nan_case_equal(what: &str, (model, data): (&Model, &Dataset), eps: f32) {
    let loss = Loss::CrossEntropy;
    let mut deltas = Vec::new();
    for lanes in [true, false] {
        let mut ev = CpuEvaluator::<f32>::with_options(model, data, Method::Reuse, loss).unwrap();
        ev.set_lanes(lanes);
        let mut d = vec![0.0f32; model.num_params()];
        let base = ev.evaluate(&model.params, eps, &mut d).unwrap();
        assert!(base.is_finite(), "the case makes the kept loss {base}");
        deltas.push(d);
    }
    assert!(
        deltas[1][0].is_nan(),
        "the case does not make the reference's delta NaN: {:?}",
        &deltas[1][..3]
    );
    assert_bits_equal(what, &deltas[0], &deltas[1]);
}
