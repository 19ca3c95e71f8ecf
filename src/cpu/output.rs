//! The lane path of the output layer's parameters: each parameter's items over samples as
//! contiguous lanes (bit for bit [`ReusePlan::delta`]), and exact sparsity for cross-entropy.
//!
//! Exact sparsity: a nudge of `W[j][u]` moves logit u of sample s by `h_j·d`. Where `h_j` is
//! exactly 0 (a relu unit that is off, or a zero input) and every value the item reads is finite
//! (the output layer's `z` and `a`, the targets, the kept losses: `Cache::finite_out`; and d), the
//! new logit `z + ±0` equals z up to the sign of a zero, every step of the cross-entropy gives the
//! same value for either zero (`exp(±0) = 1`, `±0 + ls = ls` for `ls ≥ +0`), so the sample's change
//! `xent − kept` is exactly +0, as the reference computes it. Those samples are left out of the
//! item lanes (the other samples gathered into compact rows once per row of weights) and their
//! items written as +0. Squared-error items cost a few operations each, less than the gather: they
//! are all computed.

use super::lanes::{dispatch, xent_lanes, Kernel};
use super::reduce::reduce_sse;
use super::reuse::{dsse_term, ReusePlan};
use super::*;
use crate::model::Activation;

impl<R: Real> ReusePlan<'_, R> {
    /// The input of output-layer parameter rows over samples: `x` for a one-layer network, else
    /// the last hidden layer's outputs.
    fn output_input(&self, i: usize) -> &[R] {
        let (last, b) = (self.layers.len() - 1, self.samples);
        if last == 0 {
            &self.cache.xt[i * b..(i + 1) * b]
        } else {
            let c = (self.layers[last - 1].unit_off + i) * b;
            &self.cache.a[c..c + b]
        }
    }

    /// The deltas of output-layer parameters `first..first + out.len()`, all of one row (one
    /// input's weights, or the biases).
    pub(super) fn output_row(&self, first: usize, out: &mut [R], bufs: &mut Bufs<R>) {
        let input = self.nudge(first).input;
        let b = self.samples;
        let sparse = self.loss == Loss::CrossEntropy && self.cache.finite_out;
        if let Some(i) = input.filter(|_| sparse) {
            let x = self.output_input(i);
            bufs.idx.clear();
            bufs.idx.extend((0..b).filter(|&s| x[s] != R::ZERO));
            if bufs.idx.len() < b {
                self.gather(x, bufs);
                for (j, o) in out.iter_mut().enumerate() {
                    debug_assert_eq!(self.nudge(first + j).input, input, "one row per task");
                    *o = self.output_delta_sparse(first + j, bufs);
                }
                return;
            }
        }
        for (j, o) in out.iter_mut().enumerate() {
            *o = self.output_delta(first + j, bufs);
        }
    }

    /// Copies the samples listed in `bufs.idx` into compact rows: every output's `z` and target,
    /// the kept losses and the row's input `x`.
    fn gather(&self, x: &[R], bufs: &mut Bufs<R>) {
        let (b, m) = (self.samples, bufs.idx.len());
        if m == 0 {
            return;
        }
        let layer = self.layers[self.layers.len() - 1];
        let z = &self.cache.z[layer.unit_off * b..][..layer.outputs * b];
        let cols = z.chunks_exact(b).zip(self.cache.yt.chunks_exact(b));
        let rows = bufs.gz.chunks_exact_mut(m).zip(bufs.gy.chunks_exact_mut(m));
        for ((z, y), (gz, gy)) in cols.zip(rows).take(layer.outputs) {
            for ((gz, gy), &s) in gz.iter_mut().zip(gy.iter_mut()).zip(&bufs.idx) {
                *gz = z[s];
                *gy = y[s];
            }
        }
        for ((gk, gx), &s) in bufs.gk.iter_mut().zip(bufs.gx.iter_mut()).zip(&bufs.idx) {
            *gk = self.cache.losses[s];
            *gx = x[s];
        }
    }

    /// [`ReusePlan::output_delta`] from the compact rows of [`ReusePlan::gather`]; the samples
    /// left out get +0 (module docs). A non-finite nudge takes every sample.
    fn output_delta_sparse(&self, k: usize, bufs: &mut Bufs<R>) -> R {
        let n = self.nudge(k);
        if !n.d.is_finite() {
            return self.output_delta(k, bufs);
        }
        let (b, m) = (self.samples, bufs.idx.len());
        let layer = self.layers[self.layers.len() - 1];
        let Bufs {
            sse,
            lane,
            cols,
            gz,
            gy,
            gk,
            gx,
            gout,
            idx,
            ..
        } = bufs;
        dispatch(OutputItems {
            layer,
            loss: self.loss,
            nudge: (n.u, n.d),
            x: Some(&gx[..m]),
            src: Cols {
                z: &gz[..layer.outputs * m],
                a: &[],
                yt: &gy[..layer.outputs * m],
                kept: &gk[..m],
            },
            bufs: (&mut lane[..m], &mut cols[..2 * m], &mut gout[..m]),
        });
        let sse = &mut sse[..b];
        sse.fill(R::ZERO);
        for (&v, &s) in gout.iter().zip(idx.iter()) {
            sse[s] = v;
        }
        R::mean(reduce_sse(sse), self.loss.mean_count(b, layer.outputs))
    }

    /// [`ReusePlan::delta`] of an output-layer parameter, its items over samples as lanes.
    pub(super) fn output_delta(&self, k: usize, bufs: &mut Bufs<R>) -> R {
        let last = self.layers.len() - 1;
        let n = self.nudge(k);
        let b = self.samples;
        let layer = self.layers[last];
        let x = n.input.map(|i| self.output_input(i));
        let Bufs {
            sse, lane, cols, ..
        } = bufs;
        let at = layer.unit_off * b;
        dispatch(OutputItems {
            layer,
            loss: self.loss,
            nudge: (n.u, n.d),
            x,
            src: Cols {
                z: &self.cache.z[at..][..layer.outputs * b],
                a: &self.cache.a[at..][..layer.outputs * b],
                yt: &self.cache.yt,
                kept: &self.cache.losses,
            },
            bufs: (&mut lane[..b], &mut cols[..2 * b], &mut sse[..b]),
        });
        R::mean(
            reduce_sse(&sse[..b]),
            self.loss.mean_count(b, layer.outputs),
        )
    }
}

/// The unperturbed pass's values an output item reads, as `[output][sample]` rows of the item
/// count's length (all samples, or the compact rows of [`ReusePlan::gather`]).
struct Cols<'a, R> {
    z: &'a [R],
    /// The outputs (squared error only; empty for cross-entropy's compact rows).
    a: &'a [R],
    yt: &'a [R],
    /// Each sample's kept loss (cross-entropy).
    kept: &'a [R],
}

/// An output-layer parameter's items over samples ([`ReusePlan::output_delta`]): the nudged
/// unit's new value for every sample into `new`, then each sample's change of its loss into `out`.
struct OutputItems<'a, R> {
    layer: LayerSpan,
    loss: Loss,
    /// The output unit and the nudge `d`.
    nudge: (usize, R),
    /// Its input over samples; `None` for a bias.
    x: Option<&'a [R]>,
    src: Cols<'a, R>,
    /// `new`, scratch for [`xent_lanes`] (twice as long), `out`: one value per item.
    bufs: (&'a mut [R], &'a mut [R], &'a mut [R]),
}

impl<R: Real> Kernel for OutputItems<'_, R> {
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

impl<R: Real> OutputItems<'_, R> {
    #[inline(always)]
    fn items(self, act: impl Fn(R) -> R) {
        let (layer, (u, d), src) = (self.layer, self.nudge, self.src);
        let (new, cols, out) = self.bufs;
        let b = out.len();
        let row = |o: usize| &src.z[o * b..][..b];
        match self.x {
            Some(x) => {
                for ((o, &z), &x) in new.iter_mut().zip(row(u)).zip(x) {
                    *o = act(z + x * d);
                }
            }
            None => {
                for (o, &z) in new.iter_mut().zip(row(u)) {
                    *o = act(z + d);
                }
            }
        }
        let new = &*new;
        match self.loss {
            Loss::Mse => {
                let a = &src.a[u * b..][..b];
                let y = &src.yt[u * b..][..b];
                for (((o, &new), &old), &y) in out.iter_mut().zip(new).zip(a).zip(y) {
                    *o = dsse_term(new, old, y);
                }
            }
            Loss::CrossEntropy => {
                let logit = |o: usize| if o == u { new } else { row(o) };
                xent_lanes(layer.outputs, logit, src.yt, cols, out);
                for (o, &kept) in out.iter_mut().zip(src.kept) {
                    *o = *o - kept;
                }
            }
        }
    }
}
