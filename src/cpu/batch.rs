//! The reuse method's unperturbed pass over every sample at once (the lane path's twin of
//! [`super::forward::forward_each`] and [`super::reuse::output_terms`]): each layer's `z` and `a`
//! are computed as `[unit][sample]` rows, straight into the cache, with samples as lanes.
//!
//! Every lane performs the per-sample reference's operations in the same order: unit u of sample s
//! is `acc = 0; acc += x[i]·W[i][u]` for i ascending, then `acc + b[u]`, then the activation. An
//! input row that is exactly zero for a whole block of samples is skipped where the layer's weights
//! are all finite (the reference skips each such term: module docs of [`super::lanes`]); terms of
//! a zero input inside a block that is not all zero are added, which gives the same bits (`x·w`
//! is ±0, and a ±0 added to a sum that started at +0 changes nothing).

use super::lanes::{dispatch, xent_lanes, Kernel};
use super::pool::Pool;
use super::tasks::pool_for;
use super::*;
use crate::model::Activation;
use crate::xent::{weight_spread, xent_max_step};
use std::sync::{Mutex, PoisonError};

/// Samples per block of the dense loop: a block of one layer's `z` rows stays in L1 / L2.
const SAMPLE_BLOCK: usize = 64;

/// Units per work unit when a layer's pass is split over threads.
const UNIT_CHUNK: usize = 16;

/// Multiply-adds of a layer below which its pass stays on one thread.
const LAYER_PARALLEL_MIN: usize = 1 << 16;

/// The unperturbed pass of every sample: fills `cache.z` and `cache.a` from `cache.xt` (filled
/// before), each layer's units split over `threads` threads in chunks (each unit is computed the
/// same way by whichever thread takes it).
pub(super) fn forward_layers<R: Real>(
    layers: &[LayerSpan],
    params: &[f32],
    b: usize,
    cache: &mut Cache<R>,
    (threads, pool, scratch): (usize, &mut Option<Pool>, &mut [Scratch<R>]),
) {
    for (l, layer) in layers.iter().enumerate() {
        let Cache {
            z, a, xt, finite_w, ..
        } = cache;
        let (before, here) = a.split_at_mut(layer.unit_off * b);
        let input: &[R] = if l == 0 {
            xt
        } else {
            &before[layers[l - 1].unit_off * b..]
        };
        let dense = |u0: usize, z: &mut [R], a: &mut [R]| {
            dispatch(Dense {
                layer,
                params,
                b: (b, u0),
                skip: finite_w[l],
                input: &input[..layer.inputs * b],
                z,
                a,
            })
        };
        let z = &mut z[layer.unit_off * b..][..layer.outputs * b];
        let a = &mut here[..layer.outputs * b];
        let work = layer.inputs * layer.outputs * b;
        let threads = if work < LAYER_PARALLEL_MIN {
            1
        } else {
            threads.min(layer.outputs.div_ceil(UNIT_CHUNK))
        };
        let Some(pool) = pool_for(pool, threads.min(scratch.len())) else {
            dense(0, z, a);
            continue;
        };
        // The next chunk's first unit and the rows from there on.
        let queue = Mutex::new((0, z, a));
        let work = |_: usize, _: &mut Scratch<R>| loop {
            let (u0, z, a) = {
                let mut q = queue.lock().unwrap_or_else(PoisonError::into_inner);
                let (u0, z, a) = std::mem::take(&mut *q);
                if z.is_empty() {
                    break;
                }
                let n = UNIT_CHUNK.min(z.len() / b) * b;
                let ((z, zt), (a, at)) = (z.split_at_mut(n), a.split_at_mut(n));
                *q = (u0 + n / b, zt, at);
                (u0, z, a)
            };
            dense(u0, z, a);
        };
        pool.run_each(&mut scratch[..threads], &work);
    }
}

/// Each sample's loss into `sse` (and `cache.losses` for cross-entropy) from the output layer's
/// `a` and `cache.yt`. `cols` is scratch of 2·B values.
pub(super) fn sample_losses<R: Real>(
    layers: &[LayerSpan],
    (b, loss): (usize, Loss),
    cache: &mut Cache<R>,
    (sse, cols): (&mut [R], &mut [R]),
) {
    let out = layers[layers.len() - 1];
    let a = &cache.a[out.unit_off * b..][..out.outputs * b];
    let sse = &mut sse[..b];
    match loss {
        Loss::Mse => dispatch(SseLanes {
            a,
            yt: &cache.yt,
            sse,
        }),
        Loss::CrossEntropy => {
            dispatch(XentLanes {
                a,
                yt: &cache.yt,
                cols: &mut cols[..2 * b],
                out: sse,
            });
            cache.losses.copy_from_slice(sse);
        }
    }
}

/// Units `u0..` of one layer over every sample ([`forward_layers`]); `z` and `a` hold their rows.
struct Dense<'a, R> {
    layer: &'a LayerSpan,
    params: &'a [f32],
    /// Samples, and the first unit.
    b: (usize, usize),
    /// Whether all-zero input blocks may be skipped (the layer's weights are all finite).
    skip: bool,
    /// `[input][sample]`.
    input: &'a [R],
    /// `[unit][sample]`.
    z: &'a mut [R],
    a: &'a mut [R],
}

impl<R: Real> Kernel for Dense<'_, R> {
    #[inline(always)]
    fn run(self) {
        let Dense {
            layer,
            params,
            b: (b, u0),
            skip,
            input,
            z,
            a,
        } = self;
        let units = z.len() / b;
        z.fill(R::ZERO);
        for s0 in (0..b).step_by(SAMPLE_BLOCK) {
            let n = SAMPLE_BLOCK.min(b - s0);
            for i in 0..layer.inputs {
                let x = &input[i * b + s0..][..n];
                if skip && x.iter().all(|&v| v == R::ZERO) {
                    continue;
                }
                let row = &params[layer.w_off + i * layer.outputs + u0..][..units];
                for (u, &w) in row.iter().enumerate() {
                    let w = R::from_f32(w);
                    let acc = &mut z[u * b + s0..][..n];
                    for (o, &x) in acc.iter_mut().zip(x) {
                        *o = *o + x * w;
                    }
                }
            }
        }
        let bias = &params[layer.b_off + u0..][..units];
        // The activation fixed per loop: a `match` per lane would keep the loop scalar.
        match layer.activation {
            Activation::Identity => finish(z, a, bias, b, |v| v),
            Activation::Relu => finish(z, a, bias, b, |v: R| v.activate(Activation::Relu)),
            Activation::Sigmoid => finish(z, a, bias, b, |v: R| v.activate(Activation::Sigmoid)),
            Activation::Tanh => finish(z, a, bias, b, |v: R| v.activate(Activation::Tanh)),
        }
    }
}

/// `z += b[u]`, `a = act(z)` per unit row.
#[inline(always)]
fn finish<R: Real>(z: &mut [R], a: &mut [R], bias: &[f32], b: usize, act: impl Fn(R) -> R) {
    for ((z, a), &bv) in z.chunks_exact_mut(b).zip(a.chunks_exact_mut(b)).zip(bias) {
        let bv = R::from_f32(bv);
        for (z, a) in z.iter_mut().zip(a.iter_mut()) {
            *z = *z + bv;
            *a = act(*z);
        }
    }
}

/// Each sample's squared error `Σ_o (a − y)²`, o ascending, samples as lanes.
struct SseLanes<'a, R> {
    a: &'a [R],
    yt: &'a [R],
    sse: &'a mut [R],
}

impl<R: Real> Kernel for SseLanes<'_, R> {
    #[inline(always)]
    fn run(self) {
        let b = self.sse.len();
        self.sse.fill(R::ZERO);
        for (a, y) in self.a.chunks_exact(b).zip(self.yt.chunks_exact(b)) {
            for ((t, &p), &y) in self.sse.iter_mut().zip(a).zip(y) {
                let d = p - y;
                *t = *t + d * d;
            }
        }
    }
}

/// Each sample's cross-entropy ([`xent_lanes`]).
struct XentLanes<'a, R> {
    a: &'a [R],
    yt: &'a [R],
    cols: &'a mut [R],
    out: &'a mut [R],
}

impl<R: Real> Kernel for XentLanes<'_, R> {
    #[inline(always)]
    fn run(self) {
        let b = self.out.len();
        let outputs = self.a.len() / b;
        let a = self.a;
        xent_lanes(outputs, |o| &a[o * b..][..b], self.yt, self.cols, self.out);
    }
}

/// [`super::reuse::output_terms`] with samples as lanes: `ab[u][s] = Σ_v W[u][v]·(e + e)`,
/// `e = a_v − y_v`, v ascending; `bb[u] = Σ_v W[u][v]²`.
pub(super) fn output_terms_lanes<R: Real>(
    layers: &[LayerSpan],
    b: usize,
    params: &[f32],
    cache: &mut Cache<R>,
) {
    let out = layers[layers.len() - 1];
    let Cache {
        a, yt, ab, bb, err, ..
    } = cache;
    dispatch(OutputTerms {
        out,
        b,
        params,
        a: &a[out.unit_off * b..][..out.outputs * b],
        yt,
        ab,
        bb,
        err: &mut err[..out.outputs * b],
    });
}

struct OutputTerms<'a, R> {
    out: LayerSpan,
    b: usize,
    params: &'a [f32],
    a: &'a [R],
    yt: &'a [R],
    ab: &'a mut [R],
    bb: &'a mut [R],
    err: &'a mut [R],
}

impl<R: Real> Kernel for OutputTerms<'_, R> {
    #[inline(always)]
    fn run(self) {
        let OutputTerms {
            out,
            b,
            params,
            a,
            yt,
            ab,
            bb,
            err,
        } = self;
        for ((e2, &a), &y) in err.iter_mut().zip(a).zip(yt) {
            let e = a - y;
            *e2 = e + e;
        }
        for (u, (ab, bb)) in ab.chunks_exact_mut(b).zip(bb.iter_mut()).enumerate() {
            let row = &params[out.w_off + u * out.outputs..][..out.outputs];
            let mut sq = R::ZERO;
            for &w in row {
                sq = sq + R::from_f32(w) * R::from_f32(w);
            }
            *bb = sq;
            ab.fill(R::ZERO);
            for (&w, e2) in row.iter().zip(err.chunks_exact(b)) {
                let w = R::from_f32(w);
                for (acc, &e2) in ab.iter_mut().zip(e2) {
                    *acc = *acc + w * e2;
                }
            }
        }
    }
}

/// Samples per chunk of [`xent_series_lanes`]: its per-sample sums live in arrays this long.
const SERIES_CHUNK: usize = 64;

/// [`super::reuse::xent_series`] with samples as lanes: the softmax `p` of every sample's logits
/// (the output layer's `z`) into `cache.err` as `[output][sample]` (by [`softmax_probs`]'s steps,
/// each over samples), then for every unit the series terms of [`series_terms`], each sum over
/// the outputs in its order, lane by lane; and each unit's spread.
pub(super) fn xent_series_lanes<R: Real>(
    layers: &[LayerSpan],
    b: usize,
    params: &[f32],
    cache: &mut Cache<R>,
) {
    let out = layers[layers.len() - 1];
    let k = out.outputs;
    for u in 0..out.inputs {
        cache.spread[u] = weight_spread(&params[out.w_off + u * k..][..k]);
    }
    let Cache {
        z, yt, err, series, ..
    } = cache;
    dispatch(SeriesLanes {
        out,
        b,
        params,
        z: &z[out.unit_off * b..][..k * b],
        yt,
        p: &mut err[..k * b],
        series,
    });
}

struct SeriesLanes<'a, R> {
    out: LayerSpan,
    b: usize,
    params: &'a [f32],
    z: &'a [R],
    yt: &'a [R],
    /// The softmax, `[output][sample]`.
    p: &'a mut [R],
    series: &'a mut [R],
}

impl<R: Real> Kernel for SeriesLanes<'_, R> {
    #[inline(always)]
    fn run(self) {
        let SeriesLanes {
            out,
            b,
            params,
            z,
            yt,
            p,
            series,
        } = self;
        for s0 in (0..b).step_by(SERIES_CHUNK) {
            let n = SERIES_CHUNK.min(b - s0);
            let row = |_: &[R], o: usize| o * b + s0..o * b + s0 + n;
            // The softmax: m by the running maximum, ls = ln Σ e^(z − m), p = e^((z − m) − ls).
            let (mut m, mut ls) = ([R::ZERO; SERIES_CHUNK], [R::ZERO; SERIES_CHUNK]);
            let (m, ls) = (&mut m[..n], &mut ls[..n]);
            m.copy_from_slice(&z[row(z, 0)]);
            for o in 1..out.outputs {
                for (m, &zv) in m.iter_mut().zip(&z[row(z, o)]) {
                    *m = xent_max_step(*m, zv);
                }
            }
            for o in 0..out.outputs {
                for ((s, &zv), &m) in ls.iter_mut().zip(&z[row(z, o)]).zip(&*m) {
                    *s = *s + (zv - m).exp_real();
                }
            }
            for s in ls.iter_mut() {
                *s = s.ln_real();
            }
            for o in 0..out.outputs {
                let r = row(z, o);
                for ((pv, &zv), (&m, &ls)) in
                    p[r.clone()].iter_mut().zip(&z[r]).zip(m.iter().zip(&*ls))
                {
                    *pv = ((zv - m) - ls).exp_real();
                }
            }
            series_chunk(out, (b, s0, n), params, (yt, &*p), series);
        }
    }
}

/// The series terms of every unit for samples `s0..s0 + n` ([`SeriesLanes`]).
#[inline(always)]
fn series_chunk<R: Real>(
    out: LayerSpan,
    (b, s0, n): (usize, usize, usize),
    params: &[f32],
    (yt, p): (&[R], &[R]),
    series: &mut [R],
) {
    let k = out.outputs;
    let row = |o: usize| o * b + s0..o * b + s0 + n;
    let (three, half) = (R::from_f64(3.0), R::from_f64(0.5));
    let (sixth, twentyfourth) = (R::from_f64(1.0 / 6.0), R::from_f64(1.0 / 24.0));
    for u in 0..out.inputs {
        let w = &params[out.w_off + u * k..][..k];
        let mut acc = [[R::ZERO; SERIES_CHUNK]; 6];
        let [total, k1, wt, m2, m3, m4] = &mut acc;
        let (total, k1, wt) = (&mut total[..n], &mut k1[..n], &mut wt[..n]);
        let (m2, m3, m4) = (&mut m2[..n], &mut m3[..n], &mut m4[..n]);
        for (o, &wk) in w.iter().enumerate() {
            let wk = R::from_f32(wk);
            let (t, pr) = (&yt[row(o)], &p[row(o)]);
            for (((tot, k1), wt), (&tk, &pk)) in total
                .iter_mut()
                .zip(k1.iter_mut())
                .zip(wt.iter_mut())
                .zip(t.iter().zip(pr))
            {
                *tot = *tot + tk;
                *k1 = *k1 + pk * wk;
                *wt = *wt + tk * wk;
            }
        }
        for (o, &wk) in w.iter().enumerate() {
            let wk = R::from_f32(wk);
            let terms = m2.iter_mut().zip(m3.iter_mut()).zip(m4.iter_mut());
            for (((m2, m3), m4), (&pk, &k1)) in terms.zip(p[row(o)].iter().zip(&*k1)) {
                let d = wk - k1;
                let q = d * d;
                *m2 = *m2 + pk * q;
                *m3 = *m3 + pk * (q * d);
                *m4 = *m4 + pk * (q * q);
            }
        }
        let c = |i: usize| (4 * u + i) * b + s0..(4 * u + i) * b + s0 + n;
        for (j, &tot) in total.iter().enumerate() {
            let k4 = m4[j] - (m2[j] * m2[j]) * three;
            series[c(0)][j] = tot * k1[j] - wt[j];
            series[c(1)][j] = (tot * m2[j]) * half;
            series[c(2)][j] = (tot * m3[j]) * sixth;
            series[c(3)][j] = (tot * k4) * twentyfourth;
        }
    }
}
