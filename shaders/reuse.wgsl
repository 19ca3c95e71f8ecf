// The reuse method for the last two layers: what a nudge changes, the closed-form output layer,
// and the per-(parameter, sample) kernels for GPUs. Assembled after reduce.wgsl.
// CPU twin: src/cpu/reuse.rs.

// What nudging parameter k changes, the same for every sample: its layer l and unit u there,
// the nudge d as the float32 sum sees it, and the cache rows the per-sample values come from.
struct Target {
    l: u32,
    u: u32,
    kind: u32,     // activation of layer l
    d: f32,
    z_row: u32,    // z of unit u, [sample]
    a_row: u32,    // a of unit u, [sample]
    x_row: u32,    // the weight's input, [sample]; NO_ROW for a bias
}

const NO_ROW: u32 = 0xffffffffu;

fn reuse_target(k: u32) -> Target {
    var l = 0u;
    while (l + 1u < chunk.num_layers && k >= layer_info(l + 1u).w_off) {
        l++;
    }
    let info = layer_info(l);
    let w = pw(k);
    // `+ zero` (a runtime 0.0) keeps the compiler from folding (w + eps) - w into eps.
    let d = (w + chunk.eps) - (w + chunk.zero);
    var u: u32;
    var x_row = NO_ROW;
    if (k >= info.b_off) {
        u = k - info.b_off;
    } else {
        let j = k - info.w_off;
        let i = j / info.n_out;
        u = j % info.n_out;
        if (l == 0u) {
            x_row = 2u * chunk.total_units + i;  // the inputs, transposed
        } else {
            x_row = chunk.total_units + layer_info(l - 1u).unit_off + i;
        }
    }
    let unit = info.unit_off + u;
    let base = chunk.cache_base;
    var x_at = NO_ROW;
    if (x_row != NO_ROW) {
        x_at = base + x_row * chunk.batch;
    }
    return Target(l, u, info.kind, d, base + unit * chunk.batch,
                  base + (chunk.total_units + unit) * chunk.batch, x_at);
}

// Unit u's nudged output for sample s: z + d for a bias, z + x * d for a weight.
fn nudged_output(t: Target, s: u32) -> f32 {
    var z: f32;
    if (t.x_row == NO_ROW) {
        z = cache[t.z_row + s] + t.d;
    } else {
        z = cache[t.z_row + s] + cache[t.x_row + s] * t.d;
    }
    return activate(z, t.kind);
}

// Sample s's change of the squared error when unit u of the last hidden layer changes by delta:
// a rank-one update of the output layer, unit by unit (no closed form).
fn output_change(u: u32, s: u32, delta: f32) -> f32 {
    let nx = layer_info(chunk.num_layers - 1u);
    let y_off = s * chunk.outputs;
    var total = 0.0;
    for (var v = 0u; v < nx.n_out; v++) {
        let unit = nx.unit_off + v;
        let a2 = activate(z_at(unit, s) + delta * pw(nx.w_off + u * nx.n_out + v), nx.kind);
        total = total + dsse_term(a2, a_at(unit, s), ys[y_off + v]);
    }
    return total;
}

// What the last two layers' change for one sample needs beyond the target: for an identity
// output layer where the unit's closed-form row (MSE: ab) or first series row (cross-entropy:
// four rows c1..c4) starts, and bb (MSE) or the unit's spread (cross-entropy), else NO_ROW.
struct Shallow {
    t: Target,
    ab_row: u32,   // NO_ROW unless the closed form or series applies
    bb: f32,
}

// Rows per unit of the closed-form sums (ab) or of the series terms (c1..c4).
fn closed_rows() -> u32 {
    return select(1u, 4u, LOSS == LOSS_XENT);
}

fn reuse_shallow_target(k: u32) -> Shallow {
    let t = reuse_target(k);
    if (chunk.ab_off != 0u && t.l + 2u == chunk.num_layers) {
        let ab = chunk.cache_base + chunk.ab_off;
        let rows = closed_rows() * chunk.batch;
        let hidden = layer_info(t.l + 1u).n_in;
        return Shallow(t, ab + t.u * rows, cache[ab + hidden * rows + t.u]);
    }
    return Shallow(t, NO_ROW, 0.0);
}

// Cross-entropy's series for a unit of the last hidden layer (src/xent.rs): its terms c1..c4 for
// one sample, whether it applies, and its value delta * (c1 + delta * (c2 + delta * (c3 +
// delta * c4))), innermost first.
struct Series {
    on: bool,      // identity output layer: the terms below are the unit's
    spread: f32,   // max_k W[u][k] - min_k W[u][k]
    c: vec4<f32>,
}

fn series_terms_at(row: u32, s: u32) -> vec4<f32> {
    let b = chunk.batch;
    return vec4<f32>(cache[row + s], cache[row + b + s], cache[row + 2u * b + s], cache[row + 3u * b + s]);
}

// src/xent.rs series_applies; off while a loop burn is set (src/gpu/plan.rs ChunkUniform::burn_kernel).
fn series_applies(delta: f32, spread: f32) -> bool {
    return chunk.burn_kernel == 0u && abs(delta) * spread <= XENT_SERIES_MAX_X;
}

fn series_change(delta: f32, c: vec4<f32>) -> f32 {
    var h = c.z + delta * c.w;
    h = c.y + delta * h;
    h = c.x + delta * h;
    return delta * h;
}

// Cross-entropy's change for sample s: the nudged logits' loss less the kept one. An output
// parameter moves its logit to a_new; a unit of the last hidden layer moves every logit by
// delta = a_new - a_old times its outgoing weight, or takes the series where it applies
// (src/cpu/reuse.rs delta_xent). llvmpipe runs both arms whenever the lanes of a SIMD group disagree,
// and the exact arm's loops once each (lanes off) when every lane took the series.
fn xent_change(l: u32, u: u32, s: u32, a_new: f32, a_old: f32, series: Series) -> f32 {
    var n = LogitNudge(u, NO_LOGIT_ROW, a_new);
    if (l + 2u == chunk.num_layers) {
        let delta = a_new - a_old;
        if (series.on && series_applies(delta, series.spread)) {
            return series_change(delta, series.c);
        }
        let nx = layer_info(l + 1u);
        n = LogitNudge(u, nx.w_off + u * nx.n_out, delta);
    }
    return xent_logits(s, n) - cache[loss_row() + s];
}

// The change of sample s's loss when the shallow target's parameter (of the last two layers) is
// nudged.
fn reuse_shallow(h: Shallow, s: u32) -> f32 {
    let t = h.t;
    let a_new = nudged_output(t, s);
    let a_old = cache[t.a_row + s];
    if (LOSS == LOSS_XENT) {
        var series = Series(false, 0.0, vec4<f32>());
        if (h.ab_row != NO_ROW) {
            series = Series(true, h.bb, series_terms_at(h.ab_row, s));
        }
        return xent_change(t.l, t.u, s, a_new, a_old, series);
    }
    let y_off = s * chunk.outputs;
    if (t.l + 1u == chunk.num_layers) {
        return dsse_term(a_new, a_old, ys[y_off + t.u]);
    }
    let delta = a_new - a_old;
    if (h.ab_row != NO_ROW) {
        // Identity output layer: the closed form of reuse_prepare, O(1) instead of O(outputs).
        return delta * (cache[h.ab_row + s] + delta * h.bb);
    }
    return output_change(t.u, s, delta);
}

// Cross-entropy's part of reuse_prepare for (u, s): src/xent.rs softmax_probs of the sample's
// kept logits (p recomputed in each loop that needs it: the same numbers), series_terms into the
// unit's four rows, and (s = 0) weight_spread; every loop over the outputs ascending.
fn prepare_xent(u: u32, s: u32) {
    let nx = layer_info(chunk.num_layers - 1u);
    let row = nx.w_off + u * nx.n_out;
    let y_off = s * chunk.outputs;
    var m = z_at(nx.unit_off, s);
    for (var k = 1u; k < nx.n_out; k++) {
        m = xent_max_step(m, z_at(nx.unit_off + k, s));
    }
    var sum = 0.0;
    for (var k = 0u; k < nx.n_out; k++) {
        sum = xent_sum_step(sum, z_at(nx.unit_off + k, s), m);
    }
    let ls = ln_f32(sum);
    var total = 0.0;
    var k1 = 0.0;
    var wt = 0.0;
    for (var k = 0u; k < nx.n_out; k++) {
        let p = exp_f32((z_at(nx.unit_off + k, s) - m) - ls);
        let t = ys[y_off + k];
        let w = pw(row + k);
        total = total + t;
        k1 = k1 + p * w;
        wt = wt + t * w;
    }
    var m2 = 0.0;
    var m3 = 0.0;
    var m4 = 0.0;
    for (var k = 0u; k < nx.n_out; k++) {
        let p = exp_f32((z_at(nx.unit_off + k, s) - m) - ls);
        let d = pw(row + k) - k1;
        let q = d * d;
        m2 = m2 + p * q;
        m3 = m3 + p * (q * d);
        m4 = m4 + p * (q * q);
    }
    let k4 = m4 - (m2 * m2) * 3.0;
    let at = chunk.cache_base + chunk.ab_off + 4u * u * chunk.batch + s;
    cache[at] = total * k1 - wt;
    cache[at + chunk.batch] = (total * m2) * 0.5;
    cache[at + 2u * chunk.batch] = (total * m3) * XENT_SIXTH;
    cache[at + 3u * chunk.batch] = (total * k4) * XENT_TWENTYFOURTH;
    if (s == 0u) {
        var hi = pw(row);
        var lo = hi;
        for (var k = 1u; k < nx.n_out; k++) {
            let w = pw(row + k);
            hi = xent_max_step(hi, w);
            if (w < lo) {
                lo = w;
            }
        }
        cache[chunk.cache_base + chunk.ab_off + 4u * nx.n_in * chunk.batch + u] = hi - lo;
    }
}

// Reuse with an identity output layer, after forward_store: one invocation per (hidden unit u of
// the last hidden layer, sample s). A change d of u changes output v by t = d * W[u][v] and the
// squared error by sum_v t * (2 (a_v - y_v) + t) = d * ab[u][s] + d^2 * bb[u], with
// ab = sum_v W[u][v] * (e + e), e = a_v - y_v, and bb = sum_v W[u][v]^2 (invocations with s = 0).
// Cross-entropy: prepare_xent.
@compute @workgroup_size(WG_SIZE)
fn reuse_prepare(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let local = (wg.x + wg.y * chunk.grid_x) * WG_SIZE + lid;
    if (local >= chunk.eval_count * chunk.batch) {
        return;
    }
    let u = chunk.eval_base + local / chunk.batch;
    let s = local % chunk.batch;
    if (LOSS == LOSS_XENT) {
        prepare_xent(u, s);
        loop_guard(K_REUSE_PREPARE);
        return;
    }
    let out_layer = layer_info(chunk.num_layers - 1u);
    let ab = chunk.cache_base + chunk.ab_off;
    let row = out_layer.w_off + u * out_layer.n_out;
    var acc = 0.0;
    for (var v = 0u; v < out_layer.n_out; v++) {
        let e = a_at(out_layer.unit_off + v, s) - ys[s * chunk.outputs + v];
        acc = acc + pw(row + v) * (e + e);
    }
    cache[ab + u * chunk.batch + s] = acc;
    if (s == 0u) {
        var sq = 0.0;
        for (var v = 0u; v < out_layer.n_out; v++) {
            sq = sq + pw(row + v) * pw(row + v);
        }
        cache[ab + out_layer.n_in * chunk.batch + u] = sq;
    }
    loop_guard(K_REUSE_PREPARE);
}

@compute @workgroup_size(WG_SIZE)
fn reuse_dsse(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let item = (wg.x + wg.y * chunk.grid_x) * WG_SIZE + lid;
    if (item >= chunk.eval_count * chunk.batch) {
        return;
    }
    let k = chunk.eval_base - 1u + item / chunk.batch;
    sse[item] = reuse_shallow(reuse_shallow_target(k), item % chunk.batch);
    loop_guard(K_REUSE_DSSE);
}

// reuse_dsse and reduce_losses in one, for hardware GPUs: a workgroup per parameter whose lane t
// handles samples t, t + 256, ... and keeps their sum in a register (reduce_losses' order), so
// the per-sample changes never go through memory.
@compute @workgroup_size(REDUCE_LANES)
fn reuse_fused(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e_local = wg.x + wg.y * chunk.grid_x;
    if (e_local >= chunk.eval_count) {
        return;
    }
    let h = reuse_shallow_target(chunk.eval_base - 1u + e_local);
    var acc = 0.0;
    for (var s = lid; s < chunk.batch; s += REDUCE_LANES) {
        acc = acc + reuse_shallow(h, s);
    }
    let total = tree_sum(lid, acc);
    if (lid == 0u) {
        out[chunk.out_base + chunk.eval_base + e_local] = total * chunk.inv_count;
    }
    loop_guard(K_REUSE_FUSED);
}
