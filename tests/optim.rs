//! The optimisers (`perturb::optim`) and the mini-batch order (`perturb::batches`): SGD is the
//! book's rule bit for bit, momentum and Adam equal an independent NumPy transcription
//! (`benches/optim_reference.py`, fixture `tests/fixtures/optim_reference.json`) bit for bit in both
//! precisions, the state survives a JSON round trip, and the epoch order is a deterministic,
//! uniform permutation that the same transcription reproduces.

use perturb::batches::{batches, epoch_order, num_batches};
use perturb::optim::{OptState, Optimizer};
use perturb::{train, Error, Real};
use rand::{RngExt, SeedableRng};
use serde::Deserialize;
use std::collections::HashSet;

/// The fixture written by `benches/optim_reference.py`.
const REFERENCE: &str = include_str!("fixtures/optim_reference.json");

#[derive(Deserialize)]
struct Reference {
    case: Case,
    trajectories: std::collections::HashMap<String, Trajectories>,
    epoch_orders: Vec<Order>,
}

#[derive(Deserialize)]
struct Case {
    params: Vec<f32>,
    grads: Vec<Vec<f64>>,
    lr: f64,
    optimizers: Vec<Optimizer>,
}

#[derive(Deserialize)]
struct Trajectories {
    f32: Vec<Vec<f32>>,
    f64: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct Order {
    n: usize,
    seed: u64,
    epoch: u64,
    order: Vec<u32>,
}

fn reference() -> Reference {
    serde_json::from_str(REFERENCE).expect("fixture parses")
}

/// The first index where two float32 vectors differ in bits, with both values.
fn first_difference(got: &[f32], want: &[f32]) -> Option<(usize, f32, f32)> {
    assert_eq!(got.len(), want.len(), "lengths");
    (0..got.len())
        .find(|&i| got[i].to_bits() != want[i].to_bits())
        .map(|i| (i, got[i], want[i]))
}

/// A random float32 parameter, gradient or learning rate of varied magnitude and sign.
fn random_value(rng: &mut impl RngExt, max_exp: i32) -> f64 {
    let mag = 10f64.powi(rng.random_range(-8..=max_exp)) * rng.random_range(0.5..2.0);
    if rng.random_bool(0.5) {
        -mag
    } else {
        mag
    }
}

fn sgd_equals_apply<R: Real>(label: &str) {
    const VALUES: usize = 20_000;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(14);
    for round in 0..20 {
        let lr = R::from_f64(random_value(&mut rng, 0).abs());
        let mut params: Vec<f32> = (0..VALUES)
            .map(|_| random_value(&mut rng, 3) as f32)
            .collect();
        let grad: Vec<R> = (0..VALUES)
            .map(|_| R::from_f64(random_value(&mut rng, 4)))
            .collect();
        let want: Vec<f32> = params
            .iter()
            .zip(&grad)
            .map(|(&w, &g)| train::apply(w, g, lr))
            .collect();
        let mut state = OptState::new(&Optimizer::Sgd, VALUES);
        state.step(&Optimizer::Sgd, &mut params, &grad, lr);
        if let Some((i, got, want)) = first_difference(&params, &want) {
            panic!("{label} round {round}: index {i}: step {got:e} apply {want:e}");
        }
    }
}

#[test]
fn sgd_step_is_train_apply_bit_for_bit_in_both_precisions() {
    sgd_equals_apply::<f32>("f32");
    sgd_equals_apply::<f64>("f64");
}

/// Runs `opt` over the case's gradients in precision `R`; the first step where the parameters
/// differ from the fixture's, with the worst index and both values.
fn trajectory_mismatch<R: Real>(case: &Case, opt: &Optimizer, want: &[Vec<f32>]) -> Option<String> {
    assert_eq!(want.len(), case.grads.len(), "steps in fixture");
    let mut params = case.params.clone();
    let mut state = OptState::new(opt, params.len());
    for (step, (grads, want)) in case.grads.iter().zip(want).enumerate() {
        let grad: Vec<R> = grads.iter().map(|&g| R::from_f64(g)).collect();
        state.step(opt, &mut params, &grad, R::from_f64(case.lr));
        if let Some((i, got, want)) = first_difference(&params, want) {
            return Some(format!(
                "step {}: index {i}: rust {got:e} numpy {want:e}",
                step + 1
            ));
        }
    }
    None
}

#[test]
fn every_optimizer_matches_the_numpy_transcription_bit_for_bit() {
    let reference = reference();
    let case = &reference.case;
    assert_eq!(case.optimizers.len(), 3, "sgd, momentum, adam");
    let mut failures = Vec::new();
    for opt in &case.optimizers {
        let want = &reference.trajectories[opt.name()];
        let f32 = trajectory_mismatch::<f32>(case, opt, &want.f32);
        let f64 = trajectory_mismatch::<f64>(case, opt, &want.f64);
        for (precision, mismatch) in [("f32", f32), ("f64", f64)] {
            if let Some(m) = mismatch {
                failures.push(format!("{} {precision}: {m}", opt.name()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The fixture's two precisions differ somewhere for momentum and Adam, so comparing both is not
/// comparing one trajectory twice.
#[test]
fn the_fixture_distinguishes_the_precisions() {
    let reference = reference();
    for name in ["momentum", "adam"] {
        let t = &reference.trajectories[name];
        let last = t.f32.len() - 1;
        assert!(
            first_difference(&t.f32[last], &t.f64[last]).is_some(),
            "{name}: f32 and f64 trajectories are identical"
        );
    }
}

/// Adam's first step is `lr·g / (|g| + ε)` up to rounding: about `lr·sign(g)`.
#[test]
fn adams_first_step_moves_each_parameter_by_about_lr() {
    const VALUES: usize = 10_000;
    const LR: f64 = 1e-2;
    /// Relative to `lr`: ε/|g| ≤ 1e-5 for |g| ≥ 1e-3, float32 rounding of w (|w| ≤ 1) ≤ 6e-8/lr,
    /// and of m, v and the bias corrections a few float32 ulps.
    const TOLERANCE: f64 = 1e-4;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let init: Vec<f32> = (0..VALUES).map(|_| rng.random_range(-1.0..1.0)).collect();
    let grad: Vec<f64> = (0..VALUES)
        .map(|_| random_value(&mut rng, 3).signum() * 10f64.powf(rng.random_range(-3.0..3.0)))
        .collect();
    for precision in ["f32", "f64"] {
        let mut params = init.clone();
        let mut state = OptState::new(&Optimizer::adam(), VALUES);
        if precision == "f32" {
            let g: Vec<f32> = grad.iter().map(|&g| g as f32).collect();
            state.step(&Optimizer::adam(), &mut params, &g, LR as f32);
        } else {
            state.step(&Optimizer::adam(), &mut params, &grad, LR);
        }
        let (worst, err) = (0..VALUES)
            .map(|i| {
                let moved = f64::from(params[i]) - f64::from(init[i]);
                (i, (moved + LR * grad[i].signum()).abs() / LR)
            })
            .fold((0, 0.0), |a, b| if b.1 > a.1 { b } else { a });
        assert!(
            err <= TOLERANCE,
            "{precision}: index {worst}: moved {} expected {} (relative error {err:e})",
            f64::from(params[worst]) - f64::from(init[worst]),
            -LR * grad[worst].signum()
        );
    }
}

#[test]
fn opt_state_round_trips_through_json_exactly() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    // Finite bit patterns of every kind: subnormals, extremes, negative zero.
    let mut random_f32s = |n: usize| -> Vec<f32> {
        let mut out = vec![-0.0, f32::MIN_POSITIVE / 3.0, f32::MAX, f32::MIN, 1e-45];
        while out.len() < n {
            let x = f32::from_bits(rng.random());
            if x.is_finite() {
                out.push(x);
            }
        }
        out
    };
    let state = OptState {
        velocity: random_f32s(500),
        m: random_f32s(500),
        v: random_f32s(500),
        t: u64::MAX,
    };
    let text = serde_json::to_string(&state).unwrap();
    let back: OptState = serde_json::from_str(&text).unwrap();
    for (field, got, want) in [
        ("velocity", &back.velocity, &state.velocity),
        ("m", &back.m, &state.m),
        ("v", &back.v, &state.v),
    ] {
        if let Some((i, got, want)) = first_difference(got, want) {
            panic!("{field}: index {i}: read back {got:e}, wrote {want:e}");
        }
    }
    assert_eq!(back.t, state.t, "t");
}

/// A state after real steps resumes exactly: stepping, saving, loading and stepping on equals
/// stepping on without the round trip.
#[test]
fn a_resumed_state_continues_the_same_trajectory() {
    let reference = reference();
    let case = &reference.case;
    for opt in &case.optimizers {
        let (mut straight, mut resumed) = (case.params.clone(), case.params.clone());
        let mut state = OptState::new(opt, straight.len());
        let mut saved = state.clone();
        for (step, grads) in case.grads.iter().enumerate() {
            state.step(opt, &mut straight, grads, case.lr);
            let text = serde_json::to_string(&saved).unwrap();
            saved = serde_json::from_str(&text).unwrap();
            saved.check(opt, resumed.len()).unwrap();
            saved.step(opt, &mut resumed, grads, case.lr);
            if let Some((i, got, want)) = first_difference(&resumed, &straight) {
                panic!(
                    "{} step {}: index {i}: {got:e} vs {want:e}",
                    opt.name(),
                    step + 1
                );
            }
        }
        assert_eq!(saved, state, "{}: final state", opt.name());
    }
}

#[test]
fn check_rejects_a_state_of_another_optimizer_or_size() {
    let adam = OptState::new(&Optimizer::adam(), 4);
    assert!(adam.check(&Optimizer::adam(), 4).is_ok());
    let err = adam.check(&Optimizer::adam(), 5).unwrap_err();
    assert!(err.contains("m has 4 values"), "{err}");
    let err = adam.check(&Optimizer::momentum(), 4).unwrap_err();
    assert!(err.contains("velocity has 0 values"), "{err}");
    let mut stepped = OptState::new(&Optimizer::Sgd, 0);
    stepped.t = 3;
    let err = stepped.check(&Optimizer::Sgd, 0).unwrap_err();
    assert!(err.contains("t is 3"), "{err}");
}

#[test]
fn validate_rejects_each_bad_value_naming_it() {
    let adam = |beta1, beta2, eps| Optimizer::Adam { beta1, beta2, eps };
    let momentum = |momentum| Optimizer::Momentum { momentum };
    let cases = [
        (momentum(1.0), "momentum must be in [0, 1), got 1"),
        (momentum(-0.1), "momentum must be in [0, 1), got -0.1"),
        (momentum(f64::NAN), "momentum must be in [0, 1), got NaN"),
        (
            momentum(f64::INFINITY),
            "momentum must be in [0, 1), got inf",
        ),
        (adam(1.0, 0.999, 1e-8), "beta1 must be in [0, 1), got 1"),
        (adam(-0.5, 0.999, 1e-8), "beta1 must be in [0, 1), got -0.5"),
        (adam(0.9, 1.5, 1e-8), "beta2 must be in [0, 1), got 1.5"),
        (
            adam(0.9, f64::NAN, 1e-8),
            "beta2 must be in [0, 1), got NaN",
        ),
        (
            adam(0.9, 0.999, 0.0),
            "eps must be positive and finite, got 0",
        ),
        (
            adam(0.9, 0.999, -1e-8),
            "eps must be positive and finite, got -0.00000001",
        ),
        (
            adam(0.9, 0.999, f64::INFINITY),
            "eps must be positive and finite, got inf",
        ),
        (
            adam(0.9, 0.999, f64::NAN),
            "eps must be positive and finite, got NaN",
        ),
    ];
    for (opt, want) in cases {
        match opt.validate() {
            Err(Error::Config(msg)) => {
                assert!(msg.contains(want), "{opt:?}: {msg:?} lacks {want:?}");
                assert!(!msg.contains("--"), "{opt:?}: {msg:?} names a flag");
            }
            other => panic!("{opt:?}: expected Error::Config, got {other:?}"),
        }
    }
    for good in [
        Optimizer::Sgd,
        Optimizer::momentum(),
        momentum(0.0),
        Optimizer::adam(),
        adam(0.0, 0.0, f64::MIN_POSITIVE),
    ] {
        assert!(good.validate().is_ok(), "{good:?} rejected");
    }
}

#[test]
fn names_and_defaults_are_pytorchs() {
    assert_eq!(Optimizer::Sgd.name(), "sgd");
    assert_eq!(Optimizer::momentum(), Optimizer::Momentum { momentum: 0.9 });
    assert_eq!(Optimizer::momentum().name(), "momentum");
    let adam = Optimizer::Adam {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    assert_eq!(Optimizer::adam(), adam);
    assert_eq!(adam.name(), "adam");
}

#[test]
fn epoch_order_is_a_permutation_for_every_size() {
    for n in [0usize, 1, 2, 7, 60_000] {
        for (seed, epoch) in [(0, 0), (3, 1), (u64::MAX, u64::MAX)] {
            let order = epoch_order(n, seed, epoch, true);
            let mut seen = vec![false; n];
            for (pos, &i) in order.iter().enumerate() {
                assert!(
                    (i as usize) < n,
                    "n {n} position {pos}: index {i} out of range"
                );
                assert!(
                    !seen[i as usize],
                    "n {n} position {pos}: index {i} repeated"
                );
                seen[i as usize] = true;
            }
            assert_eq!(order.len(), n, "n {n}: length");
        }
    }
}

#[test]
fn epoch_order_is_deterministic_and_matches_the_numpy_transcription() {
    /// Committed: n = 100, seed 0, epoch 0 (the transcription gives the same, below).
    const FIRST_TEN: [u32; 10] = [7, 56, 26, 46, 30, 93, 89, 43, 78, 82];
    assert_eq!(epoch_order(100, 0, 0, true)[..10], FIRST_TEN);
    assert_eq!(epoch_order(100, 0, 0, true), epoch_order(100, 0, 0, true));
    for case in reference().epoch_orders {
        let got = epoch_order(case.n, case.seed, case.epoch, true);
        let (n, seed, epoch) = (case.n, case.seed, case.epoch);
        if let Some(pos) = (0..n).find(|&p| got[p] != case.order[p]) {
            panic!(
                "n {n} seed {seed} epoch {epoch}: position {pos}: rust {} numpy {}",
                got[pos], case.order[pos]
            );
        }
    }
}

#[test]
fn epoch_order_differs_per_epoch_and_per_seed() {
    const N: usize = 1000;
    let mut seen = HashSet::new();
    for seed in [0, 1, 2, 1 << 32, u64::MAX] {
        for epoch in [0, 1, 2, 1 << 32, u64::MAX] {
            let order = epoch_order(N, seed, epoch, true);
            assert!(
                seen.insert(order),
                "seed {seed} epoch {epoch} repeats an order"
            );
        }
    }
}

#[test]
fn without_shuffle_the_order_is_the_identity() {
    for n in [0, 1, 5, 1000] {
        let want: Vec<u32> = (0..n as u32).collect();
        assert_eq!(epoch_order(n, 9, 4, false), want, "n {n}");
    }
}

/// Position 0 takes each of n values equally often over many seeds: Pearson's χ² with n − 1 = 9
/// degrees of freedom stays under the 0.1% critical value.
#[test]
fn the_first_position_is_uniform_over_seeds() {
    const N: usize = 10;
    const SEEDS: u64 = 50_000;
    /// χ²(9) exceeds this with probability 0.001.
    const CHI2_CRITICAL_9DF_P001: f64 = 27.877;
    for epoch in [0, 7] {
        let mut counts = [0u64; N];
        for seed in 0..SEEDS {
            counts[epoch_order(N, seed, epoch, true)[0] as usize] += 1;
        }
        let expected = SEEDS as f64 / N as f64;
        let chi2: f64 = counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        assert!(
            chi2 < CHI2_CRITICAL_9DF_P001,
            "epoch {epoch}: chi2 {chi2} counts {counts:?}"
        );
    }
}

#[test]
fn batches_split_positions_with_the_remainder_last() {
    let sizes = |n, b| batches(n, b).map(|r| r.len()).collect::<Vec<_>>();
    assert_eq!(sizes(10, 3), [3, 3, 3, 1]);
    assert_eq!(
        batches(10, 3).collect::<Vec<_>>(),
        [0..3, 3..6, 6..9, 9..10]
    );
    assert_eq!(sizes(10, 10), [10]);
    assert_eq!(sizes(10, 1), [1; 10]);
    assert_eq!(sizes(10, 5), [5, 5]);
    // Documented rule: 0 or more than n means one batch of every sample.
    let whole = |b| batches(10, b).map(|r| (r.start, r.end)).collect::<Vec<_>>();
    assert_eq!(whole(0), [(0, 10)]);
    assert_eq!(whole(11), [(0, 10)]);
    assert_eq!(whole(usize::MAX), [(0, 10)]);
    // No samples, no batches.
    assert_eq!(batches(0, 0).count(), 0);
    assert_eq!(batches(0, 4).count(), 0);
    for n in [0, 1, 9, 10, 11, 100] {
        for b in [0, 1, 3, 10, 200] {
            let all: Vec<_> = batches(n, b).collect();
            assert_eq!(all.len(), num_batches(n, b), "n {n} b {b}: count");
            let covered: Vec<usize> = all.into_iter().flatten().collect();
            assert_eq!(covered, (0..n).collect::<Vec<_>>(), "n {n} b {b}: coverage");
        }
    }
}
