//! The forward pass and the per-sample losses: the twins of `shaders/forward.wgsl` (`dense` ↔ the
//! dense loop of `nudged_sse` / `forward_store` / `forward_tile`, `sse` ↔ the squared-error tail,
//! `xent` ↔ the cross-entropy tail, `loss_at` ↔ a whole nudged evaluation).

use super::reduce::reduce_sse;
use super::*;

/// `out[u] = Σ_i in[i]·W[i][u]` in order of i, `in` being `x` for the first layer.
///
/// `skip_zero` (allowed when every weight of the layer is finite) skips the inputs that are
/// exactly 0: their terms `in[i]·W[i][u]` are ±0, and a ±0 added to a sum that started at +0
/// changes nothing (such a sum is never −0, and `v + ±0 = v` for every other v).
pub(super) fn dense<R: Real>(
    layer: &LayerSpan,
    (input, skip_zero): (Option<&[R]>, bool),
    x: &[f32],
    p: &[f32],
    out: &mut [R],
) {
    out.fill(R::ZERO);
    // i-outer, u-inner: each unit still accumulates over i in order, as the shader does.
    for i in 0..layer.inputs {
        let xi = match input {
            None => R::from_f32(x[i]),
            Some(h) => h[i],
        };
        if skip_zero && xi == R::ZERO {
            continue;
        }
        let row = &p[layer.w_off + i * layer.outputs..][..layer.outputs];
        for (o, &w) in out.iter_mut().zip(row) {
            *o = *o + xi * R::from_f32(w);
        }
    }
}

pub(super) fn forward<'a, R: Real>(
    layers: &[LayerSpan],
    x: &[f32],
    p: &[f32],
    a: &'a mut Vec<R>,
    b: &'a mut Vec<R>,
) -> &'a [R] {
    forward_each(layers, (x, &[]), p, (a, b), |_, _, _, _| {})
}

/// The forward pass of one sample; `seen(layer, unit, z, a)` sees every pre-activation and output.
/// Layer l skips zero inputs where `finite[l]` says its weights are all finite (see [`dense`]).
pub(super) fn forward_each<'a, R: Real>(
    layers: &[LayerSpan],
    (x, finite): (&[f32], &[bool]),
    p: &[f32],
    (a, b): (&'a mut Vec<R>, &'a mut Vec<R>),
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
        let skip = finite.get(l).copied().unwrap_or(false);
        dense(layer, (input, skip), x, p, out);
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

/// One sample's loss: its squared error or its cross-entropy.
pub(super) fn sample_loss<R: Real>(loss: Loss, pred: &[R], target: &[f32]) -> R {
    match loss {
        Loss::Mse => sse(pred, target),
        Loss::CrossEntropy => xent(pred, target),
    }
}

/// [`crate::xent::softmax_xent_soft`] of logits `z` against the float32 targets as probabilities,
/// in its order (the kernels' `xent_logits` and friends follow it).
pub(super) fn xent<R: Real>(z: &[R], target: &[f32]) -> R {
    let m = crate::xent::xent_max(z);
    let ls = crate::xent::xent_sum_exp(z, m).ln_real();
    z.iter().zip(target).fold(R::ZERO, |acc, (&zj, &pj)| {
        acc + crate::xent::xent_soft_term(m, ls, zj, R::from_f32(pj))
    })
}

pub(super) fn sse<R: Real>(pred: &[R], target: &[f32]) -> R {
    let mut total = R::ZERO;
    for (&p, &t) in pred.iter().zip(target) {
        let d = p - R::from_f32(t);
        total = total + d * d;
    }
    total
}

/// The loss at `params` over `(x, y, samples)`.
pub(super) fn loss_at<R: Real>(
    layers: &[LayerSpan],
    (x, y, samples): (&[f32], &[f32], usize),
    loss: Loss,
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
        s.sse[i] = sample_loss(loss, pred, &y[i * outputs..(i + 1) * outputs]);
    }
    R::mean(reduce_sse(&s.sse), loss.mean_count(samples, outputs))
}
