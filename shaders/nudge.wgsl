// Nudged losses on the GPU. Evaluation slot e = 0 is the unperturbed network; slot e = k + 1
// belongs to parameter k. Summation orders are the contract with src/cpu.rs, which follows them
// line for line (see its module docs).
//
// A step may hold several runs (a sweep) and several coordinate offsets (central and Richardson
// differences): each chunk belongs to one run and one offset, and its uniform says where that
// run's parameters, outputs and reuse cache start (param_base, out_base, cache_base).
//
// Naive method (the book), per chunk of slots:
//   nudged_sse     one workgroup per (slot, sample): the forward pass of that sample with that nudge,
//                  units spread over the workgroup, activations in workgroup memory -> squared error.
//   reduce_losses  one workgroup per slot: strided lanes + binary tree over samples, x 1/(B*outputs).
//   reduce_seq     the same sum, one invocation per slot (no barriers: far cheaper on llvmpipe),
//                  used up to SEQ_REDUCE_MAX_BATCH samples.
//   spsa_sse       nudged_sse for SPSA: slot 1 + d moves every parameter by +-eps times direction
//                  d / 2, regenerated from the run's seed (shaders/rng.wgsl), never stored.
// Reuse method:
//   forward_store  one workgroup per sample: the unperturbed pass, keeping every z and a in `cache`.
//   reuse_prepare  identity output layer: per (last hidden unit, sample) the sums that make the
//                  output layer's change closed-form (see below), once per step.
//   reuse_dsse     one invocation per (parameter, sample), parameters of the last two layers: the
//                  nudged unit, a rank-one update of the next layer (closed-form for an identity
//                  output layer), the change of the squared error.
//   reuse_deep     one workgroup per (parameter, sample), parameters of earlier layers: as above,
//                  then full forward passes of the later layers in workgroup memory.
//   reduce_losses  as above, so slot k + 1 holds L_k - L directly.
//   reuse_fused    reuse_dsse and its reduction in one workgroup per parameter (hardware GPUs).
// Resident loop:
//   update         one invocation per parameter: next = p - (delta / eps) * lr, the host's float32 rule.
//   fused_epochs   tiny models (naive method): one workgroup runs many whole epochs (every nudged
//                  forward pass, the sums, the update) in one dispatch, parameters ping-ponging in
//                  `next` and each epoch's loss kept in `cache`; the same arithmetic, in one thread
//                  per (slot, sample) instead of one workgroup.
//
// No invocation loops more than (units per invocation) x (layer inputs) times, far below llvmpipe's
// silent cap of 65,535 loop iterations per invocation (src/gpu/evaluator.rs checks the bound).
// Prepended at load time: shaders/math.wgsl (activate, exp_f32, ...) and shaders/rng.wgsl
// (direction).

// Shared with src/gpu/evaluator.rs (checked by tests/shaders.rs).
const WG_SIZE: u32 = 64u;
const REDUCE_WG: u32 = 256u;
const MAX_WIDTH: u32 = 2048u;
const LAYER_WORDS: u32 = 8u;
const NO_NUDGE: u32 = 0xffffffffu;
const NO_DIR: u32 = 0xffffffffu;
const METHOD_NAIVE: u32 = 0u;
const FUSED_MAX_WIDTH: u32 = 32u;
// Few invocations: llvmpipe pays per invocation group at every barrier, and tiny models have
// little to spread.
const FUSED_WG: u32 = 16u;

// One per dispatch group, at a dynamic offset. Layout mirrored by ChunkUniform in Rust.
struct Chunk {
    num_layers: u32,
    batch: u32,
    eval_base: u32,      // first slot of this chunk (0 = baseline, k + 1 = parameter k)
    eval_count: u32,     // slots in this chunk
    grid_x: u32,         // workgroups along x of the chunk's main dispatch
    reduce_grid_x: u32,  // workgroups along x of its reduce_losses dispatch
    outputs: u32,        // width of the last layer
    total_units: u32,    // sum of all layer widths (cache stride)
    num_params: u32,
    method: u32,
    eps: f32,
    lr: f32,
    inv_count: f32,      // 1 / (batch * outputs), rounded on the host
    zero: f32,           // always 0.0; see reuse_nudge
    param_base: u32,     // this chunk's run: its parameters start at params[param_base]
    out_base: u32,       // slot e of this chunk goes to out[out_base + e]
    cache_base: u32,     // the run's reuse cache starts at cache[cache_base]
    seed_lo: u32,        // SPSA: the run's seed, the step, the distribution of the directions
    seed_hi: u32,
    step: u32,
    dist: u32,
    ab_off: u32,         // reuse, identity output layer: the closed-form sums in the run's cache; 0: none
}

@group(0) @binding(0) var<uniform> chunk: Chunk;
@group(0) @binding(1) var<storage, read> params: array<f32>;
// Per layer LAYER_WORDS words: inputs, outputs, weight offset, activation, first unit, bias offset.
@group(0) @binding(2) var<storage, read> layers: array<u32>;
@group(0) @binding(3) var<storage, read> xs: array<f32>;      // [batch][inputs]
@group(0) @binding(4) var<storage, read> ys: array<f32>;      // [batch][outputs]
@group(0) @binding(5) var<storage, read_write> sse: array<f32>;    // [slot in chunk][batch]
@group(0) @binding(6) var<storage, read_write> out: array<f32>;    // per run: L, then L_k or L_k - L
// Reuse cache: z at [unit][batch], a at [total_units + unit][batch], then the inputs transposed,
// x at [2 * total_units + input][batch] (written once by the host).
@group(0) @binding(7) var<storage, read_write> cache: array<f32>;
@group(0) @binding(8) var<storage, read_write> next: array<f32>;   // resident loop: updated params

// Two halves: layer l writes half l % 2 and reads the other.
var<workgroup> acts: array<f32, 4096>;
var<workgroup> lanes: array<f32, 256>;

struct LayerInfo {
    n_in: u32,
    n_out: u32,
    w_off: u32,
    kind: u32,
    unit_off: u32,
    b_off: u32,
}

fn layer_info(l: u32) -> LayerInfo {
    let o = LAYER_WORDS * l;
    return LayerInfo(layers[o], layers[o + 1u], layers[o + 2u], layers[o + 3u], layers[o + 4u], layers[o + 5u]);
}

fn z_at(unit: u32, s: u32) -> f32 {
    return cache[chunk.cache_base + unit * chunk.batch + s];
}

fn a_at(unit: u32, s: u32) -> f32 {
    return cache[chunk.cache_base + (chunk.total_units + unit) * chunk.batch + s];
}

// Parameter j of this chunk's run.
fn pw(j: u32) -> f32 {
    return params[chunk.param_base + j];
}

// Parameter j as evaluation (nudge, dir) sees it: moved by eps if j == nudge; or, for an SPSA
// evaluation dir != NO_DIR, moved by +eps (dir even) or -eps (dir odd) times component j of
// direction dir / 2. Callers pass constants for what they do not use, which the compiler folds.
fn param(j: u32, nudge: u32, dir: u32) -> f32 {
    let w = pw(j);
    if (dir != NO_DIR) {
        let h = select(-chunk.eps, chunk.eps, (dir & 1u) == 0u);
        let seed = vec2<u32>(chunk.seed_lo, chunk.seed_hi);
        return w + h * direction(seed, chunk.step, dir >> 1u, j, chunk.dist);
    }
    return select(w, w + chunk.eps, j == nudge);
}

// Change of one output's squared error, (a' - a) * ((a' - y) + (a - y)).
fn dsse_term(a_new: f32, a_old: f32, y: f32) -> f32 {
    return (a_new - a_old) * ((a_new - y) + (a_old - y));
}

// The forward pass of sample s with parameter `nudge` moved by eps (NO_NUDGE: none), or along
// SPSA evaluation `dir` (NO_DIR: none), spread over the workgroup; `store` keeps z and a in the
// cache. Returns (in invocation 0) the squared error.
fn forward_sample(s: u32, nudge: u32, dir: u32, lid: u32, store: bool) -> f32 {
    for (var l = 0u; l < chunk.num_layers; l++) {
        let info = layer_info(l);
        let dst = (l % 2u) * MAX_WIDTH;
        let src = MAX_WIDTH - dst;
        for (var u = lid; u < info.n_out; u += WG_SIZE) {
            var acc = 0.0;
            if (l == 0u) {
                let x_off = s * info.n_in;
                for (var i = 0u; i < info.n_in; i++) {
                    acc = acc + xs[x_off + i] * param(info.w_off + i * info.n_out + u, nudge, dir);
                }
            } else {
                for (var i = 0u; i < info.n_in; i++) {
                    acc = acc + acts[src + i] * param(info.w_off + i * info.n_out + u, nudge, dir);
                }
            }
            acc = acc + param(info.b_off + u, nudge, dir);
            let a = activate(acc, info.kind);
            acts[dst + u] = a;
            if (store) {
                let unit = info.unit_off + u;
                cache[chunk.cache_base + unit * chunk.batch + s] = acc;
                cache[chunk.cache_base + (chunk.total_units + unit) * chunk.batch + s] = a;
            }
        }
        workgroupBarrier();
    }
    var total = 0.0;
    if (lid == 0u) {
        let last = ((chunk.num_layers - 1u) % 2u) * MAX_WIDTH;
        let y_off = s * chunk.outputs;
        for (var o = 0u; o < chunk.outputs; o++) {
            let d = acts[last + o] - ys[y_off + o];
            total = total + d * d;
        }
    }
    return total;
}

@compute @workgroup_size(64)
fn nudged_sse(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let item = wg.x + wg.y * chunk.grid_x;  // slot-in-chunk * batch + sample
    // Workgroup-uniform: every invocation of a workgroup leaves together.
    if (item >= chunk.eval_count * chunk.batch) {
        return;
    }
    let e = chunk.eval_base + item / chunk.batch;
    let s = item % chunk.batch;
    let total = forward_sample(s, select(e - 1u, NO_NUDGE, e == 0u), NO_DIR, lid, false);
    if (lid == 0u) {
        sse[item] = total;
    }
}

// nudged_sse for SPSA: slot 0 is the unperturbed network, slot 1 + d is evaluation d (direction
// d / 2, sign by parity).
@compute @workgroup_size(64)
fn spsa_sse(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let item = wg.x + wg.y * chunk.grid_x;
    if (item >= chunk.eval_count * chunk.batch) {
        return;
    }
    let e = chunk.eval_base + item / chunk.batch;
    let s = item % chunk.batch;
    let total = forward_sample(s, NO_NUDGE, select(e - 1u, NO_DIR, e == 0u), lid, false);
    if (lid == 0u) {
        sse[item] = total;
    }
}

@compute @workgroup_size(64)
fn forward_store(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = wg.x + wg.y * chunk.grid_x;
    if (s >= chunk.batch) {
        return;
    }
    let total = forward_sample(s, NO_NUDGE, NO_DIR, lid, true);
    if (lid == 0u) {
        sse[s] = total;
    }
}

// Each of the REDUCE_WG invocations brings one lane's partial sum; lanes are combined pairwise,
// halving the stride each round. Invocation 0 gets the total. Call in uniform control flow.
fn tree_sum(lid: u32, lane: f32) -> f32 {
    lanes[lid] = lane;
    workgroupBarrier();
    for (var stride = REDUCE_WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            lanes[lid] = lanes[lid] + lanes[lid + stride];
        }
        workgroupBarrier();
    }
    return lanes[0];
}

@compute @workgroup_size(256)
fn reduce_losses(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e_local = wg.x + wg.y * chunk.reduce_grid_x;
    if (e_local >= chunk.eval_count) {
        return;
    }
    let row = e_local * chunk.batch;
    var acc = 0.0;
    for (var s = lid; s < chunk.batch; s += REDUCE_WG) {
        acc = acc + sse[row + s];
    }
    let total = tree_sum(lid, acc);
    if (lid == 0u) {
        out[chunk.out_base + chunk.eval_base + e_local] = total * chunk.inv_count;
    }
}

// One invocation's version of reduce_losses' sum over the samples of `row`: lanes are visited in
// bit-reversed order and merged like a binary counter, which reproduces the stride-halving tree
// (lane t + lane t + stride) operation for operation.
fn reduce_row(row: u32) -> f32 {
    let batch = chunk.batch;
    var width = 1u;
    if (batch > 1u) {
        width = min(1u << (32u - countLeadingZeros(batch - 1u)), REDUCE_WG);
    }
    let bits = countTrailingZeros(width);
    var stack: array<f32, 9>;
    var depth = 0u;
    for (var i = 0u; i < width; i++) {
        var t = 0u;
        if (bits > 0u) {
            t = reverseBits(i) >> (32u - bits);
        }
        var acc = 0.0;
        for (var s = t; s < batch; s += REDUCE_WG) {
            acc = acc + sse[row + s];
        }
        stack[depth] = acc;
        depth++;
        for (var j = i; (j & 1u) == 1u; j = j >> 1u) {
            stack[depth - 2u] = stack[depth - 2u] + stack[depth - 1u];
            depth--;
        }
    }
    return stack[0];
}

@compute @workgroup_size(64)
fn reduce_seq(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e_local = (wg.x + wg.y * chunk.reduce_grid_x) * WG_SIZE + lid;
    if (e_local >= chunk.eval_count) {
        return;
    }
    out[chunk.out_base + chunk.eval_base + e_local] = reduce_row(e_local * chunk.batch) * chunk.inv_count;
}

struct Nudged {
    l: u32,
    u: u32,
    a_new: f32,
    a_old: f32,
}

// Parameter k's layer and unit, and that unit's nudged and unperturbed output for sample s.
fn reuse_nudge(k: u32, s: u32) -> Nudged {
    var l = 0u;
    while (l + 1u < chunk.num_layers && k >= layer_info(l + 1u).w_off) {
        l++;
    }
    let info = layer_info(l);
    let w = pw(k);
    // `+ zero` (a runtime 0.0) keeps the compiler from folding (w + eps) - w into eps.
    let d = (w + chunk.eps) - (w + chunk.zero);
    var u: u32;
    var z: f32;
    if (k >= info.b_off) {
        u = k - info.b_off;
        z = z_at(info.unit_off + u, s) + d;
    } else {
        let j = k - info.w_off;
        let i = j / info.n_out;
        u = j % info.n_out;
        var xi: f32;
        if (l == 0u) {
            xi = cache[chunk.cache_base + (2u * chunk.total_units + i) * chunk.batch + s];  // inputs, transposed
        } else {
            xi = a_at(layer_info(l - 1u).unit_off + i, s);
        }
        z = z_at(info.unit_off + u, s) + xi * d;
    }
    return Nudged(l, u, activate(z, info.kind), a_at(info.unit_off + u, s));
}

// The change of sample s's squared error when parameter k (of the last two layers) is nudged.
fn reuse_shallow(k: u32, s: u32) -> f32 {
    let n = reuse_nudge(k, s);
    let y_off = s * chunk.outputs;
    if (n.l + 1u == chunk.num_layers) {
        return dsse_term(n.a_new, n.a_old, ys[y_off + n.u]);
    }
    let delta = n.a_new - n.a_old;
    if (chunk.ab_off != 0u && n.l + 2u == chunk.num_layers) {
        // Identity output layer: the closed form of reuse_prepare, O(1) instead of O(outputs).
        let ab = chunk.cache_base + chunk.ab_off;
        let hidden = layer_info(n.l + 1u).n_in;
        return delta * (cache[ab + n.u * chunk.batch + s] + delta * cache[ab + hidden * chunk.batch + n.u]);
    }
    let nx = layer_info(n.l + 1u);
    var total = 0.0;
    for (var v = 0u; v < nx.n_out; v++) {
        let unit = nx.unit_off + v;
        let a2 = activate(z_at(unit, s) + delta * pw(nx.w_off + n.u * nx.n_out + v), nx.kind);
        total = total + dsse_term(a2, a_at(unit, s), ys[y_off + v]);
    }
    return total;
}

// Reuse with an identity output layer, after forward_store: one invocation per (hidden unit u of
// the last hidden layer, sample s). A change d of u changes output v by t = d * W[u][v] and the
// squared error by sum_v t * (2 (a_v - y_v) + t) = d * ab[u][s] + d^2 * bb[u], with
// ab = sum_v W[u][v] * (e + e), e = a_v - y_v, and bb = sum_v W[u][v]^2 (invocations with s = 0).
@compute @workgroup_size(64)
fn reuse_prepare(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let local = (wg.x + wg.y * chunk.grid_x) * WG_SIZE + lid;
    if (local >= chunk.eval_count * chunk.batch) {
        return;
    }
    let u = chunk.eval_base + local / chunk.batch;
    let s = local % chunk.batch;
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
}

@compute @workgroup_size(64)
fn reuse_dsse(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let item = (wg.x + wg.y * chunk.grid_x) * WG_SIZE + lid;
    if (item >= chunk.eval_count * chunk.batch) {
        return;
    }
    sse[item] = reuse_shallow(chunk.eval_base - 1u + item / chunk.batch, item % chunk.batch);
}

// reuse_dsse and reduce_losses in one, for hardware GPUs: a workgroup per parameter whose lane t
// handles samples t, t + 256, ... and keeps their sum in a register (reduce_losses' order), so
// the per-sample changes never go through memory.
@compute @workgroup_size(256)
fn reuse_fused(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e_local = wg.x + wg.y * chunk.grid_x;
    if (e_local >= chunk.eval_count) {
        return;
    }
    let k = chunk.eval_base - 1u + e_local;
    var acc = 0.0;
    for (var s = lid; s < chunk.batch; s += REDUCE_WG) {
        acc = acc + reuse_shallow(k, s);
    }
    let total = tree_sum(lid, acc);
    if (lid == 0u) {
        out[chunk.out_base + chunk.eval_base + e_local] = total * chunk.inv_count;
    }
}

@compute @workgroup_size(64)
fn reuse_deep(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let item = wg.x + wg.y * chunk.grid_x;
    if (item >= chunk.eval_count * chunk.batch) {
        return;
    }
    let k = chunk.eval_base - 1u + item / chunk.batch;
    let s = item % chunk.batch;
    let n = reuse_nudge(k, s);
    let delta = n.a_new - n.a_old;
    // Barriers stay in uniform control flow: loop over every layer, work only after the nudged one.
    for (var m = 0u; m < chunk.num_layers; m++) {
        let info = layer_info(m);
        let dst = (m % 2u) * MAX_WIDTH;
        let src = MAX_WIDTH - dst;
        if (m == n.l + 1u) {
            for (var v = lid; v < info.n_out; v += WG_SIZE) {
                let z = z_at(info.unit_off + v, s) + delta * pw(info.w_off + n.u * info.n_out + v);
                acts[dst + v] = activate(z, info.kind);
            }
        } else if (m > n.l + 1u) {
            for (var v = lid; v < info.n_out; v += WG_SIZE) {
                var acc = 0.0;
                for (var i = 0u; i < info.n_in; i++) {
                    acc = acc + acts[src + i] * pw(info.w_off + i * info.n_out + v);
                }
                acc = acc + pw(info.b_off + v);
                acts[dst + v] = activate(acc, info.kind);
            }
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let last_layer = layer_info(chunk.num_layers - 1u);
        let last = ((chunk.num_layers - 1u) % 2u) * MAX_WIDTH;
        let y_off = s * chunk.outputs;
        var total = 0.0;
        for (var o = 0u; o < chunk.outputs; o++) {
            total = total + dsse_term(acts[last + o], a_at(last_layer.unit_off + o, s), ys[y_off + o]);
        }
        sse[item] = total;
    }
}

@compute @workgroup_size(64)
fn update(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let k = (wg.x + wg.y * chunk.grid_x) * WG_SIZE + lid;
    if (k >= chunk.num_params) {
        return;
    }
    var delta = out[k + 1u];
    if (chunk.method == METHOD_NAIVE) {
        delta = out[k + 1u] - out[0];
    }
    next[k] = params[k] - (delta / chunk.eps) * chunk.lr;
}

// Parameter j of the current epoch in fused_epochs (which keeps parameters in `next`).
fn fused_param(base: u32, j: u32, nudge: u32) -> f32 {
    let w = next[base + j];
    return select(w, w + chunk.eps, j == nudge);
}

@compute @workgroup_size(16)
fn fused_epochs(@builtin(local_invocation_index) lid: u32) {
    let p = chunk.num_params;
    let b = chunk.batch;
    let items = (p + 1u) * b;
    for (var k = lid; k < p; k += FUSED_WG) {
        next[k] = params[k];
    }
    storageBarrier();
    // Two halves of FUSED_MAX_WIDTH: layer l writes half l % 2.
    var h: array<f32, 64>;
    var cur = 0u;
    for (var epoch = 0u; epoch < chunk.eval_count; epoch++) {
        let base = cur * p;
        for (var it = lid; it < items; it += FUSED_WG) {
            let e = it / b;
            let s = it % b;
            let nudge = select(e - 1u, NO_NUDGE, e == 0u);
            for (var l = 0u; l < chunk.num_layers; l++) {
                let info = layer_info(l);
                let dst = (l % 2u) * FUSED_MAX_WIDTH;
                let src = FUSED_MAX_WIDTH - dst;
                for (var u = 0u; u < info.n_out; u++) {
                    var acc = 0.0;
                    for (var i = 0u; i < info.n_in; i++) {
                        var x: f32;
                        if (l == 0u) {
                            x = xs[s * info.n_in + i];
                        } else {
                            x = h[src + i];
                        }
                        acc = acc + x * fused_param(base, info.w_off + i * info.n_out + u, nudge);
                    }
                    acc = acc + fused_param(base, info.b_off + u, nudge);
                    h[dst + u] = activate(acc, info.kind);
                }
            }
            let last = ((chunk.num_layers - 1u) % 2u) * FUSED_MAX_WIDTH;
            var total = 0.0;
            for (var o = 0u; o < chunk.outputs; o++) {
                let d = h[last + o] - ys[s * chunk.outputs + o];
                total = total + d * d;
            }
            sse[it] = total;
        }
        storageBarrier();
        for (var e = lid; e <= p; e += FUSED_WG) {
            out[e] = reduce_row(e * b) * chunk.inv_count;
        }
        storageBarrier();
        let to = (1u - cur) * p;
        for (var k = lid; k < p; k += FUSED_WG) {
            let delta = out[k + 1u] - out[0];
            next[to + k] = next[base + k] - (delta / chunk.eps) * chunk.lr;
        }
        if (lid == 0u) {
            cache[epoch] = out[0];
        }
        storageBarrier();
        cur = 1u - cur;
    }
}
