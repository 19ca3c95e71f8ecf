//! The CPU reuse method's lane path equals the per-sample scalar reference bit for bit, over a grid
//! of shapes × activations × losses × batch sizes (including sizes that are no multiple of any
//! vector width, one sample, exact zero inputs of both signs), for float32 and float64 and for
//! one and two threads.

use ndarray::Array2;
use perturb::cpu::CpuEvaluator;
use perturb::train::Evaluator;
use perturb::{Activation, Dataset, Loss, Method, Model, Real};
use rand::{RngExt, SeedableRng};

/// Batch sizes: one sample, odd sizes, around 8/16 lanes, and larger than a reduction lane count.
const BATCHES: [usize; 7] = [1, 3, 7, 16, 17, 33, 300];
/// Nudges: the training default's order and one large enough that some cross-entropy items fall
/// outside the series' range and take the exact difference.
const EPSILONS: [f32; 2] = [1e-3, 0.5];

fn case(widths: &[usize], acts: &[Activation], loss: Loss, samples: usize) -> (Model, Dataset) {
    let model = Model::random(widths, acts, samples as u64).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(samples as u64 + 7);
    let x = Array2::from_shape_fn((samples, model.inputs()), |(s, i)| {
        // A third exact zeros of both signs (the sparse first layer), the rest in [-2, 2).
        match (s + 2 * i) % 6 {
            0 => 0.0,
            3 => -0.0,
            _ => rng.random_range(-2.0f32..2.0),
        }
    });
    let outputs = model.outputs();
    let y = Array2::from_shape_fn((samples, outputs), |(s, o)| match loss {
        Loss::CrossEntropy => f32::from(u8::from(o == s % outputs)),
        Loss::Mse => ((s * 31 + o * 7) % 13) as f32 / 13.0 - 0.5,
    });
    (model, Dataset::new(x, y).unwrap())
}

/// Every delta of the lane path and the scalar path, with `threads` threads; panics naming the
/// worst index and both values on the first difference.
fn assert_lanes_equal_scalar<R: Real>(
    what: &str,
    (model, data): &(Model, Dataset),
    loss: Loss,
    threads: usize,
) {
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
        assert_eq!(b1.to_f64().to_bits(), b0.to_f64().to_bits(), "{what}: base");
        let differ: Vec<usize> = (0..lanes.len())
            .filter(|&k| lanes[k].to_f64().to_bits() != scalar[k].to_f64().to_bits())
            .collect();
        if let Some(&k) = differ.iter().max_by(|&&a, &&b| {
            let gap = |k: usize| (lanes[k].to_f64() - scalar[k].to_f64()).abs();
            gap(a).total_cmp(&gap(b))
        }) {
            panic!(
                "{what} eps {eps} threads {threads}: {} deltas differ; worst k = {k}: \
                 lanes {:?}, scalar {:?}",
                differ.len(),
                lanes[k],
                scalar[k]
            );
        }
    }
}

#[test]
fn lane_path_equals_the_scalar_reference_bit_for_bit_over_the_grid() {
    use Activation::*;
    let shapes: [&[usize]; 3] = [&[5, 9, 3], &[12, 20, 4], &[4, 6, 7, 3]];
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
                    for threads in [1, 2] {
                        assert_lanes_equal_scalar::<f32>(&what, &c, loss, threads);
                    }
                    assert_lanes_equal_scalar::<f64>(&what, &c, loss, 1);
                }
            }
        }
    }
}
