//! The CPU reference evaluator: the same numbers as the shaders, computed in the shaders' order.
//!
//! Order of every sum (the contract with the kernels in `shaders/`):
//! - unit u of a layer: `acc = 0; acc += x[i] * W[i][u]` for i = 0, 1, …; then `acc += b[u]`;
//! - squared error of a sample: `sse = 0; sse += (pred[o] - y[o])²` for o = 0, 1, …;
//! - cross-entropy of a sample: [`crate::xent::softmax_xent_soft`] of the output layer's logits
//!   against the targets read as probabilities (`p_o = y[o]`), in its order (max, sum of
//!   exponentials, ln, soft terms, each over o ascending);
//! - loss: [`reduce_sse`] over samples (strided lanes, then a binary tree), times
//!   1/[`Loss::mean_count`] (1/(B·outputs) for MSE, 1/B for cross-entropy).
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
//! With cross-entropy the nudge changes the logits (one logit `a'` for an output-layer parameter;
//! `z[v] + δ·W[u][v]` for every output v when a unit of the last hidden layer changes by δ; a full
//! pass of the later layers otherwise), and a sample's change is `xent(new logits) − xent_s`,
//! `xent_s` being its loss kept by the unperturbed pass: O(outputs) per (parameter, sample).
//! For a unit of the last hidden layer before an identity output layer, the change is instead the
//! cumulant series `δ·(c1 + δ·(c2 + δ·(c3 + δ·c4)))` of [`crate::xent::series_change`], O(1), with
//! `c` per (unit, sample) from `series_terms` once per step (see `xent_series`), wherever
//! [`crate::xent::series_applies`] (`|δ|·spread[u]` at most `series_max_x`, which bounds the
//! truncation below 1/32 of a float32 epsilon); other items take the exact difference.
//! `delta_k` is the sum of the samples' changes times 1/B.
//!
//! Evaluations are split over threads (a pool kept by the evaluator, see `pool.rs`, so a step
//! spawns none); each keeps its own arithmetic order, so results do not depend on the thread count.

use crate::data::Dataset;
use crate::error::Result;
use crate::estimate::Probe;
use crate::evaluator::{check_batch, check_probe, Evaluator};
use crate::model::{LayerSpan, Loss, Model};
use crate::precision::Real;
use crate::settings::{DeviceInfo, Method};
use crate::shard::Share;
use crate::xent::{series_applies, series_change, series_terms, softmax_probs, weight_spread};
use std::marker::PhantomData;

pub use crate::precision::REDUCE_LANES;
pub use reduce::reduce_sse;

mod batch;
mod forward;
mod lanes;
mod output;
mod pool;
mod reduce;
mod reuse;
mod tasks;

use forward::*;
use reuse::*;
use tasks::*;

/// Below this many multiply-adds per step the evaluator stays on one thread (waking workers costs
/// more).
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
    /// A hidden row block's or an output block's items, `[sample][lane]`, rows up to the
    /// reduction width (lane path).
    rows: Vec<R>,
    /// A block's nudges (lane path; its length is the widest block).
    nudges: Vec<R>,
    /// Per-sample scratch of the unperturbed pass's cross-entropy lanes (2·B).
    cols: Vec<R>,
    /// An output block's lane arrays: six as long as the widest block (lane path).
    lanes: Vec<R>,
}

/// The unperturbed pass kept by the reuse method: `z` and `a` as `[unit][sample]`; for MSE with an
/// identity output layer also `ab[u][s] = Σ_v W[u][v]·2(a_v − y_v)` and `bb[u] = Σ_v W[u][v]²`
/// over the output layer's weights (see [`output_terms`]); for cross-entropy each sample's loss
/// and, with an identity output layer, the series coefficients `series[(4u + i)·B + s]` (`c_{i+1}`
/// of unit u, sample s) and each unit's weight spread (see [`xent_series`]).
#[derive(Clone, Debug)]
struct Cache<R> {
    z: Vec<R>,
    a: Vec<R>,
    ab: Vec<R>,
    bb: Vec<R>,
    losses: Vec<R>,
    series: Vec<R>,
    spread: Vec<R>,
    /// The first layer's inputs as `[input][sample]`, transposed once per step for the lane path.
    xt: Vec<R>,
    /// The lane path's per-step copies (see [`lanes::lane_prepare`]): the last hidden layer's `z`
    /// and `a` and the closed-form terms as `[sample][unit]` (empty without a closed form), the
    /// targets as `[output][sample]`, and whether all of them are finite.
    zt: Vec<R>,
    at: Vec<R>,
    coef: Vec<R>,
    yt: Vec<R>,
    finite: bool,
    /// Per layer, whether all its weights are finite this step (zero inputs may be skipped).
    finite_w: Vec<bool>,
    /// Whether the output layer's `z` and `a`, the targets and the kept losses are all finite
    /// this step (a condition of cross-entropy's output blocks; lane path).
    finite_out: bool,
    /// Whether every kept logit lies within ±2^126 this step (cross-entropy's output blocks may
    /// then skip zero targets: `output.rs`).
    bounded_out: bool,
    /// Scratch of the lane path's output terms: `2(a − y)` as `[output][sample]`.
    err: Vec<R>,
    /// The output layer's inputs as `[sample][input]`, each row followed by a 1 (the bias
    /// row's input), for the output blocks of the lane path.
    ht: Vec<R>,
    /// Cross-entropy's kept-pass terms per sample for the output blocks (`output::soft_prepare`).
    soft: Vec<R>,
}

impl<R> Default for Cache<R> {
    fn default() -> Self {
        Cache {
            z: Vec::new(),
            a: Vec::new(),
            ab: Vec::new(),
            bb: Vec::new(),
            losses: Vec::new(),
            series: Vec::new(),
            spread: Vec::new(),
            xt: Vec::new(),
            zt: Vec::new(),
            at: Vec::new(),
            coef: Vec::new(),
            yt: Vec::new(),
            finite: false,
            finite_w: Vec::new(),
            finite_out: false,
            bounded_out: false,
            err: Vec::new(),
            ht: Vec::new(),
            soft: Vec::new(),
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
    loss: Loss,
    threads: usize,
    lanes: bool,
    scratch: Vec<Scratch<R>>,
    cache: Cache<R>,
    /// The reuse method's parameters in work units (rows, output-layer groups, single steps).
    tasks: Vec<Task>,
    /// The part of each probe's values it computes ([`CpuEvaluator::set_share`]).
    share: Share,
    /// Worker threads, made at the first step that uses more than one thread.
    pool: Option<pool::Pool>,
    _r: PhantomData<R>,
}

impl<R: Real> CpuEvaluator<R> {
    /// A naive-method evaluator for `model`'s shape on `data`, using every core for large steps.
    pub fn new(model: &Model, data: &Dataset) -> Result<Self> {
        Self::with_method(model, data, Method::Naive)
    }

    /// An evaluator using `method` for the MSE loss.
    pub fn with_method(model: &Model, data: &Dataset, method: Method) -> Result<Self> {
        Self::with_options(model, data, method, Loss::Mse)
    }

    /// An evaluator using `method` for `loss`.
    pub fn with_options(model: &Model, data: &Dataset, method: Method, loss: Loss) -> Result<Self> {
        data.check_fits(model, "data")?;
        loss.check(model)?;
        let layers = model.layer_spans();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut ev = CpuEvaluator {
            layers,
            x: data.x.iter().copied().collect(),
            y: data.y.iter().copied().collect(),
            samples: data.len(),
            num_params: model.num_params(),
            method,
            loss,
            threads: 1,
            lanes: true,
            scratch: Vec::new(),
            cache: Cache::default(),
            tasks: Vec::new(),
            share: Share::ALL,
            pool: None,
            _r: PhantomData,
        };
        if method == Method::Reuse {
            let cells = model.num_units() * data.len();
            // The squared error's closed form, or cross-entropy's losses and series terms.
            let units = model.closed_form_units();
            let (hidden, kept, series) = match loss {
                Loss::Mse => (units, 0, 0),
                Loss::CrossEntropy => (0, data.len(), units),
            };
            let coefs = match loss {
                Loss::Mse => 1,
                Loss::CrossEntropy => 4,
            };
            let lane = units * data.len();
            let out = ev.layers[ev.layers.len() - 1];
            let soft = match loss {
                Loss::Mse => 0,
                Loss::CrossEntropy => output::SOFT_FIELDS * out.outputs + 1,
            };
            ev.cache = Cache {
                z: vec![R::ZERO; cells],
                a: vec![R::ZERO; cells],
                ab: vec![R::ZERO; hidden * data.len()],
                bb: vec![R::ZERO; hidden],
                losses: vec![R::ZERO; kept],
                series: vec![R::ZERO; 4 * series * data.len()],
                spread: vec![R::ZERO; series],
                xt: vec![R::ZERO; ev.x.len()],
                zt: vec![R::ZERO; lane],
                at: vec![R::ZERO; lane],
                coef: vec![R::ZERO; coefs * lane],
                yt: vec![R::ZERO; ev.y.len()],
                finite: false,
                finite_w: Vec::with_capacity(ev.layers.len()),
                finite_out: false,
                bounded_out: false,
                err: vec![R::ZERO; ev.y.len()],
                ht: vec![R::ZERO; (out.inputs + 1) * data.len()],
                soft: vec![R::ZERO; soft * data.len()],
            };
            ev.tasks = reuse_tasks(&ev.layers, units > 0, data.len());
        }
        ev.set_threads(threads);
        Ok(ev)
    }

    /// Sets the number of threads (at least 1). Results do not depend on it.
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
        self.pool = None;
        let width = self.layers.iter().map(|l| l.outputs).max().unwrap_or(0);
        let b = self.samples;
        // The scratch's block width: the last hidden layer's unit blocks (0 without one) or the
        // widest output block (fewer than twice the block rows: `output::output_blocks`).
        let ub = if self.cache.zt.is_empty() {
            0
        } else {
            lanes::unit_block(self.layers[self.layers.len() - 2].outputs, b)
        };
        let ob = 2 * output::output_block_rows(b);
        let ub = ub.max(ob);
        self.scratch = vec![
            Scratch {
                params: Vec::new(),
                bufs: Bufs {
                    a: vec![R::ZERO; width],
                    b: vec![R::ZERO; width],
                    sse: vec![R::ZERO; b],
                    rows: vec![R::ZERO; lanes::item_rows(b) * ub],
                    nudges: vec![R::ZERO; ub],
                    cols: vec![R::ZERO; 2 * b],
                    lanes: vec![R::ZERO; 6 * ob],
                },
            };
            self.threads
        ];
    }

    /// Computes only `share` of every probe's values from now on (a shard of a split step); the
    /// other values are left as they were.
    pub fn set_share(&mut self, share: Share) {
        self.share = share;
    }

    /// Chooses the reuse method's lane path (the default) or the per-sample scalar reference for
    /// the items the lane path covers. Results are identical; the switch exists so that tests and
    /// benchmarks can compare the two.
    pub fn set_lanes(&mut self, on: bool) {
        self.lanes = on;
    }

    /// The loss this evaluator computes.
    pub fn loss_kind(&self) -> Loss {
        self.loss
    }

    /// The method.
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
        let data = (&self.x[..], &self.y[..], self.samples);
        loss_at(&self.layers, data, self.loss, params, s)
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

    /// `deltas[k − first] = L(params with params[k] + eps) − base` for k from `first` on.
    fn naive_deltas(&mut self, params: &[f32], base: R, eps: f32, first: usize, deltas: &mut [R]) {
        for s in &mut self.scratch {
            s.params.clear();
            s.params.extend_from_slice(params);
        }
        let threads = self.threads_for(deltas.len() * self.macs_per_pass());
        let (layers, loss) = (&self.layers, self.loss);
        let data = (&self.x[..], &self.y[..], self.samples);
        let each = |k: usize, s: &mut Scratch<R>| {
            s.params[k] = params[k] + eps;
            let lk = loss_at(layers, data, loss, &s.params, &mut s.bufs);
            s.params[k] = params[k];
            lk - base
        };
        let pool = (threads, &mut self.pool);
        for_each_param(pool, &mut self.scratch, first, deltas, &each);
    }

    /// `deltas[k − first]` of the reuse method, from the cache [`CpuEvaluator::forward_store`]
    /// filled.
    fn reuse_deltas(&mut self, params: &[f32], eps: f32, first: usize, deltas: &mut [R]) {
        let outputs = self.layers.last().map_or(1, |l| l.outputs);
        let threads = self.threads_for(deltas.len() * self.samples * (outputs + 1));
        let plan = ReusePlan {
            layers: &self.layers,
            x: &self.x,
            y: &self.y,
            samples: self.samples,
            loss: self.loss,
            cache: &self.cache,
            params,
            eps,
            lanes: self.lanes,
        };
        // A share of the parameters takes the tasks clipped to it (a cut hidden row goes
        // parameter by parameter, a cut output block computes whole rows and keeps its share;
        // the same bits either way).
        let clipped;
        let tasks = if first == 0 && deltas.len() == self.num_params {
            &self.tasks[..]
        } else {
            clipped = clip_tasks(&self.tasks, first..first + deltas.len());
            &clipped[..]
        };
        run_tasks(
            (threads, &mut self.pool),
            &mut self.scratch,
            tasks,
            deltas,
            &|task, out, s| plan.task(task, out, &mut s.bufs),
        );
    }

    /// `out[i − first] = L(probe's perturbed parameters i) − base` for direction evaluations i
    /// from `first` on.
    fn direction_deltas(
        &mut self,
        params: &[f32],
        (probe, base): (&Probe, R),
        first: usize,
        out: &mut [R],
    ) {
        for s in &mut self.scratch {
            s.params.resize(params.len(), 0.0);
        }
        let threads = self.threads_for(out.len() * self.macs_per_pass());
        let (layers, loss) = (&self.layers, self.loss);
        let data = (&self.x[..], &self.y[..], self.samples);
        let each = |i: usize, s: &mut Scratch<R>| {
            probe.perturbed(params, i, &mut s.params);
            loss_at(layers, data, loss, &s.params, &mut s.bufs) - base
        };
        let pool = (threads, &mut self.pool);
        for_each_param(pool, &mut self.scratch, first, out, &each);
    }

    /// One run of [`Evaluator::probe`]: returns the loss and fills `values`.
    fn probe_run(&mut self, params: &[f32], probe: &Probe, values: &mut [R]) -> R {
        let p = self.num_params;
        let mine = self.share.range(values.len() / probe_offsets(probe));
        match *probe {
            Probe::Coordinates { offsets, count } => {
                let base = match self.method {
                    Method::Naive => self.loss(params),
                    Method::Reuse => self.forward_store(params),
                };
                for (j, &eps) in offsets[..count].iter().enumerate() {
                    let out = &mut values[j * p + mine.start..j * p + mine.end];
                    match self.method {
                        Method::Naive => self.naive_deltas(params, base, eps, mine.start, out),
                        Method::Reuse => self.reuse_deltas(params, eps, mine.start, out),
                    }
                }
                base
            }
            Probe::Directions { .. } => {
                let base = self.loss(params);
                let out = &mut values[mine.clone()];
                self.direction_deltas(params, (probe, base), mine.start, out);
                base
            }
        }
    }

    /// The unperturbed pass of the reuse method: fills the cache and returns the loss.
    fn forward_store(&mut self, params: &[f32]) -> R {
        let b = self.samples;
        let inputs = self.layers[0].inputs;
        let outputs = self.layers[self.layers.len() - 1].outputs;
        let cache = &mut self.cache;
        cache.finite_w.clear();
        cache.finite_w.extend(
            self.layers
                .iter()
                .map(|l| params[l.w_off..l.b_off].iter().all(|w| w.is_finite())),
        );
        // `[input][sample]` and `[output][sample]` copies of the batch.
        lanes::transpose(&self.x, (b, inputs, inputs), &mut cache.xt, b, R::from_f32);
        lanes::transpose(
            &self.y,
            (b, outputs, outputs),
            &mut cache.yt,
            b,
            R::from_f32,
        );
        if self.lanes {
            let threads = self.threads;
            let workers = (threads, &mut self.pool, &mut self.scratch[..]);
            batch::forward_layers(&self.layers, params, b, cache, workers);
            let bufs = &mut self.scratch[0].bufs;
            let sse = &mut bufs.sse;
            batch::sample_losses(&self.layers, (b, self.loss), cache, (sse, &mut bufs.cols));
            if !cache.bb.is_empty() {
                batch::output_terms_lanes(&self.layers, b, params, cache);
            }
            if !cache.spread.is_empty() {
                batch::xent_series_lanes(&self.layers, b, params, cache);
            }
            lanes::lane_prepare(&self.layers, b, self.loss, cache);
            let out = &self.layers[self.layers.len() - 1];
            let rows = out.unit_off * b..(out.unit_off + out.outputs) * b;
            let all = |v: &[R]| v.iter().all(|x| x.is_finite());
            cache.bounded_out = output::bounded(&cache.z[rows.clone()]);
            cache.finite_out = all(&cache.z[rows.clone()])
                && all(&cache.a[rows])
                && all(&cache.yt)
                && all(&cache.losses);
            return R::mean(reduce_sse(sse), self.loss.mean_count(b, outputs));
        }
        let bufs = &mut self.scratch[0].bufs;
        for s in 0..b {
            let x = &self.x[s * inputs..(s + 1) * inputs];
            let pred = forward_each(
                &self.layers,
                (x, &cache.finite_w),
                params,
                (&mut bufs.a, &mut bufs.b),
                |layer, u, z, a| {
                    let cell = (layer.unit_off + u) * b + s;
                    cache.z[cell] = z;
                    cache.a[cell] = a;
                },
            );
            bufs.sse[s] = sample_loss(self.loss, pred, &self.y[s * outputs..(s + 1) * outputs]);
            if let Some(kept) = cache.losses.get_mut(s) {
                *kept = bufs.sse[s];
            }
        }
        if !cache.bb.is_empty() {
            output_terms(&self.layers, &self.y, b, params, cache);
        }
        if !cache.spread.is_empty() {
            xent_series(&self.layers, &self.y, b, params, cache);
        }
        R::mean(reduce_sse(&bufs.sse), self.loss.mean_count(b, outputs))
    }
}

/// Offsets per parameter of a probe (1 for SPSA, whose values are its evaluations).
fn probe_offsets(probe: &Probe) -> usize {
    match *probe {
        Probe::Coordinates { count, .. } => count.max(1),
        Probe::Directions { .. } => 1,
    }
}

/// Runs `each(k, scratch)` for every parameter k from `first` on, on `threads` threads taking
/// contiguous ranges in turn; `deltas[k − first]` gets its result.
fn for_each_param<R: Real>(
    (threads, pool): (usize, &mut Option<pool::Pool>),
    scratch: &mut [Scratch<R>],
    first: usize,
    deltas: &mut [R],
    each: &(dyn Fn(usize, &mut Scratch<R>) -> R + Sync),
) {
    let run = |at: usize, out: &mut [R], s: &mut Scratch<R>| {
        for (j, slot) in out.iter_mut().enumerate() {
            *slot = each(at + j, s);
        }
    };
    let threads = threads.min(scratch.len()).min(deltas.len());
    let Some(pool) = pool_for(pool, threads) else {
        run(first, deltas, &mut scratch[0]);
        return;
    };
    // Ranges a few times smaller than an even split, so that a slow thread delays little.
    let per = deltas.len().div_ceil(4 * threads);
    let queue = std::sync::Mutex::new((first, deltas));
    let work = |_: usize, s: &mut Scratch<R>| loop {
        let (at, out) = {
            let mut q = queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if q.1.is_empty() {
                break;
            }
            let len = per.min(q.1.len());
            let (out, tail) = std::mem::take(&mut q.1).split_at_mut(len);
            let at = q.0;
            *q = (at + len, tail);
            (at, out)
        };
        run(at, out, s);
    };
    pool.run_each(&mut scratch[..threads], &work);
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

    fn batch_len(&self) -> usize {
        self.samples
    }

    fn set_batch(&mut self, data: &Dataset) -> Result<()> {
        let (inputs, outputs) = (self.x.len() / self.samples, self.y.len() / self.samples);
        check_batch(data, self.samples, inputs, outputs)?;
        self.x.clear();
        self.x.extend(data.x.iter().copied());
        self.y.clear();
        self.y.extend(data.y.iter().copied());
        Ok(())
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
