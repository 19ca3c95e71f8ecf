// The reuse method for CPU adapters (llvmpipe): one invocation per parameter or SEQ_R weights,
// specialised per part by override constants. Assembled after reuse.wgsl.
// CPU twin: src/cpu/reuse.rs.

// reuse_dsse and reduce_seq in one, for CPU adapters: one invocation per parameter (or per
// SEQ_R weights of one unit) sums every sample's change in reduce_losses' order, with no barrier
// and nothing written per sample. Mesa 22's llvmpipe turns every load whose address is not a
// compile-time constant into a loop over the SIMD lanes, so the kernel is shaped to load less:
// a pipeline per part of the last two layers, specialised by the constants below (llvmpipe runs
// both sides of a branch, so each pipeline holds only its part's code), and an invocation nudges
// SEQ_R weights of the same unit, whose z, a and closed-form sum for a sample are loaded once for
// all of them (under MSE's closed form, SEQ_R inputs of several units: reuse_seq_units).
const PART_HIDDEN_WEIGHTS: u32 = 0u;
const PART_HIDDEN_BIASES: u32 = 1u;
const PART_OUTPUT_WEIGHTS: u32 = 2u;
const PART_OUTPUT_BIASES: u32 = 3u;
const SEQ_WG: u32 = 16u;
const SEQ_MAX_R: u32 = 8u;
override SEQ_PART: u32 = 0u;
override SEQ_CLOSED: bool = false;      // hidden parts: identity output layer, closed form
override SEQ_FROM_INPUTS: bool = false; // weights of the first layer: inputs read from xs
override SEQ_R: u32 = 1u;               // weights per invocation (1 for biases), <= SEQ_MAX_R
override SEQ_KIND: u32 = 0u;            // activation of the part's layer

// activate(z, SEQ_KIND) with the kind tested where the branch is: after the overrides each test
// is a literal, so src/gpu/specialise.rs drops the other activations from the pipeline (a call to
// activate passes the kind as an argument, and every arm of its switch reached the driver: on
// llvmpipe tens of milliseconds of compilation per pipeline).
fn seq_activate(z: f32) -> f32 {
    if (SEQ_KIND == ACT_SIGMOID) {
        return sigmoid_f32(z);
    }
    if (SEQ_KIND == ACT_TANH) {
        return tanh_f32(z);
    }
    if (SEQ_KIND == ACT_RELU) {
        return relu_f32(z);
    }
    return z;
}

// tree_add for four accumulators at once (reduce.wgsl's Tree, lane by lane): an invocation's R
// trees share their branches, and one chain of vec4 adds is a quarter of the code the driver
// compiles for R unrolled chains (f32 + per lane, the same bits).
struct Tree4 {
    r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32>,
    r4: vec4<f32>, r5: vec4<f32>, r6: vec4<f32>, r7: vec4<f32>,
    total: vec4<f32>,
}

fn tree_add4(t_in: Tree4, i: u32, lane: vec4<f32>) -> Tree4 {
    var t = t_in;
    var v = lane;
    if ((i & 1u) == 0u) { t.r0 = v; } else { v = t.r0 + v;
    if ((i & 2u) == 0u) { t.r1 = v; } else { v = t.r1 + v;
    if ((i & 4u) == 0u) { t.r2 = v; } else { v = t.r2 + v;
    if ((i & 8u) == 0u) { t.r3 = v; } else { v = t.r3 + v;
    if ((i & 16u) == 0u) { t.r4 = v; } else { v = t.r4 + v;
    if ((i & 32u) == 0u) { t.r5 = v; } else { v = t.r5 + v;
    if ((i & 64u) == 0u) { t.r6 = v; } else { v = t.r6 + v;
    if ((i & 128u) == 0u) { t.r7 = v; } else { v = t.r7 + v;
    }}}}}}}}
    t.total = v;
    return t;
}

// Item n's total of the two four-lane trees.
fn tree4_total(lo: Tree4, hi: Tree4, n: u32) -> f32 {
    return select(hi.total[n & 3u], lo.total[n & 3u], n < 4u);
}

// What every parameter of an invocation shares: the unit and its rows.
struct SeqUnit {
    u: u32,
    kind: u32,     // activation of the unit's layer
    z_row: u32,
    a_row: u32,
    ab_row: u32,   // closed form: ab's row (MSE) or the first of the series rows (cross-entropy)
    bb: f32,       // closed form: bb (MSE) or the unit's spread (cross-entropy)
}

// Sample s's change of the squared error for a nudge that moves unit u's z from z_old to z_new.
// With the closed form, ab is the sample's closed-form sum (MSE) and c its series terms
// (cross-entropy).
fn seq_change(t: SeqUnit, s: u32, z_new: f32, a_old: f32, ab: f32, c: vec4<f32>) -> f32 {
    // The runtime select (t.kind always equals SEQ_KIND) is load-bearing: fed straight from the
    // constant-kind activation, the lines below compile differently under Mesa 22 and the result
    // no longer matches src/cpu/ bit for bit (measured; tests/gpu.rs catches it).
    let a_new = select(seq_activate(z_new), z_new, t.kind != SEQ_KIND);
    if (LOSS == LOSS_XENT) {
        var l = chunk.num_layers - 1u;
        if (SEQ_PART < PART_OUTPUT_WEIGHTS) {
            l = chunk.num_layers - 2u;
        }
        return xent_change(l, t.u, s, a_new, a_old, Series(SEQ_CLOSED, t.bb, c));
    }
    if (SEQ_PART >= PART_OUTPUT_WEIGHTS) {
        return dsse_term(a_new, a_old, ys[s * chunk.outputs + t.u]);
    }
    let delta = a_new - a_old;
    if (SEQ_CLOSED) {
        return delta * (ab + delta * t.bb);
    }
    return output_change(t.u, s, delta);
}

// The unit path: the last hidden layer's weights under MSE's closed form, where every item is
// a few operations and the loads dominate. Inside a loop Mesa 22's llvmpipe loads lane by lane
// (a scalar loop with a bounds check; measured, one load costs about what one item's sigmoid
// does), uniform address or not, so what counts is loads per item: an invocation nudges R inputs of U units, loading x
// once for its units and z, a and the closed-form sum once for its inputs, R + 3 U loads per
// sample for R U items. R U stays within SEQ_ITEMS: Mesa unrolls the item loop (its arrays in
// registers) up to about that many sigmoids and keeps longer ones as loops, arrays in memory
// (measured: 12 sigmoids ran slower than 8, and 8 tanh stayed a loop). src/gpu/kernels.rs seq_unit_shape plans the same R, U.
const SEQ_ITEMS: u32 = 8u;
const SEQ_UNIT_MAX_R: u32 = 4u;

// An override, not a function, so that the test in reuse_seq is a literal after the overrides
// and each pipeline holds one of the two paths.
override SEQ_UNITS: bool = SEQ_PART == PART_HIDDEN_WEIGHTS && SEQ_CLOSED && LOSS == LOSS_MSE;

fn reuse_seq_units(g: u32, lid: u32) {
    let info = layer_info(chunk.num_layers - 2u);
    let b = chunk.batch;
    let units = chunk.eval_count / info.n_in;
    // R inputs of U units per invocation; lane j of a unit block takes inputs j, j + lanes, ...
    // tanh_f32 is about twice sigmoid_f32's code: half the items keep the item loop unrolled.
    let items = select(SEQ_ITEMS, SEQ_ITEMS / 2u, SEQ_KIND == ACT_TANH);
    let nr = min(SEQ_R, SEQ_UNIT_MAX_R);
    let nu = max(items / nr, 1u);
    let lanes = (info.n_in + nr - 1u) / nr;
    let blocks = (lanes + SEQ_WG - 1u) / SEQ_WG;
    let j = (g % blocks) * SEQ_WG + lid;
    let ub = g / blocks;
    if (ub * nu >= units || j >= lanes) {
        return;
    }
    // A chunk holds whole units (reuse_seq below); this block's are u_first.. (before u_end).
    let u_first = (chunk.eval_base - 1u - info.w_off) / info.n_in + ub * nu;
    let u_end = (chunk.eval_base - 1u - info.w_off) / info.n_in + units;
    let ab = chunk.cache_base + chunk.ab_off;
    // Every loop below runs a constant count with no loop inside, so Mesa unrolls it and the
    // arrays stay in registers (a loop holding a loop is kept, and its arrays go to memory).
    var z_row: array<u32, SEQ_ITEMS>;
    var a_row: array<u32, SEQ_ITEMS>;
    var ab_row: array<u32, SEQ_ITEMS>;
    var bb: array<f32, SEQ_ITEMS>;
    for (var m = 0u; m < nu; m++) {
        let u = min(u_first + m, u_end - 1u);
        let unit = info.unit_off + u;
        z_row[m] = chunk.cache_base + unit * b;
        a_row[m] = chunk.cache_base + (chunk.total_units + unit) * b;
        ab_row[m] = ab + u * b;
        bb[m] = cache[ab + info.n_out * b + u];
    }
    var x_at: array<u32, SEQ_UNIT_MAX_R>;
    var x_stride = 1u;
    for (var r = 0u; r < nr; r++) {
        let ic = min(j + r * lanes, info.n_in - 1u);
        if (SEQ_FROM_INPUTS) {
            x_at[r] = ic;
            x_stride = info.n_in;
        } else {
            let prev = layer_info(max(chunk.num_layers - 2u, 1u) - 1u);
            x_at[r] = chunk.cache_base + (chunk.total_units + prev.unit_off + ic) * b;
        }
    }
    // Item n: input r = n / nu, unit m = n % nu; the same loops and tree as reuse_seq below.
    var d: array<f32, SEQ_ITEMS>;
    for (var n = 0u; n < nr * nu; n++) {
        let ic = min(j + (n / nu) * lanes, info.n_in - 1u);
        let w = pw(info.w_off + ic * info.n_out + min(u_first + n % nu, u_end - 1u));
        d[n] = (w + chunk.eps) - (w + chunk.zero);  // `+ zero` as in reuse_target
    }
    let kind = info.kind;
    let width = tree_width();
    var lo: Tree4;
    var hi: Tree4;
    var acc: array<f32, SEQ_ITEMS>;
    var z: array<f32, SEQ_ITEMS>;
    var a_old: array<f32, SEQ_ITEMS>;
    var ab_s: array<f32, SEQ_ITEMS>;
    var x: array<f32, SEQ_UNIT_MAX_R>;
    for (var i = 0u; i < width; i++) {
        for (var n = 0u; n < nr * nu; n++) {
            acc[n] = 0.0;
        }
        for (var s = tree_lane(i, width); s < b; s += REDUCE_LANES) {
            for (var m = 0u; m < nu; m++) {
                z[m] = cache[z_row[m] + s];
                a_old[m] = cache[a_row[m] + s];
                ab_s[m] = cache[ab_row[m] + s];
            }
            for (var r = 0u; r < nr; r++) {
                if (SEQ_FROM_INPUTS) {
                    x[r] = xs[x_at[r] + s * x_stride];
                } else {
                    x[r] = cache[x_at[r] + s];
                }
            }
            for (var n = 0u; n < nr * nu; n++) {
                let m = n % nu;
                let z_new = z[m] + x[n / nu] * d[n];
                // The runtime select as in seq_change (load-bearing under Mesa 22).
                let a_new = select(seq_activate(z_new), z_new, kind != SEQ_KIND);
                let delta = a_new - a_old[m];
                acc[n] = acc[n] + delta * (ab_s[m] + delta * bb[m]);
            }
        }
        lo = tree_add4(lo, i, vec4<f32>(acc[0], acc[1], acc[2], acc[3]));
        if (nr * nu > 4u) {
            hi = tree_add4(hi, i, vec4<f32>(acc[4], acc[5], acc[6], acc[7]));
        }
    }
    for (var n = 0u; n < nr * nu; n++) {
        let i = j + (n / nu) * lanes;
        let u = u_first + n % nu;
        if (i < info.n_in && u < u_end) {
            out[chunk.out_base + 1u + info.w_off + i * info.n_out + u] = tree4_total(lo, hi, n) * chunk.inv_count;
        }
    }
}

@compute @workgroup_size(SEQ_WG)
fn reuse_seq(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    if (SEQ_UNITS) {
        reuse_seq_units(wg.x + wg.y * chunk.grid_x, lid);
        loop_guard(K_REUSE_SEQ + SEQ_PART);
        return;
    }
    let weights = SEQ_PART == PART_HIDDEN_WEIGHTS || SEQ_PART == PART_OUTPUT_WEIGHTS;
    var l = chunk.num_layers - 1u;
    if (SEQ_PART < PART_OUTPUT_WEIGHTS) {
        l = chunk.num_layers - 2u;
    }
    let info = layer_info(l);
    let g = wg.x + wg.y * chunk.grid_x;
    let first = chunk.eval_base - 1u;  // the chunk's first parameter
    // Weights: a chunk holds whole units with all their inputs, the first being unit
    // (first - w_off) / n_in (chunks count n_in slots per unit); lane j of a unit nudges inputs
    // j, j + lanes, ..., SEQ_R of them. Biases: one per invocation.
    let lanes = (info.n_in + SEQ_R - 1u) / SEQ_R;
    let blocks = (lanes + SEQ_WG - 1u) / SEQ_WG;
    var t: SeqUnit;
    var k: array<u32, SEQ_MAX_R>;
    var d: array<f32, SEQ_MAX_R>;
    var x_at: array<u32, SEQ_MAX_R>;
    var valid: array<bool, SEQ_MAX_R>;
    var x_stride = 0u;
    if (weights) {
        let j = (g % blocks) * SEQ_WG + lid;
        if (g / blocks >= chunk.eval_count / info.n_in || j >= lanes) {
            return;
        }
        t.u = (first - info.w_off) / info.n_in + g / blocks;
        for (var r = 0u; r < SEQ_R; r++) {
            let i = j + r * lanes;
            valid[r] = i < info.n_in;
            let ic = min(i, info.n_in - 1u);
            k[r] = info.w_off + ic * info.n_out + t.u;
            if (SEQ_FROM_INPUTS) {
                x_at[r] = ic;
                x_stride = info.n_in;
            } else {
                let prev = layer_info(max(l, 1u) - 1u);
                x_at[r] = chunk.cache_base + (chunk.total_units + prev.unit_off + ic) * chunk.batch;
                x_stride = 1u;
            }
        }
    } else {
        let e = g * SEQ_WG + lid;
        if (e >= chunk.eval_count) {
            return;
        }
        k[0] = first + e;
        valid[0] = true;
        t.u = k[0] - info.b_off;
    }
    for (var r = 0u; r < SEQ_R; r++) {
        let w = pw(k[r]);
        // `+ zero` as in reuse_target.
        d[r] = (w + chunk.eps) - (w + chunk.zero);
    }
    let unit = info.unit_off + t.u;
    t.kind = info.kind;
    t.z_row = chunk.cache_base + unit * chunk.batch;
    t.a_row = chunk.cache_base + (chunk.total_units + unit) * chunk.batch;
    if (SEQ_CLOSED) {
        let ab = chunk.cache_base + chunk.ab_off;
        let rows = closed_rows() * chunk.batch;
        t.ab_row = ab + t.u * rows;
        t.bb = cache[ab + info.n_out * rows + t.u];
    }
    let width = tree_width();
    var lo: Tree4;
    var hi: Tree4;
    var acc: array<f32, SEQ_MAX_R>;
    for (var i = 0u; i < width; i++) {
        for (var r = 0u; r < SEQ_R; r++) {
            acc[r] = 0.0;
        }
        for (var s = tree_lane(i, width); s < chunk.batch; s += REDUCE_LANES) {
            let z = cache[t.z_row + s];
            let a_old = cache[t.a_row + s];
            var ab = 0.0;
            var c = vec4<f32>();
            if (SEQ_CLOSED) {
                if (LOSS == LOSS_XENT) {
                    c = series_terms_at(t.ab_row, s);
                } else {
                    ab = cache[t.ab_row + s];
                }
            }
            for (var r = 0u; r < SEQ_R; r++) {
                var z_new: f32;
                if (weights) {
                    var x: f32;
                    if (SEQ_FROM_INPUTS) {
                        x = xs[x_at[r] + s * x_stride];
                    } else {
                        x = cache[x_at[r] + s];
                    }
                    z_new = z + x * d[r];
                } else {
                    z_new = z + d[r];
                }
                acc[r] = acc[r] + seq_change(t, s, z_new, a_old, ab, c);
            }
        }
        lo = tree_add4(lo, i, vec4<f32>(acc[0], acc[1], acc[2], acc[3]));
        if (SEQ_R > 4u) {
            hi = tree_add4(hi, i, vec4<f32>(acc[4], acc[5], acc[6], acc[7]));
        }
    }
    for (var r = 0u; r < SEQ_R; r++) {
        if (valid[r]) {
            out[chunk.out_base + 1u + k[r]] = tree4_total(lo, hi, r) * chunk.inv_count;
        }
    }
    loop_guard(K_REUSE_SEQ + SEQ_PART);
}
