//! The reuse method's per-nudge changes: the twins of `shaders/reuse.wgsl` (`reuse_prepare` ↔
//! `output_terms` / `xent_series`, `reuse_dsse` / `reuse_fused` ↔ `ReusePlan::delta`),
//! `shaders/reuse_seq.wgsl` (the same numbers, one invocation per parameter) and
//! `shaders/reuse_deep.wgsl` (the full passes of later layers).

use super::forward::*;
use super::reduce::reduce_sse;
use super::*;

/// Change of one output's squared error, `(a' − a)·((a' − y) + (a − y))`.
pub(super) fn dsse_term<R: Real>(new: R, old: R, y: R) -> R {
    (new - old) * ((new - y) + (old - y))
}

/// Everything one reuse-method delta needs, shared read-only by the threads.
pub(super) struct ReusePlan<'a, R> {
    pub(super) layers: &'a [LayerSpan],
    pub(super) x: &'a [f32],
    pub(super) y: &'a [f32],
    pub(super) samples: usize,
    pub(super) loss: Loss,
    pub(super) cache: &'a Cache<R>,
    pub(super) params: &'a [f32],
    pub(super) eps: f32,
    /// Whether the lane path ([`ReusePlan::task`]) may take the items it covers (else the scalar
    /// reference, [`ReusePlan::delta`]).
    pub(super) lanes: bool,
}

/// What nudging one parameter changes: its layer, its input (`None` for a bias), its unit, and
/// the nudge `d = fl(w + eps) − w` as the float32 sum sees it.
pub(super) struct Nudge<R> {
    pub(super) l: usize,
    pub(super) input: Option<usize>,
    pub(super) u: usize,
    pub(super) d: R,
}

impl<R: Real> ReusePlan<'_, R> {
    fn cell(&self, layer: &LayerSpan, unit: usize, s: usize) -> usize {
        (layer.unit_off + unit) * self.samples + s
    }

    pub(super) fn nudge(&self, k: usize) -> Nudge<R> {
        let l = self
            .layers
            .iter()
            .rposition(|layer| layer.w_off <= k)
            .expect("k in range");
        let layer = self.layers[l];
        let (input, u) = if k >= layer.b_off {
            (None, k - layer.b_off)
        } else {
            let j = k - layer.w_off;
            (Some(j / layer.outputs), j % layer.outputs)
        };
        let w = self.params[k];
        let d = R::from_f32(w + self.eps) - R::from_f32(w);
        Nudge { l, input, u, d }
    }

    /// The nudged unit's new and old output for sample s.
    fn nudged(&self, n: &Nudge<R>, s: usize) -> (R, R) {
        let layer = &self.layers[n.l];
        let c = self.cell(layer, n.u, s);
        let z = match n.input {
            None => self.cache.z[c] + n.d,
            Some(i) => {
                let xi = if n.l == 0 {
                    R::from_f32(self.x[s * layer.inputs + i])
                } else {
                    self.cache.a[self.cell(&self.layers[n.l - 1], i, s)]
                };
                self.cache.z[c] + xi * n.d
            }
        };
        (z.activate(layer.activation), self.cache.a[c])
    }

    /// The output layer's values for sample s when unit u of hidden layer l changes by `delta`:
    /// layer l + 1 by the rank-one update `act(z[v] + delta·W[u][v])`, later layers by full passes.
    pub(super) fn outputs_after<'b>(
        &self,
        (l, u, delta, s): (usize, usize, R, usize),
        a: &'b mut Vec<R>,
        b: &'b mut Vec<R>,
    ) -> &'b [R] {
        let next = self.layers[l + 1];
        let row = &self.params[next.w_off + u * next.outputs..][..next.outputs];
        for (v, &wv) in row.iter().enumerate() {
            let c2 = self.cell(&next, v, s);
            a[v] = (self.cache.z[c2] + delta * R::from_f32(wv)).activate(next.activation);
        }
        let (mut cur, mut nxt) = (a, b);
        for deep in &self.layers[l + 2..] {
            let out = &mut nxt[..deep.outputs];
            dense(
                deep,
                (Some(&cur[..deep.inputs]), false),
                &[],
                self.params,
                out,
            );
            let bias = &self.params[deep.b_off..][..deep.outputs];
            for (o, &bv) in out.iter_mut().zip(bias) {
                *o = (*o + R::from_f32(bv)).activate(deep.activation);
            }
            std::mem::swap(&mut cur, &mut nxt);
        }
        let outputs = self.layers[self.layers.len() - 1].outputs;
        &cur[..outputs]
    }

    /// `L(params + eps·e_k) − L(params)` from the cache, in the order described in the module docs.
    pub(super) fn delta(&self, k: usize, bufs: &mut Bufs<R>) -> R {
        if self.loss == Loss::CrossEntropy {
            return self.delta_xent(k, bufs);
        }
        let b = self.samples;
        let n = self.nudge(k);
        let (l, u) = (n.l, n.u);
        let last = self.layers.len() - 1;
        let out_layer = self.layers[last];
        let outputs = out_layer.outputs;
        for s in 0..b {
            let (a_new, a_old) = self.nudged(&n, s);
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
            let out = self.outputs_after((l, u, delta, s), &mut bufs.a, &mut bufs.b);
            let mut dsse = R::ZERO;
            for (o, &a_new) in out.iter().enumerate() {
                let old = self.cache.a[self.cell(&out_layer, o, s)];
                dsse = dsse + dsse_term(a_new, old, R::from_f32(y[o]));
            }
            bufs.sse[s] = dsse;
        }
        R::mean(reduce_sse(&bufs.sse), b * outputs)
    }

    /// [`ReusePlan::delta`] for cross-entropy: per sample `xent(new logits) − xent_s` (module docs).
    fn delta_xent(&self, k: usize, bufs: &mut Bufs<R>) -> R {
        let b = self.samples;
        let n = self.nudge(k);
        let last = self.layers.len() - 1;
        let out_layer = self.layers[last];
        let outputs = out_layer.outputs;
        for s in 0..b {
            let (a_new, a_old) = self.nudged(&n, s);
            let y = &self.y[s * outputs..(s + 1) * outputs];
            if n.l + 1 == last && !self.cache.spread.is_empty() {
                let delta = a_new - a_old;
                if series_applies(delta, self.cache.spread[n.u]) {
                    let c = |i: usize| self.cache.series[(4 * n.u + i) * b + s];
                    bufs.sse[s] = series_change(delta, [c(0), c(1), c(2), c(3)]);
                    continue;
                }
            }
            let new = if n.l == last {
                // One logit moves; the others are the unperturbed pass's.
                for (o, logit) in bufs.a[..outputs].iter_mut().enumerate() {
                    *logit = self.cache.z[self.cell(&out_layer, o, s)];
                }
                bufs.a[n.u] = a_new;
                xent(&bufs.a[..outputs], y)
            } else {
                let delta = a_new - a_old;
                xent(
                    self.outputs_after((n.l, n.u, delta, s), &mut bufs.a, &mut bufs.b),
                    y,
                )
            };
            bufs.sse[s] = new - self.cache.losses[s];
        }
        R::mean(reduce_sse(&bufs.sse), b)
    }
}

/// The closed form of the output layer for the reuse method when it is the identity: a change δ of
/// hidden unit u changes output v by `t_v = δ·W[u][v]`, and the squared error by
/// `Σ_v t_v·(2(a_v − y_v) + t_v) = δ·ab[u][s] + δ²·bb[u]`, so a nudge costs O(1) per sample instead
/// of O(outputs). Sums run over v in order: `ab = Σ W[u][v]·(e + e)` with `e = a_v − y_v`, and
/// `bb = Σ W[u][v]·W[u][v]` (the `reuse_prepare` kernel does the same).
pub(super) fn output_terms<R: Real>(
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

/// Cross-entropy's series terms for an identity output layer (the `reuse_prepare` kernel does the
/// same): per sample s the softmax `p` of its kept logits ([`softmax_probs`]), then for every
/// unit u of the last hidden layer `series_terms(p, y_s, W[u])` into rows `4u..4u + 4`, and per
/// unit `spread[u] = weight_spread(W[u])`.
pub(super) fn xent_series<R: Real>(
    layers: &[LayerSpan],
    y: &[f32],
    b: usize,
    params: &[f32],
    cache: &mut Cache<R>,
) {
    let out = layers[layers.len() - 1];
    let k = out.outputs;
    let (mut z, mut p) = (vec![R::ZERO; k], vec![R::ZERO; k]);
    for u in 0..out.inputs {
        cache.spread[u] = weight_spread(&params[out.w_off + u * k..][..k]);
    }
    for s in 0..b {
        for (v, zv) in z.iter_mut().enumerate() {
            *zv = cache.z[(out.unit_off + v) * b + s];
        }
        softmax_probs(&z, &mut p);
        let t = &y[s * k..(s + 1) * k];
        for u in 0..out.inputs {
            let c = series_terms(&p, t, &params[out.w_off + u * k..][..k]);
            for (i, ci) in c.into_iter().enumerate() {
                cache.series[(4 * u + i) * b + s] = ci;
            }
        }
    }
}
