//! The reuse method's lane path: for a parameter of the last hidden layer (before an identity
//! output layer, where the closed forms of `output_terms` / `xent_series` apply), all samples'
//! items at once as contiguous `[sample]` slices, so that LLVM vectorises them. Every lane performs
//! the scalar reference's operations ([`ReusePlan::delta`]) in the same order (IEEE `+ − ×` per
//! lane, no FMA), and the per-sample values go through the same [`reduce_sse`], so the result is
//! the scalar path's bit for bit (`tests/cpu_vector.rs` checks it).

use super::forward::xent;
use super::reduce::reduce_sse;
use super::reuse::ReusePlan;
use super::*;
use crate::model::Activation;

/// `out[s] = act(z[s] + x[s]·d) − a[s]` (a bias: `act(z[s] + d) − a[s]`): the nudged unit's change.
#[inline(always)]
fn nudged_lanes<R: Real>((z, a, xs): Cols<R>, d: R, out: &mut [R], act: impl Fn(R) -> R) {
    match xs {
        Some(xs) => {
            for (((o, &z), &a), &x) in out.iter_mut().zip(z).zip(a).zip(xs) {
                *o = act(z + x * d) - a;
            }
        }
        None => {
            for ((o, &z), &a) in out.iter_mut().zip(z).zip(a) {
                *o = act(z + d) - a;
            }
        }
    }
}

/// Columns of one nudge: the unit's `z` and `a` over samples, and its input over samples (`None`
/// for a bias).
type Cols<'a, R> = (&'a [R], &'a [R], Option<&'a [R]>);

/// [`nudged_lanes`] with the activation fixed per loop.
#[inline(always)]
fn nudged_any<R: Real>(act: Activation, cols: Cols<R>, d: R, out: &mut [R]) {
    match act {
        Activation::Identity => nudged_lanes(cols, d, out, |v| v),
        Activation::Relu => nudged_lanes(cols, d, out, |v| v.activate(Activation::Relu)),
        Activation::Sigmoid => nudged_lanes(cols, d, out, |v| v.activate(Activation::Sigmoid)),
        Activation::Tanh => nudged_lanes(cols, d, out, |v| v.activate(Activation::Tanh)),
    }
}

/// [`nudged_any`] compiled for the widest vector unit the CPU has. The x86-64 baseline (SSE2)
/// has no vector `floor`, so `exp_f32` would call libm per lane; AVX2 / AVX-512 code lets LLVM
/// vectorise the whole twinned activation. Only these features are enabled, never FMA: every lane
/// rounds each `+ − ×` as the scalar reference does.
fn nudged_dispatch<R: Real>(act: Activation, cols: Cols<R>, d: R, out: &mut [R]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { nudged_avx512(act, cols, d, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { nudged_avx2(act, cols, d, out) };
        }
    }
    nudged_any(act, cols, d, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn nudged_avx512<R: Real>(act: Activation, cols: Cols<R>, d: R, out: &mut [R]) {
    nudged_any(act, cols, d, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn nudged_avx2<R: Real>(act: Activation, cols: Cols<R>, d: R, out: &mut [R]) {
    nudged_any(act, cols, d, out)
}

impl<R: Real> ReusePlan<'_, R> {
    /// [`ReusePlan::delta`] for parameter k when it lies in the last hidden layer and the closed
    /// form applies; `None` for every other parameter (the scalar path takes those).
    pub(super) fn delta_lanes(&self, k: usize, bufs: &mut Bufs<R>) -> Option<R> {
        let last = self.layers.len() - 1;
        let n = self.nudge(k);
        let closed = match self.loss {
            Loss::Mse => !self.cache.bb.is_empty(),
            Loss::CrossEntropy => !self.cache.spread.is_empty(),
        };
        if n.l + 1 != last || !closed {
            return None;
        }
        let b = self.samples;
        let layer = self.layers[n.l];
        let cell = (layer.unit_off + n.u) * b;
        let xs = n.input.map(|i| {
            if n.l == 0 {
                &self.cache.xt[i * b..(i + 1) * b]
            } else {
                let c = (self.layers[n.l - 1].unit_off + i) * b;
                &self.cache.a[c..c + b]
            }
        });
        let cols = (
            &self.cache.z[cell..cell + b],
            &self.cache.a[cell..cell + b],
            xs,
        );
        let Bufs {
            a,
            b: nxt,
            sse,
            lane,
        } = bufs;
        let delta = &mut lane[..b];
        nudged_dispatch(layer.activation, cols, n.d, delta);
        let sse = &mut sse[..b];
        let outputs = self.layers[last].outputs;
        Some(match self.loss {
            Loss::Mse => {
                let (ab, bb) = (&self.cache.ab[n.u * b..][..b], self.cache.bb[n.u]);
                for ((o, &d), &ab) in sse.iter_mut().zip(&*delta).zip(ab) {
                    *o = d * (ab + d * bb);
                }
                R::mean(reduce_sse(sse), b * outputs)
            }
            Loss::CrossEntropy => {
                let spread = self.cache.spread[n.u];
                let c = |i: usize| &self.cache.series[(4 * n.u + i) * b..][..b];
                let (c0, c1, c2, c3) = (c(0), c(1), c(2), c(3));
                for (s, (o, &d)) in sse.iter_mut().zip(&*delta).enumerate() {
                    *o = series_change(d, [c0[s], c1[s], c2[s], c3[s]]);
                }
                // Items beyond the series' range take the exact difference, as the scalar path.
                for (s, (o, &d)) in sse.iter_mut().zip(&*delta).enumerate() {
                    if !series_applies(d, spread) {
                        let y = &self.y[s * outputs..(s + 1) * outputs];
                        let new = xent(self.outputs_after((n.l, n.u, d, s), a, nxt), y);
                        *o = new - self.cache.losses[s];
                    }
                }
                R::mean(reduce_sse(sse), b)
            }
        })
    }
}
