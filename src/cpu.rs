//! The CPU reference evaluator: the same losses as the shaders, summed in the shaders' order.
//!
//! Order of every sum (the contract with `shaders/nudge.wgsl`):
//! - unit u of a layer: `acc = 0; acc += x[i] * W[i][u]` for i = 0, 1, …; then `acc += b[u]`;
//! - squared error of a sample: `sse = 0; sse += (pred[o] - y[o])²` for o = 0, 1, …;
//! - loss: [`reduce_sse`] over samples (strided lanes, then a binary tree), times 1/(B·outputs).
//!
//! Evaluations are split over threads; each keeps its own arithmetic order, so the result does not
//! depend on the thread count.

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{Activation, Model};
use crate::precision::Real;
use crate::train::{DeviceInfo, Evaluator};
use std::marker::PhantomData;

/// Lanes of the loss reduction: the reduce workgroup size in `shaders/nudge.wgsl`.
pub const REDUCE_LANES: usize = 256;

/// Below this many multiply-adds per step the evaluator stays on one thread (spawning costs more).
const PARALLEL_MIN_WORK: usize = 1 << 18;

#[derive(Clone, Copy, Debug)]
struct LayerPlan {
    inputs: usize,
    outputs: usize,
    w_off: usize,
    b_off: usize,
    act: Activation,
}

/// Per-thread working memory, allocated once.
#[derive(Clone, Debug)]
struct Scratch<R> {
    params: Vec<f32>,
    bufs: Bufs<R>,
}

/// Activations of the current and next layer, and each sample's squared error.
#[derive(Clone, Debug)]
struct Bufs<R> {
    a: Vec<R>,
    b: Vec<R>,
    sse: Vec<R>,
}

/// CPU evaluator computing losses in `R` (`f32` mirrors the GPU bit for bit; `f64` is the notebook).
#[derive(Debug)]
pub struct CpuEvaluator<R: Real = f32> {
    layers: Vec<LayerPlan>,
    x: Vec<f32>,
    y: Vec<f32>,
    inputs: usize,
    outputs: usize,
    samples: usize,
    num_params: usize,
    threads: usize,
    scratch: Vec<Scratch<R>>,
    _r: PhantomData<R>,
}

impl<R: Real> CpuEvaluator<R> {
    /// An evaluator for `model`'s shape on `data`, using every core for large steps.
    pub fn new(model: &Model, data: &Dataset) -> Result<Self> {
        data.check_fits(model, "data")?;
        let layers = (0..model.layers().len())
            .map(|l| {
                let layer = model.layers()[l];
                LayerPlan {
                    inputs: layer.inputs,
                    outputs: layer.outputs,
                    w_off: model.weight_offset(l),
                    b_off: model.bias_offset(l),
                    act: layer.activation,
                }
            })
            .collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut ev = CpuEvaluator {
            layers,
            x: data.x.iter().copied().collect(),
            y: data.y.iter().copied().collect(),
            inputs: model.inputs(),
            outputs: model.outputs(),
            samples: data.len(),
            num_params: model.num_params(),
            threads: 1,
            scratch: Vec::new(),
            _r: PhantomData,
        };
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

    /// Multiply-adds of one full forward pass over every sample.
    fn macs_per_eval(&self) -> usize {
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
        let (inputs, outputs) = (self.inputs, self.outputs);
        let s = &mut self.scratch[0].bufs;
        (0..self.samples)
            .map(|i| {
                let out = forward(
                    &self.layers,
                    &self.x[i * inputs..(i + 1) * inputs],
                    params,
                    &mut s.a,
                    &mut s.b,
                );
                out[..outputs].iter().map(|v| v.to_f64()).collect()
            })
            .collect()
    }
}

fn forward<'a, R: Real>(
    layers: &[LayerPlan],
    x: &[f32],
    p: &[f32],
    a: &'a mut Vec<R>,
    b: &'a mut Vec<R>,
) -> &'a [R] {
    let (mut cur, mut next) = (a, b);
    for (l, layer) in layers.iter().enumerate() {
        let out = &mut next[..layer.outputs];
        out.fill(R::ZERO);
        // i-outer, u-inner: each unit still accumulates over i in order, as the shader does.
        for i in 0..layer.inputs {
            let xi = if l == 0 { R::from_f32(x[i]) } else { cur[i] };
            let row = &p[layer.w_off + i * layer.outputs..][..layer.outputs];
            for (o, &w) in out.iter_mut().zip(row) {
                *o = *o + xi * R::from_f32(w);
            }
        }
        let bias = &p[layer.b_off..][..layer.outputs];
        for (o, &bv) in out.iter_mut().zip(bias) {
            *o = (*o + R::from_f32(bv)).activate(layer.act);
        }
        std::mem::swap(&mut cur, &mut next);
    }
    let width = layers.last().map_or(0, |l| l.outputs);
    &cur[..width]
}

fn loss_at<R: Real>(
    layers: &[LayerPlan],
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
        let target = &y[i * outputs..(i + 1) * outputs];
        let mut sse = R::ZERO;
        for (&p, &t) in pred.iter().zip(target) {
            let d = p - R::from_f32(t);
            sse = sse + d * d;
        }
        s.sse[i] = sse;
    }
    R::mean(reduce_sse(&s.sse), samples * outputs)
}

/// Sums per-sample squared errors in the shader's order: lane t (of [`REDUCE_LANES`]) adds samples
/// t, t + 256, t + 512, … in turn, then lanes are combined pairwise, halving the stride each round.
/// Lanes beyond the next power of two of the sample count hold zeros and adding them is exact, so
/// the tree here starts at that width.
pub fn reduce_sse<R: Real>(sse: &[R]) -> R {
    let width = sse.len().next_power_of_two().min(REDUCE_LANES);
    let mut lanes = [R::ZERO; REDUCE_LANES];
    for (t, lane) in lanes.iter_mut().enumerate().take(width) {
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

    fn nudged_losses(&mut self, params: &[f32], eps: f32, losses: &mut [R]) -> Result<()> {
        if params.len() != self.num_params || losses.len() != self.num_params + 1 {
            return Err(Error::Config(format!(
                "nudged_losses: {} params and {} loss slots for a model of {} parameters",
                params.len(),
                losses.len(),
                self.num_params
            )));
        }
        let work = (self.num_params + 1) * self.macs_per_eval();
        let threads = if work < PARALLEL_MIN_WORK {
            1
        } else {
            self.threads
        };
        let per = losses.len().div_ceil(threads);
        let (layers, x, y, samples) = (&self.layers, &self.x, &self.y, self.samples);
        let run = |first: usize, out: &mut [R], s: &mut Scratch<R>| {
            s.params.clear();
            s.params.extend_from_slice(params);
            for (j, slot) in out.iter_mut().enumerate() {
                let e = first + j;
                if e > 0 {
                    s.params[e - 1] = params[e - 1] + eps;
                }
                *slot = loss_at(layers, x, y, samples, &s.params, &mut s.bufs);
                if e > 0 {
                    s.params[e - 1] = params[e - 1];
                }
            }
        };
        if threads == 1 {
            run(0, losses, &mut self.scratch[0]);
        } else {
            std::thread::scope(|scope| {
                for (c, (out, s)) in losses
                    .chunks_mut(per)
                    .zip(self.scratch.iter_mut())
                    .enumerate()
                {
                    scope.spawn(move || run(c * per, out, s));
                }
            });
        }
        Ok(())
    }

    fn device(&self) -> DeviceInfo {
        DeviceInfo::cpu(self.threads)
    }
}
