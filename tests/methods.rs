//! CPU-only properties of the evaluators: thread count never changes a bit, and the reuse method
//! computes the same gradients as the naive one up to finite-difference rounding.

use ndarray::Array2;
use perturb::cpu::CpuEvaluator;
use perturb::train::{train, Evaluator};
use perturb::{Activation, Dataset, Hyper, Method, Model};
use rand::{RngExt, SeedableRng};

fn random_case(
    widths: &[usize],
    acts: &[Activation],
    samples: usize,
    seed: u64,
) -> (Model, Dataset) {
    let model = Model::random(widths, acts, seed).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed + 1);
    let mut m = |c: usize| Array2::from_shape_fn((samples, c), |_| rng.random_range(-1.0f32..1.0));
    let x = m(model.inputs());
    let y = m(model.outputs());
    (model, Dataset::new(x, y).unwrap())
}

fn step<E: Evaluator>(ev: &mut E, params: &[f32], eps: f32) -> (E::Loss, Vec<E::Loss>) {
    let mut d = vec![E::Loss::ZERO; params.len()];
    let base = ev.evaluate(params, eps, &mut d).unwrap();
    (base, d)
}

use perturb::Real;

#[test]
fn thread_count_does_not_change_a_bit() {
    let (model, data) = random_case(
        &[12, 40, 30, 5],
        &[Activation::Tanh, Activation::Sigmoid, Activation::Identity],
        50,
        3,
    );
    for method in [Method::Naive, Method::Reuse] {
        let mut one = CpuEvaluator::<f32>::with_method(&model, &data, method).unwrap();
        one.set_threads(1);
        let mut four = CpuEvaluator::<f32>::with_method(&model, &data, method).unwrap();
        four.set_threads(4);
        let (b1, d1) = step(&mut one, &model.params, 1e-3);
        let (b4, d4) = step(&mut four, &model.params, 1e-3);
        assert_eq!(b1.to_bits(), b4.to_bits(), "{}: base loss", method.name());
        for (k, (x, y)) in d1.iter().zip(&d4).enumerate() {
            assert_eq!(
                x.to_bits(),
                y.to_bits(),
                "{}: delta {k}: 1 thread {x}, 4 threads {y}",
                method.name()
            );
        }
    }
}

/// Finite-difference noise of the naive method: a loss rounds to half an ULP (2^-24 relative),
/// and the two losses of a difference each carry that; reuse's direct sum is far more precise.
const NAIVE_NOISE_ULPS: f64 = 2.0;
/// Beyond that noise, reuse and naive may differ by this relative amount of the delta itself.
const DELTA_REL_TOL: f64 = 1e-3;

#[test]
fn reuse_and_naive_deltas_agree_within_finite_difference_noise() {
    let cases = [
        random_case(
            &[2, 3, 1],
            &[Activation::Sigmoid, Activation::Identity],
            1,
            1,
        ),
        random_case(
            &[8, 16, 4],
            &[Activation::Tanh, Activation::Identity],
            32,
            2,
        ),
        random_case(
            &[6, 10, 7, 3],
            &[Activation::Relu, Activation::Sigmoid, Activation::Tanh],
            20,
            4,
        ),
        random_case(
            &[5, 4, 4, 4, 2],
            &[
                Activation::Sigmoid,
                Activation::Tanh,
                Activation::Sigmoid,
                Activation::Identity,
            ],
            9,
            5,
        ),
    ];
    for (model, data) in cases {
        let mut naive = CpuEvaluator::<f32>::with_method(&model, &data, Method::Naive).unwrap();
        let mut reuse = CpuEvaluator::<f32>::with_method(&model, &data, Method::Reuse).unwrap();
        let mut exact = CpuEvaluator::<f64>::with_method(&model, &data, Method::Reuse).unwrap();
        let (bn, dn) = step(&mut naive, &model.params, 1e-3);
        let (br, dr) = step(&mut reuse, &model.params, 1e-3);
        let (_, d64) = step(&mut exact, &model.params, 1e-3);
        assert_eq!(
            bn.to_bits(),
            br.to_bits(),
            "both methods compute the same unperturbed loss"
        );
        let noise = NAIVE_NOISE_ULPS * bn as f64 * f32::EPSILON as f64;
        let (mut err_naive, mut err_reuse) = (0.0f64, 0.0f64);
        for k in 0..dn.len() {
            let (n, r, e) = (dn[k] as f64, dr[k] as f64, d64[k]);
            assert!(
                (n - r).abs() <= noise + DELTA_REL_TOL * e.abs(),
                "{:?} delta {k}: naive {n:e}, reuse {r:e}, float64 {e:e} (noise {noise:e})",
                model.layers().iter().map(|l| l.outputs).collect::<Vec<_>>()
            );
            err_naive = err_naive.max((n - e).abs());
            err_reuse = err_reuse.max((r - e).abs());
        }
        // Against float64, reuse's worst delta error is below naive's.
        eprintln!("worst delta error vs float64: naive {err_naive:e}, reuse {err_reuse:e}");
        assert!(
            err_reuse <= err_naive,
            "reuse {err_reuse:e} vs naive {err_naive:e}"
        );
    }
}

/// Measured on the book: the reuse curve stays within 1e-3 relative of the naive one.
const CURVE_REL_TOL: f64 = 1e-3;

#[test]
fn reuse_trains_the_book_curve_like_naive() {
    let model = Model::book();
    let data = Dataset::book();
    let mut naive = CpuEvaluator::<f32>::with_method(&model, &data, Method::Naive).unwrap();
    let mut reuse = CpuEvaluator::<f32>::with_method(&model, &data, Method::Reuse).unwrap();
    let a = train(&mut naive, &model.params, &Hyper::book(), |_, _| {}).unwrap();
    let b = train(&mut reuse, &model.params, &Hyper::book(), |_, _| {}).unwrap();
    let (i, r) = a
        .losses
        .iter()
        .zip(&b.losses)
        .map(|(x, y)| (x - y).abs() / x)
        .enumerate()
        .fold((0, 0.0), |w, (i, r)| if r > w.1 { (i, r) } else { w });
    assert!(
        r <= CURVE_REL_TOL,
        "epoch {}: naive {} vs reuse {} ({r:e})",
        i + 1,
        a.losses[i],
        b.losses[i]
    );
    // Reuse in float64 reproduces the notebook's trajectory's first loss.
    let mut f64_reuse = CpuEvaluator::<f64>::with_method(&model, &data, Method::Reuse).unwrap();
    let c = train(&mut f64_reuse, &model.params, &Hyper::book(), |_, _| {}).unwrap();
    assert_eq!(format!("{:.8}", c.losses[0]), "0.33455009");
}
