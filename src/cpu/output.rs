//! The lane path of the output layer's parameters: a block of rows (inputs `j0..j1` of the
//! output layer, the bias row as input `inputs` with x = 1), each unit u's items over the block's
//! inputs as contiguous lanes, sample by sample (`[sample][input]` rows, reduced over samples by
//! [`reduce_columns`]), bit for bit [`ReusePlan::delta`].
//!
//! A nudge of `W[j][u]` moves only logit u: `z'_u = z_u + h_j·d` (`z_u + d` for the bias, which
//! `1·d = d` makes the same lane operation). For one (u, sample) the other logits, the targets and
//! the kept loss are scalars shared by every lane, so what the scalar reference computes per item
//! in O(outputs) collapses to a few lane operations:
//!
//! - squared error: `dsse_term(act(z'_u), a_u, y_u)`;
//! - cross-entropy, by the steps of [`super::forward::xent`] over the logits in order:
//!   - the running maximum over logits `0..u` and the one over `u + 1..` are per-step scalars
//!     (`Cache::soft`), and the lane's maximum is `step(step(max_<u, z'_u), max_>u)`: for non-NaN
//!     logits a run of steps from m keeps m unless the run's own maximum (its first occurrence,
//!     which is what the steps from the run's first value give) is greater, so the two agree;
//!   - the sum of exponentials: where every lane's maximum equals the kept pass's maximum m, each
//!     `exp(z_o − m)` of another logit is the kept pass's (the operands differ at most by the sign
//!     of a zero difference, and `exp(±0) = 1`), so the sum is the kept prefix over `0..u`, plus
//!     the lane's `exp(z'_u − m)`, plus the kept terms after u, in order. Otherwise (u is the
//!     maximum, or the nudge makes it so in some lane) every term is computed again;
//!   - the soft terms `p·((m − z) + ls)`: a target of exactly 0 adds ±0, which leaves the sum
//!     unchanged (it starts at +0 and cannot become −0), when the bracket is finite; so those
//!     terms are skipped when every kept logit and every lane's `z'_u` lies within ±2^126 (the
//!     maximum is one of them, so `m − z` is within ±2^127, finite; the sum of exponentials lies
//!     in [1, outputs], so ls is finite). Finite logits alone are not enough: `m − z` of two
//!     finite float32 values can overflow. The item is the loss minus the kept loss.
//!
//! Cross-entropy with a non-finite kept pass (`Cache::finite_out` false) or a non-finite nudge in
//! the block leaves the block to the scalar reference: the maximum's composition above needs
//! non-NaN logits (finite z, h and d give `z + h·d` finite or ±inf, never NaN).

use super::lanes::{dispatch, item_rows, reduce_columns, Kernel};
use super::reuse::{dsse_term, ReusePlan};
use super::*;
use crate::model::Activation;
use crate::xent::{xent_max_step, xent_soft_term};

/// Output-layer rows per work unit: at most 64, fewer at large batches so that a unit's items
/// (`[sample][row]`) stay near [`super::lanes::BLOCK_VALUES`]; at least 8 (one AVX2 vector).
pub(super) fn output_block_rows(b: usize) -> usize {
    (super::lanes::BLOCK_VALUES / item_rows(b)).clamp(8, 64) / 8 * 8
}

/// The rows `0..rows` in blocks of `group`, the last block taking the remainder (so every block
/// but the last is whole vectors, and none holds fewer than `group` rows unless all do).
pub(super) fn output_blocks(rows: usize, group: usize) -> impl Iterator<Item = (usize, usize)> {
    let n = (rows / group).max(1);
    (0..n).map(move |c| (c * group, if c + 1 == n { rows } else { (c + 1) * group }))
}

/// Fields of [`Cache::soft`], each `[output][sample]`: for sample s and logit o, the kept pass's
/// `exp(z_o − m)`, the sum of those before o (from +0, in order), the running maximum of logits
/// `0..o` (o ≥ 1) and the one of `o + 1..` (o + 1 < outputs); then the maximum m per sample.
pub(super) const SOFT_EXP: usize = 0;
pub(super) const SOFT_PRE: usize = 1;
pub(super) const SOFT_MAX_BEFORE: usize = 2;
pub(super) const SOFT_MAX_AFTER: usize = 3;
/// Fields of [`Cache::soft`] with one row per output (the maximum follows them, one row).
pub(super) const SOFT_FIELDS: usize = 4;

/// Fills [`Cache::soft`] from the output layer's logits `z` (`[output][sample]`), samples as lanes,
/// by the steps of [`super::forward::xent`].
pub(super) fn soft_prepare<R: Real>(z: &[R], k: usize, b: usize, soft: &mut [R]) {
    let row = |o: usize| &z[o * b..][..b];
    let (fields, m) = soft.split_at_mut(SOFT_FIELDS * k * b);
    let m = &mut m[..b];
    m.copy_from_slice(row(0));
    for o in 1..k {
        let before = &mut fields[(SOFT_MAX_BEFORE * k + o) * b..][..b];
        before.copy_from_slice(m);
        for (m, &z) in m.iter_mut().zip(row(o)) {
            *m = xent_max_step(*m, z);
        }
    }
    let mut acc = vec![R::ZERO; b];
    for o in 0..k {
        fields[(SOFT_PRE * k + o) * b..][..b].copy_from_slice(&acc);
        let e = &mut fields[(SOFT_EXP * k + o) * b..][..b];
        for (((e, acc), &z), &m) in e.iter_mut().zip(&mut acc).zip(row(o)).zip(&*m) {
            *e = (z - m).exp_real();
            *acc = *acc + *e;
        }
    }
    for o in 0..k.saturating_sub(1) {
        let after = &mut fields[(SOFT_MAX_AFTER * k + o) * b..][..b];
        after.copy_from_slice(row(o + 1));
        for t in o + 2..k {
            for (a, &z) in after.iter_mut().zip(row(t)) {
                *a = xent_max_step(*a, z);
            }
        }
    }
}

/// 2^126: logits within ± this have differences within ±2^127, which float32 holds (module docs).
const LOGIT_BOUND: f32 = f32::from_bits(0x7e80_0000);

/// Whether every value lies within ±[`LOGIT_BOUND`] (NaN does not).
pub(super) fn bounded<R: Real>(v: &[R]) -> bool {
    let (lo, hi) = (R::from_f32(-LOGIT_BOUND), R::from_f32(LOGIT_BOUND));
    v.iter().fold(true, |all, &x| all & (x >= lo && x <= hi))
}

impl<R: Real> ReusePlan<'_, R> {
    /// The deltas of output-layer parameters `first..first + out.len()`: the rows covering them
    /// are computed whole, the parameters outside the range dropped (a range cut by a share).
    pub(super) fn output_block(&self, first: usize, out: &mut [R], bufs: &mut Bufs<R>) {
        let layer = self.layers[self.layers.len() - 1];
        let (k, b) = (layer.outputs, self.samples);
        let j0 = (first - layer.w_off) / k;
        let j1 = (first + out.len() - layer.w_off).div_ceil(k);
        // Cross-entropy's lanes need finite kept values and nudges (module docs): then no lane's
        // logit `z + h·d` is NaN.
        let nudged = &self.params[layer.w_off + j0 * k..layer.w_off + j1 * k];
        let nudge = |w: f32| R::from_f32(w + self.eps) - R::from_f32(w);
        let finite = self.cache.finite_out && nudged.iter().all(|&w| nudge(w).is_finite());
        if self.loss == Loss::CrossEntropy && !finite {
            for (j, o) in out.iter_mut().enumerate() {
                *o = self.delta(first + j, bufs);
            }
            return;
        }
        let nj = j1 - j0;
        let count = self.loss.mean_count(b, k);
        let Bufs {
            rows,
            nudges,
            lanes,
            ..
        } = bufs;
        let rows = &mut rows[..item_rows(b) * nj];
        rows[b * nj..].fill(R::ZERO);
        let d = &mut nudges[..nj];
        let (lanes, sums) = lanes[..6 * nj].split_at_mut(5 * nj);
        for u in 0..k {
            let at = |j: usize| layer.w_off + j * k + u;
            for (d, j) in d.iter_mut().zip(j0..j1) {
                *d = nudge(self.params[at(j)]);
            }
            dispatch(OutputItems {
                plan: self,
                layer,
                u,
                j0,
                d,
                rows: &mut rows[..],
                lanes: &mut lanes[..],
            });
            reduce_columns(rows, b, nj, count, sums);
            for (j, &v) in (j0..j1).zip(sums.iter()) {
                if let Some(o) = at(j).checked_sub(first).and_then(|i| out.get_mut(i)) {
                    *o = v;
                }
            }
        }
    }
}

/// Output unit u's items over a block of rows for every sample ([`ReusePlan::output_block`]).
struct OutputItems<'a, 'p, R> {
    plan: &'a ReusePlan<'p, R>,
    layer: LayerSpan,
    u: usize,
    /// The block's first row.
    j0: usize,
    /// The block's nudges of `W[j][u]`.
    d: &'a [R],
    /// `[sample][row]`, one value per item.
    rows: &'a mut [R],
    /// Scratch: five lane arrays as long as the block.
    lanes: &'a mut [R],
}

impl<R: Real> Kernel for OutputItems<'_, '_, R> {
    #[inline(always)]
    fn run(self) {
        // The activation fixed per loop: a `match` per lane would keep the loop scalar.
        match self.layer.activation {
            Activation::Identity => self.items(|v| v),
            Activation::Relu => self.items(|v: R| v.activate(Activation::Relu)),
            Activation::Sigmoid => self.items(|v: R| v.activate(Activation::Sigmoid)),
            Activation::Tanh => self.items(|v: R| v.activate(Activation::Tanh)),
        }
    }
}

/// The per-(unit, sample) scalars of a cross-entropy row: the output layer's logits
/// (`[output][sample]`), the kept pass's terms ([`Cache::soft`]) and targets, and sample s.
struct SoftRow<'a, R> {
    /// Whether every kept logit lies within ±[`LOGIT_BOUND`].
    bounded: bool,
    z: &'a [R],
    soft: &'a [R],
    yt: &'a [R],
    k: usize,
    b: usize,
    s: usize,
    kept: R,
}

impl<R: Real> SoftRow<'_, R> {
    fn z(&self, o: usize) -> R {
        self.z[o * self.b + self.s]
    }
    fn p(&self, o: usize) -> R {
        self.yt[o * self.b + self.s]
    }
    fn soft(&self, field: usize, o: usize) -> R {
        self.soft[(field * self.k + o) * self.b + self.s]
    }
    /// The kept pass's maximum logit.
    fn max(&self) -> R {
        self.soft[SOFT_FIELDS * self.k * self.b + self.s]
    }
}

impl<R: Real> OutputItems<'_, '_, R> {
    #[inline(always)]
    fn items(self, act: impl Fn(R) -> R) {
        let (plan, layer, u) = (self.plan, self.layer, self.u);
        let (k, b, nj) = (layer.outputs, plan.samples, self.d.len());
        let cache = plan.cache;
        let stride = layer.inputs + 1;
        let zrow = &cache.z[layer.unit_off * b..][..k * b];
        let (new, scratch) = self.lanes.split_at_mut(nj);
        for (s, row) in self.rows.chunks_exact_mut(nj).take(b).enumerate() {
            let h = &cache.ht[s * stride + self.j0..][..nj];
            let zu = zrow[u * b + s];
            for ((n, &h), &d) in new.iter_mut().zip(h).zip(self.d) {
                *n = act(zu + h * d);
            }
            match plan.loss {
                Loss::Mse => {
                    let c = (layer.unit_off + u) * b + s;
                    let (old, y) = (cache.a[c], cache.yt[u * b + s]);
                    for (r, &n) in row.iter_mut().zip(&*new) {
                        *r = dsse_term(n, old, y);
                    }
                }
                Loss::CrossEntropy => {
                    let sr = SoftRow {
                        bounded: cache.bounded_out,
                        z: zrow,
                        soft: &cache.soft,
                        yt: &cache.yt,
                        k,
                        b,
                        s,
                        kept: cache.losses[s],
                    };
                    xent_row(u, &sr, new, scratch, row);
                }
            }
        }
    }
}

/// One (unit u, sample) row of cross-entropy items (module docs): `new` holds each lane's
/// nudged logit u, `scratch` four lane arrays, `row` receives `xent − kept` per lane.
#[inline(always)]
fn xent_row<R: Real>(u: usize, sr: &SoftRow<R>, new: &[R], scratch: &mut [R], row: &mut [R]) {
    let (nj, k, m) = (new.len(), sr.k, sr.max());
    let (mx, rest) = scratch.split_at_mut(nj);
    let (t, rest) = rest.split_at_mut(nj);
    let (sum, ls) = rest.split_at_mut(nj);
    let ls = &mut ls[..nj];
    // The kept pass's running maxima before and after u; −inf where there is none, which a
    // step leaves out exactly (no lane's logit is NaN: `output_block`'s preconditions).
    let none = R::from_f32(f32::NEG_INFINITY);
    let before = if u > 0 {
        sr.soft(SOFT_MAX_BEFORE, u)
    } else {
        none
    };
    let after = if u + 1 < k {
        sr.soft(SOFT_MAX_AFTER, u)
    } else {
        none
    };
    for ((mx, t), &n) in mx.iter_mut().zip(t.iter_mut()).zip(new) {
        let m2 = xent_max_step(xent_max_step(before, n), after);
        *mx = m2;
        *t = (n - m2).exp_real();
    }
    let same = mx.iter().fold(true, |all, &v| all & (v == m));
    let skip_zeros = sr.bounded && bounded(new);
    if same {
        let pre = sr.soft(SOFT_PRE, u);
        for (s, &t) in sum.iter_mut().zip(&*t) {
            *s = pre + t;
        }
        for o in u + 1..k {
            let e = sr.soft(SOFT_EXP, o);
            for s in sum.iter_mut() {
                *s = *s + e;
            }
        }
    } else {
        sum.fill(R::ZERO);
        for o in 0..k {
            if o == u {
                for (s, &t) in sum.iter_mut().zip(&*t) {
                    *s = *s + t;
                }
            } else {
                let z = sr.z(o);
                for (s, &m) in sum.iter_mut().zip(&*mx) {
                    *s = *s + (z - m).exp_real();
                }
            }
        }
    }
    for (l, &s) in ls.iter_mut().zip(&*sum) {
        *l = s.ln_real();
    }
    row.fill(R::ZERO);
    for o in 0..k {
        let p = sr.p(o);
        if skip_zeros && p == R::ZERO {
            continue;
        }
        let lanes = row.iter_mut().zip(&*mx).zip(&*ls);
        if o == u {
            for (((r, &m), &l), &n) in lanes.zip(new) {
                *r = *r + xent_soft_term(m, l, n, p);
            }
        } else {
            let z = sr.z(o);
            for ((r, &m), &l) in lanes {
                *r = *r + xent_soft_term(m, l, z, p);
            }
        }
    }
    for r in row.iter_mut() {
        *r = *r - sr.kept;
    }
}
