//! The reuse method's lane path: the same numbers as the scalar reference ([`ReusePlan::delta`]),
//! computed many items at a time so that LLVM vectorises them.
//!
//! - A row of the last hidden layer's parameters (input i's weights to every unit, or the biases)
//!   before an identity output layer, where the closed forms of `output_terms` / `xent_series`
//!   apply: for each sample, every unit of a block at once (`[sample][unit]` copies of the cache
//!   made once per step by [`lane_prepare`]), in two stages over the whole block (the first half
//!   of the activation, then the second half and the item: [`stage_pre`]), then each unit's
//!   samples summed in [`reduce_sse`]'s order with whole rows of units per add
//!   ([`reduce_columns`]).
//! - A block of the output layer's rows: each unit's items over the block's inputs as contiguous
//!   lanes, sample by sample (in `output.rs`).
//! - The unperturbed pass over all samples and cross-entropy's series terms (in `batch.rs`).
//!
//! Every lane performs the scalar reference's operations in the same order (IEEE `+ − ×` per lane,
//! no FMA), so the result is the scalar path's bit for bit (`tests/cpu_vector.rs` checks it).
//!
//! Exact sparsity: when a sample's input to the row is exactly 0 (either sign) and everything the
//! item reads is finite, its item is ±0 on the scalar path (`x·d = ±0`, so `z' = z` up to the sign
//! of a zero, `act(z') − a = ±0`, and `±0·(finite)` stays ±0), and a ±0 added to a reduction lane
//! changes nothing: lanes start at +0 and can never become −0 (`+0 + −0 = +0`, and an exact zero
//! from non-zero operands is +0), and `v + ±0 = v` for every other v. Such items are written as
//! +0 without being computed.

use super::forward::xent;
use super::*;
use crate::math::{exp_in_range, recip_f32, SIGMOID_CLAMP};
use crate::model::Activation;
use crate::xent::{xent_max_step, xent_soft_term};

/// Rows of the per-thread item buffer for `b` samples: the reduction's width, or b when larger.
pub(super) fn item_rows(b: usize) -> usize {
    b.max(b.next_power_of_two().min(REDUCE_LANES))
}

/// Values in a hidden row block's item buffer: 64 KiB of float32 (L2-resident), so that a block
/// spans several vectors of units even at B = 256 (one vector per sample leaves the per-sample
/// loop overhead dominant).
pub(super) const BLOCK_VALUES: usize = 16_384;

/// Units per block of a hidden row: about [`BLOCK_VALUES`] items, in multiples of 16 lanes.
pub(super) fn unit_block(units: usize, b: usize) -> usize {
    let ub = (BLOCK_VALUES / item_rows(b)).max(16) / 16 * 16;
    ub.min(units).max(1)
}

/// Fills the lane path's per-step copies: the output layer's inputs as `[sample][input]` rows
/// each followed by a 1 (`ht`, from `x` without a hidden layer) and, for cross-entropy, the kept
/// pass's terms of the output blocks (`soft`); the last hidden layer's `z`, `a` and closed-form
/// terms as `[sample][unit]` (`coef` is `ab` for MSE, the series `c1..c4` as `[sample][4][unit]`
/// for cross-entropy), and whether all of those and the per-unit terms are finite (the condition
/// for skipping zero inputs). The targets as `[output][sample]` (`yt`) are filled before the pass.
pub(super) fn lane_prepare<R: Real>(
    layers: &[LayerSpan],
    b: usize,
    loss: Loss,
    cache: &mut Cache<R>,
) {
    let out = layers[layers.len() - 1];
    let stride = out.inputs + 1;
    // Both sources are `[input][sample]`.
    let src = match layers.len() {
        1 => &cache.xt[..],
        n => &cache.a[layers[n - 2].unit_off * b..],
    };
    transpose(src, (out.inputs, b, b), &mut cache.ht, stride, |v| v);
    for row in cache.ht.chunks_exact_mut(stride) {
        row[out.inputs] = R::from_f32(1.0);
    }
    if loss == Loss::CrossEntropy {
        let z = &cache.z[out.unit_off * b..][..out.outputs * b];
        super::output::soft_prepare(z, out.outputs, b, &mut cache.soft);
    }
    if cache.zt.is_empty() {
        return;
    }
    let units = out.inputs;
    let first = layers[layers.len() - 2].unit_off * b;
    let Cache {
        z, a, zt, at, coef, ..
    } = cache;
    // Each copy: element (u, s) at `src[u·src_stride + s]` to `dst[s·dst_stride + u]`.
    let same = |v: R| v;
    transpose(&z[first..], (units, b, b), zt, units, same);
    transpose(&a[first..], (units, b, b), at, units, same);
    match loss {
        Loss::Mse => transpose(&cache.ab, (units, b, b), coef, units, same),
        Loss::CrossEntropy => {
            for i in 0..4 {
                let dst = &mut coef[i * units..];
                transpose(
                    &cache.series[i * b..],
                    (units, b, 4 * b),
                    dst,
                    4 * units,
                    same,
                );
            }
        }
    }
    let all = |v: &[R]| v.iter().all(|x| x.is_finite());
    cache.finite = all(&cache.zt)
        && all(&cache.at)
        && all(&cache.coef)
        && all(&cache.bb)
        && all(&cache.spread);
}

/// `dst[c·dst_stride + r] = convert(src[r·src_stride + c])` for r < rows, c < cols, in 8 × 8 tiles (a
/// strided store per element spends more time in the cache than the copy).
pub(super) fn transpose<S: Copy, D>(
    src: &[S],
    (rows, cols, src_stride): (usize, usize, usize),
    dst: &mut [D],
    dst_stride: usize,
    convert: impl Fn(S) -> D,
) {
    const TILE: usize = 8;
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                let from = &src[r * src_stride..][..cols];
                for c in c0..(c0 + TILE).min(cols) {
                    dst[c * dst_stride + r] = convert(from[c]);
                }
            }
        }
    }
}

/// One block of a hidden row: the cache columns of units `u0..u0 + n` as `[sample][unit]`.
struct Block<'a, R> {
    z: &'a [R],
    a: &'a [R],
    coef: &'a [R],
    /// `bb[u]` (MSE) or `spread[u]` (cross-entropy) of the block's units.
    unit: &'a [R],
    units: usize,
    u0: usize,
    /// The row's input over samples; `None` for the biases.
    x: Option<&'a [R]>,
    /// The block's nudges `d = fl(w + eps) − w`.
    d: &'a [R],
    /// Whether items with an exactly zero input may be written as +0 (module docs).
    skip: bool,
}

/// The exact difference of one cross-entropy item outside the series' range: (sample, unit, δ).
type Fix<'f, R> = &'f mut dyn FnMut(usize, usize, R) -> R;

/// Whether sample s's items are +0 without being computed: its input to the row is exactly zero
/// and skipping is allowed (module docs). Bias rows (no input) are never skipped.
#[inline(always)]
fn skipped<R: Real>(blk: &Block<R>, s: usize) -> bool {
    blk.skip && blk.x.is_some_and(|x| x[s] == R::ZERO)
}

/// Stage one of a block's items: `rows[s][j] = pre(z + x·d)` for every sample that is not skipped
/// (a bias row takes x = 1: `1·d` is d exactly, so `z + 1·d = z + d`), +0 for those that are.
/// Running the first half of the activation over the whole block before the second half (stage
/// two, in [`items_mse`] / [`items_xent`]) gives the CPU two short dependent chains per item
/// instead of one long one, so more items are in flight at once; two samples per loop, when
/// neither is skipped, double that again (AVX2 has too few registers for LLVM to interleave
/// the long `exp` chain by itself).
#[inline(always)]
fn stage_pre<R: Real>(blk: &Block<R>, b: usize, pre: &impl Fn(R) -> R, rows: &mut [R]) {
    let n = blk.d.len();
    let one = R::from_f32(1.0);
    let input = |s: usize| blk.x.map_or(one, |x| x[s]);
    let z = |s: usize| &blk.z[s * blk.units + blk.u0..][..n];
    let rows = &mut rows[..b * n];
    for (pair, two) in rows.chunks_mut(2 * n).enumerate() {
        let s = 2 * pair;
        let (r0, r1) = two.split_at_mut(n);
        if r1.is_empty() || skipped(blk, s) || skipped(blk, s + 1) {
            for (i, row) in [r0, r1]
                .into_iter()
                .enumerate()
                .filter(|(_, r)| !r.is_empty())
            {
                if skipped(blk, s + i) {
                    row.fill(R::ZERO);
                    continue;
                }
                let xs = input(s + i);
                // Zipped, not indexed: bounds checks would keep this loop scalar.
                for ((o, &z), &d) in row.iter_mut().zip(z(s + i)).zip(blk.d) {
                    *o = pre(z + xs * d);
                }
            }
            continue;
        }
        let (x0, x1) = (input(s), input(s + 1));
        let lanes = r0.iter_mut().zip(r1.iter_mut()).zip(z(s)).zip(z(s + 1));
        for ((((o0, o1), &z0), &z1), &d) in lanes.zip(blk.d) {
            *o0 = pre(z0 + x0 * d);
            *o1 = pre(z1 + x1 * d);
        }
    }
}

/// The block's items for MSE: `δ·(ab + δ·bb)` per (sample, unit) into `rows[s][j]`, with
/// `δ = act(z + x·d) − a` and `act = post ∘ pre` ([`stage_pre`]).
#[inline(always)]
fn items_mse<R: Real>(
    blk: &Block<R>,
    b: usize,
    (pre, post): (impl Fn(R) -> R, impl Fn(R) -> R),
    rows: &mut [R],
) {
    let n = blk.d.len();
    stage_pre(blk, b, &pre, rows);
    for (s, row) in rows.chunks_exact_mut(n).take(b).enumerate() {
        if skipped(blk, s) {
            continue;
        }
        let at = s * blk.units + blk.u0;
        let (a, ab) = (&blk.a[at..][..n], &blk.coef[at..][..n]);
        // Zipped, not indexed: bounds checks would keep this loop scalar.
        let terms = a.iter().zip(ab).zip(blk.unit);
        for (o, ((&a, &ab), &bb)) in row.iter_mut().zip(terms) {
            let delta = post(*o) - a;
            *o = delta * (ab + delta * bb);
        }
    }
}

/// The block's items for cross-entropy: the series where it applies, else `fix` (with δ computed
/// again, the same bits, for those rare items).
#[inline(always)]
fn items_xent<R: Real>(
    blk: &Block<R>,
    b: usize,
    (pre, post): (impl Fn(R) -> R, impl Fn(R) -> R),
    rows: &mut [R],
    fix: Fix<R>,
) {
    let n = blk.d.len();
    stage_pre(blk, b, &pre, rows);
    for (s, row) in rows.chunks_exact_mut(n).take(b).enumerate() {
        if skipped(blk, s) {
            continue;
        }
        let at = s * blk.units + blk.u0;
        let a = &blk.a[at..][..n];
        let c = |i: usize| &blk.coef[(4 * s + i) * blk.units + blk.u0..][..n];
        let (c0, c1, c2, c3) = (c(0), c(1), c(2), c(3));
        // Zipped, not indexed: bounds checks would keep this loop scalar.
        let terms = c0.iter().zip(c1).zip(c2).zip(c3).zip(a).zip(blk.unit);
        let mut outside = false;
        for (o, (((((&c0, &c1), &c2), &c3), &a), &spread)) in row.iter_mut().zip(terms) {
            let delta = post(*o) - a;
            *o = series_change(delta, [c0, c1, c2, c3]);
            outside |= !series_applies(delta, spread);
        }
        if outside {
            let xs = blk.x.map_or(R::from_f32(1.0), |x| x[s]);
            let z = &blk.z[at..][..n];
            for (j, o) in row.iter_mut().enumerate() {
                let delta = post(pre(z[j] + xs * blk.d[j])) - a[j];
                if !series_applies(delta, blk.unit[j]) {
                    *o = fix(s, blk.u0 + j, delta);
                }
            }
        }
    }
}

/// The first half of [`crate::math::sigmoid_f32`]: `1 + e^-x` with x clamped to ±80, by
/// `src/math.rs`'s `exp_in_range` (−x lies in [−80, 80] or is NaN, where [`crate::math::exp_f32`]'s
/// own clamp is the identity; calling it would add that clamp's two operations per lane). The test
/// `sigmoid_halves_equal_the_twin` compares the two halves with [`crate::math::sigmoid_f32`] over a
/// sweep of float32 bit patterns.
#[inline(always)]
pub(super) fn sigmoid_den(x: f32) -> f32 {
    1.0 + exp_in_range(-x.clamp(-SIGMOID_CLAMP, SIGMOID_CLAMP))
}

/// The second half of [`crate::math::sigmoid_f32`]: `recip_f32(sigmoid_den(x))`.
#[inline(always)]
pub(super) fn sigmoid_from_den(den: f32) -> f32 {
    recip_f32(den)
}

/// [`items_mse`] / [`items_xent`] with the activation fixed per loop, as two halves
/// `act = post ∘ pre`: the float32 sigmoid as [`sigmoid_den`] and [`sigmoid_from_den`] (the
/// same operations in the same order), every other activation whole in `pre`.
#[inline(always)]
fn items_any<R: Real>(
    act: Activation,
    loss: Loss,
    blk: &Block<R>,
    b: usize,
    rows: &mut [R],
    fix: Fix<R>,
) {
    macro_rules! with_act {
        ($pre:expr, $post:expr) => {
            match loss {
                Loss::Mse => items_mse(blk, b, ($pre, $post), rows),
                Loss::CrossEntropy => items_xent(blk, b, ($pre, $post), rows, fix),
            }
        };
    }
    let whole = |v: R| v;
    match act {
        Activation::Identity => with_act!(|v| v, whole),
        Activation::Relu => with_act!(|v: R| v.activate(Activation::Relu), whole),
        // `from_f32` / `to_f32` are the identity for float32.
        Activation::Sigmoid if R::MANTISSA_DIGITS == f32::MANTISSA_DIGITS => {
            with_act!(|v: R| R::from_f32(sigmoid_den(v.to_f32())), |v: R| {
                R::from_f32(sigmoid_from_den(v.to_f32()))
            })
        }
        Activation::Sigmoid => with_act!(|v: R| v.activate(Activation::Sigmoid), whole),
        Activation::Tanh => with_act!(|v: R| v.activate(Activation::Tanh), whole),
    }
}

/// A loop nest to compile for the widest vector unit the CPU has ([`dispatch`]).
pub(super) trait Kernel {
    /// Runs it; implementations are `#[inline(always)]` so that they take the caller's features.
    fn run(self);
}

/// Runs `k` compiled for AVX-512 or AVX2 when the CPU has it. The x86-64 baseline (SSE2) has no
/// vector `floor`, so `exp_f32` would call libm per lane; AVX2 / AVX-512 code lets LLVM vectorise
/// the whole twinned activation. Only these features are enabled, never FMA: every lane rounds
/// each `+ − ×` as the scalar reference does.
pub(super) fn dispatch<K: Kernel>(k: K) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { run_avx512(k) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { run_avx2(k) };
        }
    }
    k.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn run_avx512<K: Kernel>(k: K) {
    k.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_avx2<K: Kernel>(k: K) {
    k.run()
}

/// A hidden row block's items ([`items_any`]).
struct HiddenItems<'a, 'f, R> {
    act: Activation,
    loss: Loss,
    blk: &'a Block<'a, R>,
    b: usize,
    rows: &'a mut [R],
    fix: Fix<'f, R>,
}

impl<R: Real> Kernel for HiddenItems<'_, '_, R> {
    #[inline(always)]
    fn run(self) {
        items_any(self.act, self.loss, self.blk, self.b, self.rows, self.fix)
    }
}

/// Sums column j of `rows` (`[sample][j]`, `n` columns, `b` samples, zero rows after them up to
/// the reduction width) in [`reduce_sse`]'s order, and writes `out[j] = mean(sum, count)`.
///
/// Lane t of [`reduce_sse`] is `((0 + v_t) + v_{t+256}) + …`; here it is `(v_t + v_{t+256}) + …`,
/// then the same binary tree, then `0 + sum`. The two agree at every node up to the sign of a
/// zero (an IEEE sum depends on the operands' values alone unless it is exactly zero), and the
/// final `0 +` makes a zero sum +0 as the reference's lanes, which are never −0, give.
pub(super) fn reduce_columns<R: Real>(
    rows: &mut [R],
    b: usize,
    n: usize,
    count: usize,
    out: &mut [R],
) {
    let width = b.next_power_of_two().min(REDUCE_LANES);
    if b > REDUCE_LANES {
        let (lanes, rest) = rows.split_at_mut(REDUCE_LANES * n);
        for chunk in rest[..(b - REDUCE_LANES) * n].chunks(REDUCE_LANES * n) {
            for (l, &v) in lanes.iter_mut().zip(chunk) {
                *l = *l + v;
            }
        }
    }
    let mut stride = width / 2;
    while stride > 0 {
        let (lo, hi) = rows.split_at_mut(stride * n);
        for (l, &h) in lo.iter_mut().zip(&hi[..stride * n]) {
            *l = *l + h;
        }
        stride /= 2;
    }
    for (o, &v) in out.iter_mut().zip(&rows[..n]) {
        *o = R::mean(R::ZERO + v, count);
    }
}

impl<R: Real> ReusePlan<'_, R> {
    /// Whether the lane path takes the last hidden layer's rows (the closed form applies).
    pub(super) fn rows_apply(&self) -> bool {
        self.lanes && !self.cache.zt.is_empty()
    }

    /// `deltas` of one row of the last hidden layer's parameters starting at parameter `first`
    /// (input i's weights to every unit, or the biases), block by block.
    pub(super) fn hidden_row(&self, first: usize, out: &mut [R], bufs: &mut Bufs<R>) {
        let last = self.layers.len() - 1;
        let layer = self.layers[last - 1];
        let b = self.samples;
        let (x, u_first) = if first >= layer.b_off {
            (None, first - layer.b_off)
        } else {
            let j = first - layer.w_off;
            let i = j / layer.outputs;
            let x = if last == 1 {
                &self.cache.xt[i * b..(i + 1) * b]
            } else {
                let c = (self.layers[last - 2].unit_off + i) * b;
                &self.cache.a[c..c + b]
            };
            (Some(x), j % layer.outputs)
        };
        let count = self.loss.mean_count(b, self.layers[last].outputs);
        // A row whose input is zero for every sample changes nothing (module docs).
        if self.cache.finite && x.is_some_and(|x| x.iter().all(|&v| v == R::ZERO)) {
            let all_finite = self.params[first..first + out.len()]
                .iter()
                .all(|&w| (w + self.eps).is_finite() && w.is_finite());
            if all_finite {
                out.fill(R::mean(R::ZERO, count));
                return;
            }
        }
        // The scratch is sized for output blocks too; hidden blocks keep their own width.
        let ub = unit_block(layer.outputs, b);
        for (c, chunk) in out.chunks_mut(ub).enumerate() {
            let (k0, u0) = (first + c * ub, u_first + c * ub);
            self.hidden_block((x, k0, u0), count, chunk, bufs);
        }
    }

    fn hidden_block(
        &self,
        (x, k0, u0): (Option<&[R]>, usize, usize),
        count: usize,
        out: &mut [R],
        bufs: &mut Bufs<R>,
    ) {
        let last = self.layers.len() - 1;
        let layer = self.layers[last - 1];
        let (b, n) = (self.samples, out.len());
        let Bufs {
            a,
            b: nxt,
            rows,
            nudges,
            ..
        } = bufs;
        let d = &mut nudges[..n];
        for (dj, &w) in d.iter_mut().zip(&self.params[k0..k0 + n]) {
            *dj = R::from_f32(w + self.eps) - R::from_f32(w);
        }
        let skip = self.cache.finite && d.iter().all(|v| v.is_finite());
        let rows = &mut rows[..item_rows(b) * n];
        rows[b * n..].fill(R::ZERO);
        let per_unit = match self.loss {
            Loss::Mse => &self.cache.bb[u0..u0 + n],
            Loss::CrossEntropy => &self.cache.spread[u0..u0 + n],
        };
        let blk = Block {
            z: &self.cache.zt,
            a: &self.cache.at,
            coef: &self.cache.coef,
            unit: per_unit,
            units: layer.outputs,
            u0,
            x,
            d,
            skip,
        };
        let outputs = self.layers[last].outputs;
        let mut fix = |s: usize, u: usize, delta: R| {
            let y = &self.y[s * outputs..(s + 1) * outputs];
            xent(self.outputs_after((last - 1, u, delta, s), a, nxt), y) - self.cache.losses[s]
        };
        dispatch(HiddenItems {
            act: layer.activation,
            loss: self.loss,
            blk: &blk,
            b,
            rows: &mut rows[..],
            fix: &mut fix,
        });
        reduce_columns(rows, b, n, count, out);
    }
}

/// [`xent`] of every sample at once: logit o of all samples is `logit(o)`, the targets
/// `yt[o][s]`; the steps over o in [`xent`]'s order, each over samples. `cols` holds 2·B values.
#[inline(always)]
pub(super) fn xent_lanes<'a, R: Real>(
    outputs: usize,
    logit: impl Fn(usize) -> &'a [R],
    yt: &[R],
    cols: &mut [R],
    out: &mut [R],
) {
    let b = out.len();
    let (m, ls) = cols[..2 * b].split_at_mut(b);
    m.copy_from_slice(logit(0));
    for o in 1..outputs {
        for (m, &z) in m.iter_mut().zip(logit(o)) {
            *m = xent_max_step(*m, z);
        }
    }
    ls.fill(R::ZERO);
    for o in 0..outputs {
        for ((s, &z), &m) in ls.iter_mut().zip(logit(o)).zip(&*m) {
            *s = *s + (z - m).exp_real();
        }
    }
    for s in ls.iter_mut() {
        *s = s.ln_real();
    }
    out.fill(R::ZERO);
    for o in 0..outputs {
        let p = &yt[o * b..(o + 1) * b];
        for ((((acc, &z), &m), &ls), &p) in out.iter_mut().zip(logit(o)).zip(&*m).zip(&*ls).zip(p) {
            *acc = *acc + xent_soft_term(m, ls, z, p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::sigmoid_f32;

    /// Bit patterns between two consecutive sweep points: about 29 million float32 values, every
    /// exponent and sign, NaNs and infinities included.
    const SWEEP_STRIDE: u32 = 149;

    /// The lane path's two halves of the sigmoid equal the twin bit for bit.
    #[test]
    fn sigmoid_halves_equal_the_twin() {
        let special = [
            0.0f32,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            SIGMOID_CLAMP,
            -SIGMOID_CLAMP,
            f32::MIN_POSITIVE,
            f32::MAX,
            f32::MIN,
        ];
        let sweep = (0..=u32::MAX / SWEEP_STRIDE).map(|k| f32::from_bits(k * SWEEP_STRIDE));
        let mut worst: Option<(f32, f32, f32)> = None;
        let mut differ = 0u64;
        for x in special.into_iter().chain(sweep) {
            let (lane, twin) = (sigmoid_from_den(sigmoid_den(x)), sigmoid_f32(x));
            let same = lane.to_bits() == twin.to_bits() || (lane.is_nan() && twin.is_nan());
            if !same {
                differ += 1;
                worst.get_or_insert((x, lane, twin));
            }
        }
        assert!(
            worst.is_none(),
            "{differ} inputs differ; first x = {:?}: halves {:?}, twin {:?}",
            worst.map(|w| w.0),
            worst.map(|w| w.1),
            worst.map(|w| w.2)
        );
    }
}
