//! Softmax cross-entropy, generic over the loss's float type: the float32 path evaluates the
//! twins of `src/math.rs` (`exp_f32`, `ln_f32`) in the order the WGSL kernels follow, the float64
//! path std's `exp` and `ln` in the same order.

use crate::precision::Real;

/// Softmax cross-entropy over logits `z` (natural log), as the loss kernels compute it from
/// [`xent_max_step`], [`xent_sum_step`] and [`xent_from_parts`]. The operation order is the
/// contract the WGSL kernels follow:
///
/// 1. `m = z[0]`, then for j = 1, 2, … ascending: `m = xent_max_step(m, z[j])`;
/// 2. `s = 0`, then for j = 0, 1, … ascending: `s = xent_sum_step(s, z[j], m)`, that is
///    `s = s + exp(z[j] - m)`;
/// 3. `l = (m - z[label]) + ln(s)`.
///
/// `s >= 1` (the largest term is `exp(0) = 1`), so `ln` never sees its special cases, and the
/// result is `>= 0` and finite whenever `m - z[label]` is (logits of magnitude below 1.7e38).
/// For float32 `exp`/`ln` are the twins [`crate::math::exp_f32`]/[`crate::math::ln_f32`] (via [`Real`]); for float64 they
/// are std's.
/// Panics if `z` is empty or `label >= z.len()`.
pub fn softmax_xent<R: Real>(z: &[R], label: usize) -> R {
    let m = xent_max(z);
    xent_from_parts(m, xent_sum_exp(z, m), z[label])
}

/// Soft-target softmax cross-entropy `sum_j p[j] * (logsumexp(z) - z[j])`, in this order:
/// `m` and `s` as in [`softmax_xent`], `ls = ln(s)`, then `acc = 0` and for j = 0, 1, …
/// ascending: `acc = acc + xent_soft_term(m, ls, z[j], p[j])`, that is
/// `acc = acc + p[j] * ((m - z[j]) + ls)`. Panics if `z` is empty or `p` is shorter than `z`.
pub fn softmax_xent_soft<R: Real>(z: &[R], p: &[R]) -> R {
    assert!(
        p.len() >= z.len(),
        "{} targets for {} logits",
        p.len(),
        z.len()
    );
    let m = xent_max(z);
    let ls = xent_sum_exp(z, m).ln_real();
    z.iter().zip(p).fold(R::ZERO, |acc, (&zj, &pj)| {
        acc + xent_soft_term(m, ls, zj, pj)
    })
}

/// [`softmax_xent`] in float32: bit for bit the WGSL kernels' loss on llvmpipe.
pub fn softmax_xent_f32(z: &[f32], label: usize) -> f32 {
    softmax_xent(z, label)
}

/// [`softmax_xent_soft`] in float32: bit for bit the WGSL kernels' loss on llvmpipe.
pub fn softmax_xent_soft_f32(z: &[f32], p: &[f32]) -> f32 {
    softmax_xent_soft(z, p)
}

/// Largest logit by [`xent_max_step`] from `z[0]` upwards. Panics on an empty slice.
pub fn xent_max<R: Real>(z: &[R]) -> R {
    let (&first, rest) = z.split_first().expect("softmax over no logits");
    rest.iter().fold(first, |m, &zj| xent_max_step(m, zj))
}

/// `s = sum_j exp(z[j] - m)`, j ascending from `s = 0` by [`xent_sum_step`].
pub fn xent_sum_exp<R: Real>(z: &[R], m: R) -> R {
    z.iter().fold(R::ZERO, |s, &zj| xent_sum_step(s, zj, m))
}

/// One step of the running maximum: `z` if `z > m`, else `m`. A comparison rather than a `max`
/// builtin, whose NaN behaviour differs between devices. NaN logits are outside the contract: the
/// CPU skips one after the first, a GPU compiler may turn the comparison into a `max`.
pub fn xent_max_step<R: Real>(m: R, z: R) -> R {
    if z > m {
        z
    } else {
        m
    }
}

/// One step of the sum of exponentials: `s + exp(z - m)`.
pub fn xent_sum_step<R: Real>(s: R, z: R, m: R) -> R {
    s + (z - m).exp_real()
}

/// The hard-label loss from its parts: `(m - zy) + ln(s)`, with `zy` the labelled logit.
pub fn xent_from_parts<R: Real>(m: R, s: R, zy: R) -> R {
    (m - zy) + s.ln_real()
}

/// One soft-target term: `p * ((m - z) + ls)`, with `ls = ln(s)` computed once per sample.
pub fn xent_soft_term<R: Real>(m: R, ls: R, z: R, p: R) -> R {
    p * ((m - z) + ls)
}

// The cumulant series of a hidden unit's nudge (the reuse method's O(1) path).
//
// When unit u of the last hidden layer changes by δ, logit k of an identity output layer moves by
// δ·w_k (w_k = W[u][k]). With p = softmax(z) and targets t (T = Σ t_k, 1 for one-hot rows), a
// sample's loss `T·lse(z) − Σ t_k z_k` changes by
//
//   Δ = T·K(δ) − δ·w̄_t,   K(δ) = ln Σ_k p_k e^{δ w_k} = Σ_{n≥1} κ_n δⁿ/n!,   w̄_t = Σ t_k w_k,
//
// κ_n the cumulants of w under p. Cut after n = 4: Δ ≈ δ(c1 + δ(c2 + δ(c3 + δ c4))) with
// c1 = T·κ1 − w̄_t, c2 = T·κ2/2, c3 = T·κ3/6, c4 = T·κ4/24. The coefficients depend on (u, sample)
// only, so the reuse method computes them once per step in O(K) and each (parameter, sample)
// item costs O(1) and no exponential.
//
// Truncation bound: let X = w − κ1 under p, |X| ≤ R (R = max_k w_k − min_k w_k, the unit's
// spread, bounds it since κ1 lies between the extremes). For complex t with |t| = ρ and a = ρR,
// |E e^{tX} − 1| = |E(e^{tX} − 1 − tX)| ≤ e^a − 1 − a =: q(a), so for q < 1 (a < 1.146) the
// centred generating function ln E e^{tX} is analytic on the disc and bounded by
// M(a) = −ln(1 − q(a)); Cauchy's estimate gives |κ_n|/n! ≤ M(a)/ρⁿ (n ≥ 2), and the tail beyond
// n = 4 is at most M(a)·(x/a)⁵/(1 − x/a) with x = |δ|·R, for every a in (x, 1.146).
// [`series_tail_bound`] takes the best a. The series replaces the exact difference only where
// `|δ|·R ≤` [`series_max_x`], chosen so that this bound (times T ≈ 1) is at most
// [`SERIES_TAIL_ROUNDOFFS`] units of roundoff: below 1/32 of a float32 epsilon (absolute, so of
// `1 + L_s` for any per-sample loss L_s), and below 1/32 of a float64 epsilon on the float64 path.

/// The truncation the series may leave, in units of roundoff (`2^-24` for float32, `2^-53` for
/// float64), absolute: [`series_max_x`] keeps [`series_tail_bound`] below it.
pub const SERIES_TAIL_ROUNDOFFS: f64 = 1.0 / 16.0;

/// float32's [`series_max_x`]: `2^-6`, where the bound is 0.32 of the allowed 2^-28 (the slack
/// also covers the rounding of `|δ|·R` itself); at `2^-5` it would be 10 times over.
pub const SERIES_MAX_X_F32: f32 = 0.015625;

/// float64's [`series_max_x`]: `2^-12`, where the bound is 0.16 of the allowed 2^-57; at `2^-11`
/// it would be 5 times over.
pub const SERIES_MAX_X_F64: f64 = 2.44140625e-4;

/// Largest `|δ|·R` where the float type `R` takes the series ([`series_applies`]).
pub fn series_max_x<R: Real>() -> R {
    if R::MANTISSA_DIGITS <= f32::MANTISSA_DIGITS {
        R::from_f32(SERIES_MAX_X_F32)
    } else {
        R::from_f64(SERIES_MAX_X_F64)
    }
}

/// The bound on the series' truncation at `x = |δ|·R` (module comment above), the best over a
/// grid of radii `a` in (x, 1.14): an upper bound whatever the grid, since each `a` gives one.
pub fn series_tail_bound(x: f64) -> f64 {
    const A_MAX: f64 = 1.14;
    const STEPS: u32 = 4096;
    (1..STEPS)
        .map(|i| x + (A_MAX - x) * f64::from(i) / f64::from(STEPS))
        .filter(|&a| a > x)
        .map(|a| {
            let q = a.exp() - 1.0 - a;
            let r = x / a;
            -(1.0 - q).ln() * r.powi(5) / (1.0 - r)
        })
        .fold(f64::INFINITY, f64::min)
}

/// Whether a change `delta` of a unit whose outgoing weights spread over `spread` takes the series:
/// `|delta|·spread <= series_max_x` (false for NaN). Same comparison in the kernels.
pub fn series_applies<R: Real>(delta: R, spread: R) -> bool {
    let mag = if delta < R::ZERO {
        R::ZERO - delta
    } else {
        delta
    };
    mag * spread <= series_max_x::<R>()
}

/// The spread `max_k w_k − min_k w_k` of a unit's outgoing weights, the running extremes by
/// [`xent_max_step`]'s comparison from `w[0]` upwards. Panics on an empty slice.
pub fn weight_spread<R: Real>(w: &[f32]) -> R {
    let (&first, rest) = w.split_first().expect("a unit with no outgoing weights");
    let first = R::from_f32(first);
    let (hi, lo) = rest.iter().fold((first, first), |(hi, lo), &wk| {
        let wk = R::from_f32(wk);
        (xent_max_step(hi, wk), if wk < lo { wk } else { lo })
    });
    hi - lo
}

/// `p[k] = exp((z[k] − m) − ln s)`, the softmax of `z` with `m` and `s` as in [`softmax_xent`]
/// (no division: the twins have none). Panics if `p` is shorter than `z`.
pub fn softmax_probs<R: Real>(z: &[R], p: &mut [R]) {
    let m = xent_max(z);
    let ls = xent_sum_exp(z, m).ln_real();
    for (pk, &zk) in p[..z.len()].iter_mut().zip(z) {
        *pk = ((zk - m) - ls).exp_real();
    }
}

/// The series coefficients `[c1, c2, c3, c4]` of one (unit, sample) from the sample's softmax `p`,
/// its targets `t` and the unit's outgoing weights `w`, in this order (the kernels' too), each sum
/// over k ascending from 0:
/// 1. `T = Σ t_k`, `κ1 = Σ p_k·w_k`, `w̄ = Σ t_k·w_k` (one pass);
/// 2. `d = w_k − κ1`, `q = d·d`: `m2 = Σ p_k·q`, `m3 = Σ p_k·(q·d)`, `m4 = Σ p_k·(q·q)`;
/// 3. `κ4 = m4 − (m2·m2)·3`; `c1 = T·κ1 − w̄`, `c2 = (T·m2)·0.5`, `c3 = (T·m3)·(1/6)`,
///    `c4 = (T·κ4)·(1/24)`, the fractions rounded to the type (shared bit patterns `XENT_SIXTH`,
///    `XENT_TWENTYFOURTH` for float32).
pub fn series_terms<R: Real>(p: &[R], t: &[f32], w: &[f32]) -> [R; 4] {
    let (mut total, mut k1, mut wt) = (R::ZERO, R::ZERO, R::ZERO);
    for ((&pk, &tk), &wk) in p.iter().zip(t).zip(w) {
        let (tk, wk) = (R::from_f32(tk), R::from_f32(wk));
        total = total + tk;
        k1 = k1 + pk * wk;
        wt = wt + tk * wk;
    }
    let (mut m2, mut m3, mut m4) = (R::ZERO, R::ZERO, R::ZERO);
    for (&pk, &wk) in p.iter().zip(w) {
        let d = R::from_f32(wk) - k1;
        let q = d * d;
        m2 = m2 + pk * q;
        m3 = m3 + pk * (q * d);
        m4 = m4 + pk * (q * q);
    }
    let k4 = m4 - (m2 * m2) * R::from_f64(3.0);
    [
        total * k1 - wt,
        (total * m2) * R::from_f64(0.5),
        (total * m3) * R::from_f64(1.0 / 6.0),
        (total * k4) * R::from_f64(1.0 / 24.0),
    ]
}

/// The series' change of a sample's loss for a change `delta` of the unit:
/// `δ·(c1 + δ·(c2 + δ·(c3 + δ·c4)))`, innermost first.
pub fn series_change<R: Real>(delta: R, c: [R; 4]) -> R {
    let h = c[2] + delta * c[3];
    let h = c[1] + delta * h;
    let h = c[0] + delta * h;
    delta * h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::{ln_f32, LN_MAX_ULP};

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    /// Softmax cross-entropy of `z` against `label` in float64 from the widened logits.
    fn xent_f64(z: &[f32], label: usize) -> f64 {
        let m = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let s: f64 = z.iter().map(|&v| (v as f64 - m).exp()).sum();
        (m - z[label] as f64) + s.ln()
    }

    /// Seeded logits uniform in [-scale, scale) and a label, for `count` samples of `k` classes.
    fn random_logits(k: usize, scale: f32, count: usize, seed: u64) -> Vec<(Vec<f32>, usize)> {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..count)
            .map(|_| {
                let z = (0..k).map(|_| rng.random_range(-scale..scale)).collect();
                (z, rng.random_range(0..k))
            })
            .collect()
    }

    /// `|l32 - l64| <= XENT_TOL_EPS * f32::EPSILON * (1 + |l64|)`: `ln(s)` with `s` in [1, K] is
    /// off by an absolute few epsilon (the terms of `s` are each a few ULP off, and the derivative
    /// of ln is at most 1), while `m - z[y]` and the last addition are off relative to the loss.
    /// A pure relative bound would fail for confident predictions where the loss is ~1e-9.
    /// Measured: 1.46 (K = 1000).
    const XENT_TOL_EPS: f64 = 2.0;

    /// The allowed truncation at float32's and float64's thresholds, and twice each threshold.
    fn tail_allowed(digits: u32) -> f64 {
        SERIES_TAIL_ROUNDOFFS * 2f64.powi(-(digits as i32))
    }

    #[test]
    fn series_thresholds_keep_the_tail_bound_below_the_stated_roundoff_fraction() {
        for (x, digits) in [
            (SERIES_MAX_X_F32 as f64, f32::MANTISSA_DIGITS),
            (SERIES_MAX_X_F64, f64::MANTISSA_DIGITS),
        ] {
            let allowed = tail_allowed(digits);
            let (at, twice) = (series_tail_bound(x), series_tail_bound(2.0 * x));
            eprintln!(
                "{digits} digits: x = {x:e}: tail {at:e}, at 2x {twice:e}, allowed {allowed:e}"
            );
            assert!(at <= allowed, "x = {x}: tail {at:e} > {allowed:e}");
            // Not needlessly cautious: the next power of two would break the bound.
            assert!(twice > allowed, "x = {x}: 2x also holds ({twice:e})");
        }
        assert_eq!(series_max_x::<f32>(), SERIES_MAX_X_F32);
        assert_eq!(series_max_x::<f64>(), SERIES_MAX_X_F64);
    }

    /// The shared bit patterns of the kernels are the float32 roundings the generic code uses.
    #[test]
    fn series_constants_are_the_shared_bit_patterns() {
        let shared = |name: &str| {
            crate::math::SHARED_CONSTANTS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|&(_, b)| b)
                .unwrap_or_else(|| panic!("{name} not shared"))
        };
        assert_eq!(f32::from_f64(1.0 / 6.0).to_bits(), shared("XENT_SIXTH"));
        assert_eq!(
            f32::from_f64(1.0 / 24.0).to_bits(),
            shared("XENT_TWENTYFOURTH")
        );
        assert_eq!(SERIES_MAX_X_F32.to_bits(), shared("XENT_SERIES_MAX_X"));
    }

    /// Exact `T·ln Σ p_k e^{δ w_k} − δ Σ t_k w_k` in float64 without cancellation (`ln_1p` of
    /// `Σ p_k·expm1(δ w_k)` over a normalised p).
    fn exact_change(p: &[f64], t: &[f32], w: &[f32], delta: f64) -> f64 {
        let total: f64 = t.iter().map(|&v| v as f64).sum();
        let norm: f64 = p.iter().sum();
        let inner: f64 = p
            .iter()
            .zip(w)
            .map(|(pk, &wk)| pk / norm * (delta * wk as f64).exp_m1())
            .sum();
        let wt: f64 = t
            .iter()
            .zip(w)
            .map(|(&tk, &wk)| tk as f64 * wk as f64)
            .sum();
        total * inner.ln_1p() - delta * wt
    }

    /// At and just below the float32 threshold the float64 series is within the tail bound of
    /// the exact change (float64 rounding, a few 1e-16, on top).
    #[test]
    fn series_truncation_stays_within_its_bound_at_the_threshold() {
        use rand::{RngExt, SeedableRng};
        const F64_ROUNDING: f64 = 1e-14;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
        let mut worst = 0.0f64;
        for trial in 0..2000 {
            let k = [2usize, 3, 10, 70][trial % 4];
            let z: Vec<f64> = (0..k).map(|_| rng.random_range(-6.0..6.0)).collect();
            let scale = [0.05f32, 1.0, 30.0][trial % 3];
            let w: Vec<f32> = (0..k).map(|_| rng.random_range(-scale..scale)).collect();
            let mut t = vec![0.0f32; k];
            t[rng.random_range(0..k)] = 1.0;
            let mut p = vec![0.0f64; k];
            softmax_probs(&z, &mut p);
            let spread: f64 = weight_spread(&w);
            let sign = if trial % 2 == 0 { 1.0 } else { -1.0 };
            let x = SERIES_MAX_X_F32 as f64 * [1.0, 0.999, 0.5][trial % 3];
            let delta = sign * x / spread;
            let got = series_change(delta, series_terms(&p, &t, &w));
            let want = exact_change(&p, &t, &w, delta);
            let bound = series_tail_bound(x);
            let ratio = ((got - want).abs() - F64_ROUNDING * (1.0 + want.abs())) / bound;
            worst = worst.max(ratio);
            assert!(
                ratio <= 1.0,
                "K = {k}, δ = {delta:e}, x = {x:e}: series {got:e} vs exact {want:e} \
                 (|error| {:e}, bound {bound:e})",
                (got - want).abs()
            );
        }
        eprintln!("worst truncation: {worst:.3e} of the bound");
    }

    #[test]
    fn softmax_xent_f32_is_within_its_bound_of_float64() {
        let mut worst = (0.0f64, Vec::new(), 0usize);
        for (k, seed) in [(1, 1), (2, 2), (3, 3), (10, 4), (100, 5), (1000, 6)] {
            for scale in [1e-3f32, 1.0, 30.0, 1e4] {
                for (z, y) in random_logits(k, scale, 4000 / k + 50, seed) {
                    let want = xent_f64(&z, y);
                    let got = softmax_xent_f32(&z, y) as f64;
                    let err = (got - want).abs() / (f32::EPSILON as f64 * (1.0 + want.abs()));
                    if err > worst.0 || err.is_nan() {
                        worst = (err, z, y);
                    }
                }
            }
        }
        let (err, z, y) = worst;
        let show: Vec<f32> = z.iter().copied().take(6).collect();
        eprintln!(
            "softmax_xent_f32: worst {err:.3} eps*(1+|l|), K = {}",
            z.len()
        );
        assert!(
            err <= XENT_TOL_EPS,
            "K = {}, label {y}, logits {show:?}…: {} vs float64 {} \
             ({err:.3} eps*(1+|l|), allowed {XENT_TOL_EPS})",
            z.len(),
            softmax_xent_f32(&z, y),
            xent_f64(&z, y)
        );
    }

    #[test]
    fn softmax_xent_float64_path_matches_the_plain_formula() {
        const F64_TOL: f64 = 1e-12;
        for (z, y) in random_logits(10, 30.0, 500, 7) {
            let z64: Vec<f64> = z.iter().map(|&v| v as f64).collect();
            let (got, want) = (softmax_xent(&z64, y), xent_f64(&z, y));
            assert!(
                (got - want).abs() <= F64_TOL * (1.0 + want.abs()),
                "label {y}, logits {z:?}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn softmax_xent_of_equal_logits_is_ln_k_whatever_their_value() {
        for k in [1usize, 2, 3, 10, 1000] {
            for v in [0.0f32, -0.0, 5.5, -1e4, 1e4, 3e38] {
                let z = vec![v; k];
                let got = softmax_xent_f32(&z, k - 1);
                // s adds exp(0) = 1 exactly k times, so the loss is ln_f32(k) to the bit.
                assert_eq!(
                    got.to_bits(),
                    ln_f32(k as f32).to_bits(),
                    "K = {k}, logit {v}"
                );
                assert!(
                    ulps(got, (k as f64).ln() as f32) <= LN_MAX_ULP,
                    "K = {k}: {got}"
                );
                assert_eq!(softmax_xent(&vec![v as f64; k], 0), (k as f64).ln());
            }
        }
    }

    #[test]
    fn softmax_xent_is_finite_and_exact_for_logits_of_1e4() {
        let z = [1e4f32, -1e4, 0.0, 1e4 - 1.0];
        // exp(-1) is the only term besides 1 that survives: l(label 0) = ln(1 + e^-1 + tiny).
        let want0 = (1.0f64 + (-1.0f64).exp()).ln();
        let got0 = softmax_xent_f32(&z, 0);
        assert!(
            (got0 as f64 - want0).abs() <= XENT_TOL_EPS * f32::EPSILON as f64,
            "{got0}"
        );
        // 2e4 is exact in float32 and dominates: the loss is 2e4 + ln(1.37) rounded.
        let got1 = softmax_xent_f32(&z, 1);
        assert_eq!(got1, (2e4f64 + want0) as f32, "label 1");
        // Finite while m - z[label] fits in float32, however large the logits themselves.
        assert_eq!(softmax_xent_f32(&[1e38, -1e38], 1), 2e38);
    }

    #[test]
    fn soft_targets_one_hot_equal_the_hard_label_bit_for_bit() {
        for (z, y) in random_logits(10, 30.0, 200, 8) {
            let mut p = vec![0.0f32; z.len()];
            p[y] = 1.0;
            let (soft, hard) = (softmax_xent_soft_f32(&z, &p), softmax_xent_f32(&z, y));
            assert_eq!(soft.to_bits(), hard.to_bits(), "label {y}, logits {z:?}");
        }
    }

    #[test]
    fn soft_targets_are_the_mix_of_hard_losses() {
        const MIX_TOL_EPS: f64 = 8.0;
        for (z, _) in random_logits(5, 10.0, 200, 9) {
            let p = [0.1f32, 0.2, 0.3, 0.4, 0.0];
            let want: f64 = (0..5).map(|j| p[j] as f64 * xent_f64(&z, j)).sum();
            let got = softmax_xent_soft_f32(&z, &p) as f64;
            let err = (got - want).abs() / (f32::EPSILON as f64 * (1.0 + want.abs()));
            assert!(
                err <= MIX_TOL_EPS,
                "logits {z:?}: {got} vs {want} ({err:.2} eps)"
            );
        }
    }
}
