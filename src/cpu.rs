//! The CPU reference evaluator: the same numbers as the shaders, computed in the shaders' order.
//!
//! Order of every sum (the contract with the kernels in `shaders/`):
//! - unit u of a layer: `acc = 0; acc += x[i] * W[i][u]` for i = 0, 1, …; then `acc += b[u]`;
//! - squared error of a sample: `sse = 0; sse += (pred[o] - y[o])²` for o = 0, 1, …;
//! - loss: [`reduce_sse`] over samples (strided lanes, then a binary tree), times 1/(B·outputs).
//!
//! The reuse method (see [`Method::Reuse`]) keeps every layer's pre-activations `z` and outputs `a`
//! of the unperturbed pass and, for a nudge of parameter k in layer l, unit u (input i):
//! - `d = fl(w + eps) − w`; `z' = z[u] + x[i]·d` (a bias: `z' = z[u] + d`); `a' = act(z')`;
//! - if l is the last layer: `dsse = (a' − a)·((a' − y) + (a − y))` for that output only;
//! - else `δ = a' − a[u]`; if layer l+1 is an identity output layer, `dsse = δ·(ab[u] + δ·bb[u])`
//!   from per-step sums over the outputs (see `output_terms`);
//! - otherwise for every unit v of layer l+1, `z2 = z[v] + δ·W[u][v]`, `a2 = act(z2)`; later
//!   layers run a full forward pass from there;
//! - on the last layer, `dsse += (a' − a)·((a' − y) + (a − y))` per output in order;
//! - `delta_k` = [`reduce_sse`] of the samples' `dsse`, times 1/(B·outputs).
//!
//! Evaluations are split over threads; each keeps its own arithmetic order, so results do not
//! depend on the thread count.

use crate::data::Dataset;
use crate::error::Result;
use crate::estimate::Probe;
use crate::evaluator::{check_probe, Evaluator};
use crate::model::{LayerSpan, Model};
use crate::precision::Real;
use crate::settings::{DeviceInfo, Method};
use std::marker::PhantomData;

pub use crate::precision::REDUCE_LANES;

/// Below this many multiply-adds per step the evaluator stays on one thread (spawning costs more).
const PARALLEL_MIN_WORK: usize = 1 << 18;

/// Per-thread working memory, allocated once.
#[derive(Clone, Debug)]
struct Scratch<R> {
    params: Vec<f32>,
    bufs: Bufs<R>,
}

/// Activations of the current and next layer, and each sample's squared error (or its change).
#[derive(Clone, Debug)]
struct Bufs<R> {
    a: Vec<R>,
    b: Vec<R>,
    sse: Vec<R>,
}

/// The unperturbed pass kept by the reuse method: `z` and `a` as `[unit][sample]`; with an identity
/// output layer also `ab[u][s] = Σ_v W[u][v]·2(a_v − y_v)` and `bb[u] = Σ_v W[u][v]²` over the
/// output layer's weights (see [`output_terms`]).
#[derive(Clone, Debug)]
struct Cache<R> {
    z: Vec<R>,
    a: Vec<R>,
    ab: Vec<R>,
    bb: Vec<R>,
}

impl<R> Default for Cache<R> {
    fn default() -> Self {
        Cache {
            z: Vec::new(),
            a: Vec::new(),
            ab: Vec::new(),
            bb: Vec::new(),
        }
    }
}

/// CPU evaluator computing losses in `R` (`f32` mirrors the GPU bit for bit; `f64` is the notebook).
#[derive(Debug)]
pub struct CpuEvaluator<R: Real = f32> {
    layers: Vec<LayerSpan>,
    x: Vec<f32>,
    y: Vec<f32>,
    samples: usize,
    num_params: usize,
    method: Method,
    threads: usize,
    scratch: Vec<Scratch<R>>,
    cache: Cache<R>,
    _r: PhantomData<R>,
}

impl<R: Real> CpuEvaluator<R> {
    /// A naive-method evaluator for `model`'s shape on `data`, using every core for large steps.
    pub fn new(model: &Model, data: &Dataset) -> Result<Self> {
        Self::with_method(model, data, Method::Naive)
    }

    /// An evaluator using `method`.
    pub fn with_method(model: &Model, data: &Dataset, method: Method) -> Result<Self> {
        data.check_fits(model, "data")?;
        let layers = model.layer_spans();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut ev = CpuEvaluator {
            layers,
            x: data.x.iter().copied().collect(),
            y: data.y.iter().copied().collect(),
            samples: data.len(),
            num_params: model.num_params(),
            method,
            threads: 1,
            scratch: Vec::new(),
            cache: Cache::default(),
            _r: PhantomData,
        };
        if method == Method::Reuse {
            let cells = model.num_units() * data.len();
            let hidden = model.closed_form_units();
            ev.cache = Cache {
                z: vec![R::ZERO; cells],
                a: vec![R::ZERO; cells],
                ab: vec![R::ZERO; hidden * data.len()],
                bb: vec![R::ZERO; hidden],
            };
        }
        ev.set_threads(threads);
        Ok(ev)
    }

    /// Sets the number of threads (at least 1). Results do not depend on it.
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
        let width = self.layers.iter().map(|l| l.outputs).max().unwrap_or(0);
        self.scratch = vec![
            Scratch {
                params: Vec::new(),
                bufs: Bufs {
                    a: vec![R::ZERO; width],
                    b: vec![R::ZERO; width],
                    sse: vec![R::ZERO; self.samples],
                },
            };
            self.threads
        ];
    }

    /// The method this evaluator uses.
    pub fn method(&self) -> Method {
        self.method
    }

    /// Multiply-adds of one full forward pass over every sample.
    fn macs_per_pass(&self) -> usize {
        self.samples
            * self
                .layers
                .iter()
                .map(|l| (l.inputs + 1) * l.outputs)
                .sum::<usize>()
    }

    /// The loss at `params`.
    pub fn loss(&mut self, params: &[f32]) -> R {
        let s = &mut self.scratch[0].bufs;
        loss_at(&self.layers, &self.x, &self.y, self.samples, params, s)
    }

    /// The network's outputs for every training input, `[samples][outputs]`, as float64.
    pub fn predict(&mut self, params: &[f32]) -> Vec<Vec<f64>> {
        let inputs = self.layers[0].inputs;
        let s = &mut self.scratch[0].bufs;
        (0..self.samples)
            .map(|i| {
                let x = &self.x[i * inputs..(i + 1) * inputs];
                let out = forward(&self.layers, x, params, &mut s.a, &mut s.b);
                out.iter().map(|v| v.to_f64()).collect()
            })
            .collect()
    }

    fn threads_for(&self, work: usize) -> usize {
        if work < PARALLEL_MIN_WORK {
            1
        } else {
            self.threads
        }
    }

    /// `deltas[k] = L(params with params[k] + eps) − base` for every k.
    fn naive_deltas(&mut self, params: &[f32], base: R, eps: f32, deltas: &mut [R]) {
        for s in &mut self.scratch {
            s.params.clear();
            s.params.extend_from_slice(params);
        }
        let threads = self.threads_for(self.num_params * self.macs_per_pass());
        let (layers, x, y, samples) = (&self.layers, &self.x, &self.y, self.samples);
        let each = |k: usize, s: &mut Scratch<R>| {
            s.params[k] = params[k] + eps;
            let lk = loss_at(layers, x, y, samples, &s.params, &mut s.bufs);
            s.params[k] = params[k];
            lk - base
        };
        for_each_param(threads, &mut self.scratch, deltas, &each);
    }

    /// `deltas[k]` of the reuse method, from the cache [`CpuEvaluator::forward_store`] filled.
    fn reuse_deltas(&mut self, params: &[f32], eps: f32, deltas: &mut [R]) {
        let outputs = self.layers.last().map_or(1, |l| l.outputs);
        let threads = self.threads_for(self.num_params * self.samples * (outputs + 1));
        let plan = ReusePlan {
            layers: &self.layers,
            x: &self.x,
            y: &self.y,
            samples: self.samples,
            cache: &self.cache,
            params,
            eps,
        };
        for_each_param(threads, &mut self.scratch, deltas, &|k, s| {
            plan.delta(k, &mut s.bufs)
        });
    }

    /// `out[i] = L(probe's perturbed parameters i) − base` for every direction evaluation.
    fn direction_deltas(&mut self, params: &[f32], probe: &Probe, base: R, out: &mut [R]) {
        for s in &mut self.scratch {
            s.params.resize(params.len(), 0.0);
        }
        let threads = self.threads_for(out.len() * self.macs_per_pass());
        let (layers, x, y, samples) = (&self.layers, &self.x, &self.y, self.samples);
        let each = |i: usize, s: &mut Scratch<R>| {
            probe.perturbed(params, i, &mut s.params);
            loss_at(layers, x, y, samples, &s.params, &mut s.bufs) - base
        };
        for_each_param(threads, &mut self.scratch, out, &each);
    }

    /// One run of [`Evaluator::probe`]: returns the loss and fills `values`.
    fn probe_run(&mut self, params: &[f32], probe: &Probe, values: &mut [R]) -> R {
        let p = self.num_params;
        match *probe {
            Probe::Coordinates { offsets, count } => {
                let base = match self.method {
                    Method::Naive => self.loss(params),
                    Method::Reuse => self.forward_store(params),
                };
                for (j, &eps) in offsets[..count].iter().enumerate() {
                    let out = &mut values[j * p..(j + 1) * p];
                    match self.method {
                        Method::Naive => self.naive_deltas(params, base, eps, out),
                        Method::Reuse => self.reuse_deltas(params, eps, out),
                    }
                }
                base
            }
            Probe::Directions { .. } => {
                let base = self.loss(params);
                self.direction_deltas(params, probe, base, values);
                base
            }
        }
    }

    /// The unperturbed pass of the reuse method: fills the cache and returns the loss.
    fn forward_store(&mut self, params: &[f32]) -> R {
        let b = self.samples;
        let inputs = self.layers[0].inputs;
        let outputs = self.layers[self.layers.len() - 1].outputs;
        let bufs = &mut self.scratch[0].bufs;
        let cache = &mut self.cache;
        for s in 0..b {
            let x = &self.x[s * inputs..(s + 1) * inputs];
            let pred = forward_each(
                &self.layers,
                x,
                params,
                &mut bufs.a,
                &mut bufs.b,
                |layer, u, z, a| {
                    let cell = (layer.unit_off + u) * b + s;
                    cache.z[cell] = z;
                    cache.a[cell] = a;
                },
            );
            bufs.sse[s] = sse(pred, &self.y[s * outputs..(s + 1) * outputs]);
        }
        if !cache.bb.is_empty() {
            output_terms(&self.layers, &self.y, b, params, cache);
        }
        R::mean(reduce_sse(&bufs.sse), b * outputs)
    }
}

/// Runs `each(k, scratch)` for every parameter k, split over `threads` contiguous ranges;
/// `deltas[k]` gets its result.
fn for_each_param<R: Real>(
    threads: usize,
    scratch: &mut [Scratch<R>],
    deltas: &mut [R],
    each: &(dyn Fn(usize, &mut Scratch<R>) -> R + Sync),
) {
    let run = |first: usize, out: &mut [R], s: &mut Scratch<R>| {
        for (j, slot) in out.iter_mut().enumerate() {
            *slot = each(first + j, s);
        }
    };
    if threads <= 1 || deltas.len() < 2 {
        run(0, deltas, &mut scratch[0]);
        return;
    }
    let per = deltas.len().div_ceil(threads.min(scratch.len()));
    std::thread::scope(|scope| {
        for (c, (out, s)) in deltas.chunks_mut(per).zip(scratch.iter_mut()).enumerate() {
            scope.spawn(move || run(c * per, out, s));
        }
    });
}

/// `out[u] = Σ_i in[i]·W[i][u]` in order of i, `in` being `x` for the first layer.
fn dense<R: Real>(layer: &LayerSpan, input: Option<&[R]>, x: &[f32], p: &[f32], out: &mut [R]) {
    out.fill(R::ZERO);
    // i-outer, u-inner: each unit still accumulates over i in order, as the shader does.
    for i in 0..layer.inputs {
        let xi = match input {
            None => R::from_f32(x[i]),
            Some(h) => h[i],
        };
        let row = &p[layer.w_off + i * layer.outputs..][..layer.outputs];
        for (o, &w) in out.iter_mut().zip(row) {
            *o = *o + xi * R::from_f32(w);
        }
    }
}

fn forward<'a, R: Real>(
    layers: &[LayerSpan],
    x: &[f32],
    p: &[f32],
    a: &'a mut Vec<R>,
    b: &'a mut Vec<R>,
) -> &'a [R] {
    forward_each(layers, x, p, a, b, |_, _, _, _| {})
}

/// The forward pass of one sample; `seen(layer, unit, z, a)` sees every pre-activation and output.
fn forward_each<'a, R: Real>(
    layers: &[LayerSpan],
    x: &[f32],
    p: &[f32],
    a: &'a mut Vec<R>,
    b: &'a mut Vec<R>,
    mut seen: impl FnMut(&LayerSpan, usize, R, R),
) -> &'a [R] {
    let (mut cur, mut next) = (a, b);
    for (l, layer) in layers.iter().enumerate() {
        let out = &mut next[..layer.outputs];
        let input = if l == 0 {
            None
        } else {
            Some(&cur[..layer.inputs])
        };
        dense(layer, input, x, p, out);
        let bias = &p[layer.b_off..][..layer.outputs];
        for (u, (o, &bv)) in out.iter_mut().zip(bias).enumerate() {
            let z = *o + R::from_f32(bv);
            *o = z.activate(layer.activation);
            seen(layer, u, z, *o);
        }
        std::mem::swap(&mut cur, &mut next);
    }
    let width = layers.last().map_or(0, |l| l.outputs);
    &cur[..width]
}

fn sse<R: Real>(pred: &[R], target: &[f32]) -> R {
    let mut total = R::ZERO;
    for (&p, &t) in pred.iter().zip(target) {
        let d = p - R::from_f32(t);
        total = total + d * d;
    }
    total
}

/// Change of one output's squared error, `(a' − a)·((a' − y) + (a − y))`.
fn dsse_term<R: Real>(new: R, old: R, y: R) -> R {
    (new - old) * ((new - y) + (old - y))
}

fn loss_at<R: Real>(
    layers: &[LayerSpan],
    x: &[f32],
    y: &[f32],
    samples: usize,
    params: &[f32],
    s: &mut Bufs<R>,
) -> R {
    let inputs = layers[0].inputs;
    let outputs = layers[layers.len() - 1].outputs;
    for i in 0..samples {
        let pred = forward(
            layers,
            &x[i * inputs..(i + 1) * inputs],
            params,
            &mut s.a,
            &mut s.b,
        );
        s.sse[i] = sse(pred, &y[i * outputs..(i + 1) * outputs]);
    }
    R::mean(reduce_sse(&s.sse), samples * outputs)
}

/// Everything one reuse-method delta needs, shared read-only by the threads.
struct ReusePlan<'a, R> {
    layers: &'a [LayerSpan],
    x: &'a [f32],
    y: &'a [f32],
    samples: usize,
    cache: &'a Cache<R>,
    params: &'a [f32],
    eps: f32,
}

impl<R: Real> ReusePlan<'_, R> {
    /// `L(params + eps·e_k) − L(params)` from the cache, in the order described in the module docs.
    fn delta(&self, k: usize, bufs: &mut Bufs<R>) -> R {
        let (layers, b) = (self.layers, self.samples);
        let l = layers
            .iter()
            .rposition(|layer| layer.w_off <= k)
            .expect("k in range");
        let layer = layers[l];
        let (input, u) = if k >= layer.b_off {
            (None, k - layer.b_off)
        } else {
            let j = k - layer.w_off;
            (Some(j / layer.outputs), j % layer.outputs)
        };
        let last = layers.len() - 1;
        let outputs = layers[last].outputs;
        let w = self.params[k];
        let d = R::from_f32(w + self.eps) - R::from_f32(w);
        let cell = |layer: &LayerSpan, unit: usize, s: usize| (layer.unit_off + unit) * b + s;
        for s in 0..b {
            let c = cell(&layer, u, s);
            let z = match input {
                None => self.cache.z[c] + d,
                Some(i) => {
                    let xi = if l == 0 {
                        R::from_f32(self.x[s * layer.inputs + i])
                    } else {
                        self.cache.a[cell(&layers[l - 1], i, s)]
                    };
                    self.cache.z[c] + xi * d
                }
            };
            let a_new = z.activate(layer.activation);
            let a_old = self.cache.a[c];
            let y = &self.y[s * outputs..(s + 1) * outputs];
            if l == last {
                bufs.sse[s] = dsse_term(a_new, a_old, R::from_f32(y[u]));
                continue;
            }
            let delta = a_new - a_old;
            if l + 1 == last && !self.cache.bb.is_empty() {
                bufs.sse[s] = delta * (self.cache.ab[u * b + s] + delta * self.cache.bb[u]);
                continue;
            }
            let next = layers[l + 1];
            let row = &self.params[next.w_off + u * next.outputs..][..next.outputs];
            let mut dsse = R::ZERO;
            for (v, &wv) in row.iter().enumerate() {
                let c2 = cell(&next, v, s);
                let a2 = (self.cache.z[c2] + delta * R::from_f32(wv)).activate(next.activation);
                if l + 1 == last {
                    dsse = dsse + dsse_term(a2, self.cache.a[c2], R::from_f32(y[v]));
                } else {
                    bufs.a[v] = a2;
                }
            }
            if l + 1 < last {
                let (mut cur, mut nxt) = (&mut bufs.a, &mut bufs.b);
                for deep in &layers[l + 2..] {
                    let out = &mut nxt[..deep.outputs];
                    dense(deep, Some(&cur[..deep.inputs]), &[], self.params, out);
                    let bias = &self.params[deep.b_off..][..deep.outputs];
                    for (o, &bv) in out.iter_mut().zip(bias) {
                        *o = (*o + R::from_f32(bv)).activate(deep.activation);
                    }
                    std::mem::swap(&mut cur, &mut nxt);
                }
                let out_layer = &layers[last];
                for (o, &a_new) in cur[..outputs].iter().enumerate() {
                    dsse = dsse
                        + dsse_term(
                            a_new,
                            self.cache.a[cell(out_layer, o, s)],
                            R::from_f32(y[o]),
                        );
                }
            }
            bufs.sse[s] = dsse;
        }
        R::mean(reduce_sse(&bufs.sse), b * outputs)
    }
}

/// The closed form of the output layer for the reuse method when it is the identity: a change δ of
/// hidden unit u changes output v by `t_v = δ·W[u][v]`, and the squared error by
/// `Σ_v t_v·(2(a_v − y_v) + t_v) = δ·ab[u][s] + δ²·bb[u]`, so a nudge costs O(1) per sample instead
/// of O(outputs). Sums run over v in order: `ab = Σ W[u][v]·(e + e)` with `e = a_v − y_v`, and
/// `bb = Σ W[u][v]·W[u][v]` (the `reuse_prepare` kernel does the same).
fn output_terms<R: Real>(
    layers: &[LayerSpan],
    y: &[f32],
    b: usize,
    params: &[f32],
    cache: &mut Cache<R>,
) {
    let out = layers[layers.len() - 1];
    for u in 0..out.inputs {
        let row = &params[out.w_off + u * out.outputs..][..out.outputs];
        let mut sq = R::ZERO;
        for &w in row {
            sq = sq + R::from_f32(w) * R::from_f32(w);
        }
        cache.bb[u] = sq;
        for s in 0..b {
            let mut acc = R::ZERO;
            for (v, &w) in row.iter().enumerate() {
                let e = cache.a[(out.unit_off + v) * b + s] - R::from_f32(y[s * out.outputs + v]);
                acc = acc + R::from_f32(w) * (e + e);
            }
            cache.ab[u * b + s] = acc;
        }
    }
}

/// Sums per-sample values in the shader's order: lane t (of [`REDUCE_LANES`]) adds samples
/// t, t + 256, t + 512, … in turn, then lanes are combined pairwise, halving the stride each round.
/// Lanes beyond the next power of two of the sample count hold zeros and adding them is exact, so
/// the tree here starts at that width.
pub fn reduce_sse<R: Real>(sse: &[R]) -> R {
    let width = sse.len().next_power_of_two().min(REDUCE_LANES);
    // Small sample counts (the book has one) skip clearing a 256-lane array every call.
    if width <= 16 {
        let mut lanes = [R::ZERO; 16];
        return reduce_lanes(sse, &mut lanes[..width]);
    }
    let mut lanes = [R::ZERO; REDUCE_LANES];
    reduce_lanes(sse, &mut lanes[..width])
}

fn reduce_lanes<R: Real>(sse: &[R], lanes: &mut [R]) -> R {
    let width = lanes.len();
    for (t, lane) in lanes.iter_mut().enumerate() {
        let mut acc = R::ZERO;
        for &v in sse.iter().skip(t).step_by(REDUCE_LANES) {
            acc = acc + v;
        }
        *lane = acc;
    }
    let mut stride = width / 2;
    while stride > 0 {
        for t in 0..stride {
            lanes[t] = lanes[t] + lanes[t + stride];
        }
        stride /= 2;
    }
    lanes[0]
}

impl<R: Real> Evaluator for CpuEvaluator<R> {
    type Loss = R;

    fn num_params(&self) -> usize {
        self.num_params
    }

    fn max_runs(&self) -> usize {
        usize::MAX
    }

    fn probe(
        &mut self,
        params: &[f32],
        probes: &[Probe],
        active: &[bool],
        losses: &mut [R],
        values: &mut [R],
    ) -> Result<()> {
        let p = self.num_params;
        let (_, n) = check_probe(
            p,
            usize::MAX,
            params.len(),
            probes,
            active,
            losses.len(),
            values.len(),
        )?;
        for (r, probe) in probes.iter().enumerate().filter(|(r, _)| active[*r]) {
            losses[r] = self.probe_run(
                &params[r * p..(r + 1) * p],
                probe,
                &mut values[r * n..(r + 1) * n],
            );
        }
        Ok(())
    }

    fn device(&self) -> DeviceInfo {
        DeviceInfo::cpu(self.threads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shortened tree equals the literal 256-lane tree of the shader.
    #[test]
    fn reduce_matches_the_literal_256_lane_tree() {
        for n in [1usize, 2, 3, 7, 64, 255, 256, 257, 1000] {
            let v: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 + 0.1)
                .collect();
            let mut lanes = [0.0f32; 256];
            for (t, lane) in lanes.iter_mut().enumerate() {
                let mut acc = 0.0f32;
                let mut s = t;
                while s < n {
                    acc += v[s];
                    s += 256;
                }
                *lane = acc;
            }
            let mut stride = 128;
            while stride > 0 {
                for t in 0..stride {
                    lanes[t] += lanes[t + stride];
                }
                stride /= 2;
            }
            assert_eq!(reduce_sse(&v).to_bits(), lanes[0].to_bits(), "n = {n}");
        }
    }
}
