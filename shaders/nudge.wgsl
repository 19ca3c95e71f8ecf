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
//   forward_tile   the same for CPU adapters, a dispatch per layer, tiles of units x samples;
//   forward_loss   then each sample's squared error.
//   reuse_prepare  identity output layer: per (last hidden unit, sample) the sums that make the
//                  output layer's change closed-form (see below), once per step.
//   reuse_dsse     one invocation per (parameter, sample), parameters of the last two layers: the
//                  nudged unit, a rank-one update of the next layer (closed-form for an identity
//                  output layer), the change of the squared error.
//   reuse_deep     one workgroup per (parameter, sample), parameters of earlier layers: as above,
//                  then full forward passes of the later layers in workgroup memory.
//   reduce_losses  as above, so slot k + 1 holds L_k - L directly.
//   reuse_fused    reuse_dsse and its reduction in one workgroup per parameter (hardware GPUs).
//   reuse_seq      the same in one invocation per parameter, or per SEQ_R weights of one unit
//                  (CPU adapters such as llvmpipe: no barriers, few loads).
// Resident loop:
//   update         one invocation per parameter: next = p - (delta / eps) * lr, the host's float32 rule.
//   fused_epochs   tiny models (naive method): one workgroup runs many whole epochs (every nudged
//                  forward pass, the sums, the update) in one dispatch, parameters ping-ponging in
//                  `next` and each epoch's loss kept in `cache`; the same arithmetic, in one thread
//                  per (slot, sample) instead of one workgroup.
//
// llvmpipe silently ends every loop of an invocation after 65,535 loop passes in total. Each
// kernel's passes are counted, loop by loop, in src/gpu/kernels.rs (tests/loop_cap.rs holds the
// counts to what the driver runs); the planner splits or refuses work that would pass the cap, and
// every entry point ends in loop_guard, which reports a kernel cut short anyway.
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
    eval_base: u32,      // first slot of this chunk (0 = baseline, k + 1 = parameter k); forward_tile: the layer
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
    zero: f32,           // always 0.0; see reuse_target
    param_base: u32,     // this chunk's run: its parameters start at params[param_base]
    out_base: u32,       // slot e goes to out[out_base + e] (reuse_seq's weight chunks hold whole units, not a slot range)
    cache_base: u32,     // the run's reuse cache starts at cache[cache_base]
    seed_lo: u32,        // SPSA: the run's seed, the step, the distribution of the directions
    seed_hi: u32,
    step: u32,
    dist: u32,
    ab_off: u32,         // reuse, identity output layer: the closed-form sums in the run's cache; 0: none
    burn_kernel: u32,    // loop_guard: the kernel whose guard also runs `burn` passes (0: none)
    burn: u32,
    trip_at: u32,        // loop_guard: where a kernel cut short by the loop cap writes its id
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

// Kernel ids of the loop tripwire (src/gpu/kernels.rs, KernelId::code).
const K_NUDGED_SSE: u32 = 1u;
const K_SPSA_SSE: u32 = 2u;
const K_FORWARD_STORE: u32 = 3u;
const K_FORWARD_TILE: u32 = 4u;
const K_FORWARD_LOSS: u32 = 5u;
const K_REDUCE_LOSSES: u32 = 6u;
const K_REDUCE_SEQ: u32 = 7u;
const K_REUSE_PREPARE: u32 = 8u;
const K_REUSE_DSSE: u32 = 9u;
const K_REUSE_FUSED: u32 = 10u;
const K_REUSE_DEEP: u32 = 11u;
const K_UPDATE: u32 = 12u;
const K_FUSED_EPOCHS: u32 = 13u;
const K_REUSE_SEQ: u32 = 16u;  // + SEQ_PART

// The tripwire every entry point ends with. llvmpipe silently ends every loop of an invocation
// once 65,535 loop passes have run in it (src/gpu/kernels.rs counts them per kernel); a loop that
// wants 2 passes more (plus `burn` when the planner's count is being measured) then stops after
// one, and the kernel's id lands in out[trip_at] for the evaluator to turn into an error.
fn loop_guard(id: u32) {
    let n = select(0u, chunk.burn, chunk.burn_kernel == id) + 2u;
    var c = 0u;
    for (var i = 0u; i < n; i++) {
        c = c + 1u;
    }
    if (c != n) {
        out[chunk.trip_at] = f32(id);
    }
}

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
    loop_guard(K_NUDGED_SSE);
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
    loop_guard(K_SPSA_SSE);
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
    loop_guard(K_FORWARD_STORE);
}

// The unperturbed pass for CPU adapters (with reuse_seq), one dispatch per layer l (carried in
// eval_base): an invocation computes a TILE_U x TILE_S block of the layer's z and a (units x
// samples), so that each input step loads TILE_U weights and TILE_S inputs for TILE_U * TILE_S
// multiply-adds instead of two loads per multiply-add (llvmpipe's loads are per-lane loops).
// Each z is summed in forward_sample's order, so the cache holds the same numbers.
const TILE_U: u32 = 4u;
const TILE_S: u32 = 4u;

@compute @workgroup_size(64)
fn forward_tile(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let l = chunk.eval_base;
    let info = layer_info(l);
    let batch = chunk.batch;
    let tiles_u = (info.n_out + TILE_U - 1u) / TILE_U;
    let tile = (wg.x + wg.y * chunk.grid_x) * WG_SIZE + lid;
    if (tile >= tiles_u * ((batch + TILE_S - 1u) / TILE_S)) {
        return;
    }
    let u0 = (tile % tiles_u) * TILE_U;
    let s0 = (tile / tiles_u) * TILE_S;
    let base = chunk.cache_base;
    // Inputs [input][sample]: the transposed x for the first layer, else the previous layer's a.
    var in_row = 2u * chunk.total_units;
    if (l > 0u) {
        in_row = chunk.total_units + layer_info(l - 1u).unit_off;
    }
    let in_base = base + in_row * batch;
    var w_at: array<u32, TILE_U>;
    var s_at: array<u32, TILE_S>;
    for (var uu = 0u; uu < TILE_U; uu++) {
        w_at[uu] = chunk.param_base + info.w_off + min(u0 + uu, info.n_out - 1u);
    }
    for (var ss = 0u; ss < TILE_S; ss++) {
        s_at[ss] = min(s0 + ss, batch - 1u);
    }
    var acc: array<f32, TILE_U * TILE_S>;  // [ss * TILE_U + uu]
    for (var i = 0u; i < info.n_in; i++) {
        var w: array<f32, TILE_U>;
        var x: array<f32, TILE_S>;
        for (var uu = 0u; uu < TILE_U; uu++) {
            w[uu] = params[w_at[uu] + i * info.n_out];
        }
        for (var ss = 0u; ss < TILE_S; ss++) {
            x[ss] = cache[in_base + i * batch + s_at[ss]];
        }
        for (var ss = 0u; ss < TILE_S; ss++) {
            for (var uu = 0u; uu < TILE_U; uu++) {
                acc[ss * TILE_U + uu] = acc[ss * TILE_U + uu] + x[ss] * w[uu];
            }
        }
    }
    for (var ss = 0u; ss < TILE_S; ss++) {
        for (var uu = 0u; uu < TILE_U; uu++) {
            let u = u0 + uu;
            let s = s0 + ss;
            if (u < info.n_out && s < batch) {
                let z = acc[ss * TILE_U + uu] + pw(info.b_off + u);
                let unit = info.unit_off + u;
                cache[base + unit * batch + s] = z;
                cache[base + (chunk.total_units + unit) * batch + s] = activate(z, info.kind);
            }
        }
    }
    loop_guard(K_FORWARD_TILE);
}

// After forward_tile: one invocation per sample, its squared error (forward_sample's order).
@compute @workgroup_size(64)
fn forward_loss(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = (wg.x + wg.y * chunk.grid_x) * WG_SIZE + lid;
    if (s >= chunk.batch) {
        return;
    }
    let out_layer = layer_info(chunk.num_layers - 1u);
    let y_off = s * chunk.outputs;
    var total = 0.0;
    for (var o = 0u; o < chunk.outputs; o++) {
        let d = a_at(out_layer.unit_off + o, s) - ys[y_off + o];
        total = total + d * d;
    }
    sse[s] = total;
    loop_guard(K_FORWARD_LOSS);
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
    loop_guard(K_REDUCE_LOSSES);
}

// One invocation's version of reduce_losses' sum over samples: lanes are visited in bit-reversed
// order and merged like a binary counter, which reproduces the stride-halving tree (lane t + lane
// t + stride) operation for operation. `tree_width` lanes; lane `tree_lane(i, width)` is i-th.
fn tree_width() -> u32 {
    if (chunk.batch > 1u) {
        return min(1u << (32u - countLeadingZeros(chunk.batch - 1u)), REDUCE_WG);
    }
    return 1u;
}

fn tree_lane(i: u32, width: u32) -> u32 {
    let bits = countTrailingZeros(width);
    if (bits == 0u) {
        return 0u;
    }
    return reverseBits(i) >> (32u - bits);
}

// The binary counter in registers (an indexed array costs llvmpipe more): rj holds the pending sum
// of the last 2^j lanes while bit j of the lane count is set; after the last lane, `total` holds
// the sum.
struct Tree {
    r0: f32, r1: f32, r2: f32, r3: f32, r4: f32, r5: f32, r6: f32, r7: f32,
    total: f32,
}

fn tree_add(t_in: Tree, i: u32, lane: f32) -> Tree {
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

fn reduce_row(row: u32) -> f32 {
    let width = tree_width();
    var tree = Tree();
    for (var i = 0u; i < width; i++) {
        var acc = 0.0;
        for (var s = tree_lane(i, width); s < chunk.batch; s += REDUCE_WG) {
            acc = acc + sse[row + s];
        }
        tree = tree_add(tree, i, acc);
    }
    return tree.total;
}

@compute @workgroup_size(64)
fn reduce_seq(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e_local = (wg.x + wg.y * chunk.reduce_grid_x) * WG_SIZE + lid;
    if (e_local >= chunk.eval_count) {
        return;
    }
    out[chunk.out_base + chunk.eval_base + e_local] = reduce_row(e_local * chunk.batch) * chunk.inv_count;
    loop_guard(K_REDUCE_SEQ);
}

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
// output layer (closed form) where ab's row starts and bb, else the next layer.
struct Shallow {
    t: Target,
    ab_row: u32,   // NO_ROW unless closed form applies
    bb: f32,
}

fn reuse_shallow_target(k: u32) -> Shallow {
    let t = reuse_target(k);
    if (chunk.ab_off != 0u && t.l + 2u == chunk.num_layers) {
        let ab = chunk.cache_base + chunk.ab_off;
        let hidden = layer_info(t.l + 1u).n_in;
        return Shallow(t, ab + t.u * chunk.batch, cache[ab + hidden * chunk.batch + t.u]);
    }
    return Shallow(t, NO_ROW, 0.0);
}

// The change of sample s's squared error when the shallow target's parameter (of the last two
// layers) is nudged.
fn reuse_shallow(h: Shallow, s: u32) -> f32 {
    let t = h.t;
    let a_new = nudged_output(t, s);
    let a_old = cache[t.a_row + s];
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
    loop_guard(K_REUSE_PREPARE);
}

@compute @workgroup_size(64)
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
@compute @workgroup_size(256)
fn reuse_fused(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e_local = wg.x + wg.y * chunk.grid_x;
    if (e_local >= chunk.eval_count) {
        return;
    }
    let h = reuse_shallow_target(chunk.eval_base - 1u + e_local);
    var acc = 0.0;
    for (var s = lid; s < chunk.batch; s += REDUCE_WG) {
        acc = acc + reuse_shallow(h, s);
    }
    let total = tree_sum(lid, acc);
    if (lid == 0u) {
        out[chunk.out_base + chunk.eval_base + e_local] = total * chunk.inv_count;
    }
    loop_guard(K_REUSE_FUSED);
}

// reuse_dsse and reduce_seq in one, for CPU adapters: one invocation per parameter (or per
// SEQ_R weights of one unit) sums every sample's change in reduce_losses' order, with no barrier
// and nothing written per sample. Mesa 22's llvmpipe turns every load whose address is not a
// compile-time constant into a loop over the SIMD lanes, so the kernel is shaped to load less:
// a pipeline per part of the last two layers, specialised by the constants below (llvmpipe runs
// both sides of a branch, so each pipeline holds only its part's code), and an invocation nudges
// SEQ_R weights of the same unit, whose z, a and closed-form sum for a sample are loaded once for
// all of them.
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

// What every parameter of an invocation shares: the unit and its rows.
struct SeqUnit {
    u: u32,
    kind: u32,     // activation of the unit's layer
    z_row: u32,
    a_row: u32,
    ab_row: u32,   // closed form
    bb: f32,
}

// Sample s's change of the squared error for a nudge that moves unit u's z from z_old to z_new.
fn seq_change(t: SeqUnit, s: u32, z_new: f32, a_old: f32, ab: f32) -> f32 {
    // The runtime select (t.kind always equals SEQ_KIND) is load-bearing: fed straight from the
    // constant-kind activation, the lines below compile differently under Mesa 22 and the result
    // no longer matches src/cpu.rs bit for bit (measured; tests/gpu.rs catches it).
    let a_new = select(activate(z_new, SEQ_KIND), z_new, t.kind != SEQ_KIND);
    if (SEQ_PART >= PART_OUTPUT_WEIGHTS) {
        return dsse_term(a_new, a_old, ys[s * chunk.outputs + t.u]);
    }
    let delta = a_new - a_old;
    if (SEQ_CLOSED) {
        return delta * (ab + delta * t.bb);
    }
    return output_change(t.u, s, delta);
}

@compute @workgroup_size(16)
fn reuse_seq(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
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
        t.ab_row = ab + t.u * chunk.batch;
        t.bb = cache[ab + info.n_out * chunk.batch + t.u];
    }
    let width = tree_width();
    var trees: array<Tree, SEQ_MAX_R>;
    var acc: array<f32, SEQ_MAX_R>;
    for (var i = 0u; i < width; i++) {
        for (var r = 0u; r < SEQ_R; r++) {
            acc[r] = 0.0;
        }
        for (var s = tree_lane(i, width); s < chunk.batch; s += REDUCE_WG) {
            let z = cache[t.z_row + s];
            let a_old = cache[t.a_row + s];
            var ab = 0.0;
            if (SEQ_CLOSED) {
                ab = cache[t.ab_row + s];
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
                acc[r] = acc[r] + seq_change(t, s, z_new, a_old, ab);
            }
        }
        for (var r = 0u; r < SEQ_R; r++) {
            trees[r] = tree_add(trees[r], i, acc[r]);
        }
    }
    for (var r = 0u; r < SEQ_R; r++) {
        if (valid[r]) {
            out[chunk.out_base + 1u + k[r]] = trees[r].total * chunk.inv_count;
        }
    }
    loop_guard(K_REUSE_SEQ + SEQ_PART);
}

@compute @workgroup_size(64)
fn reuse_deep(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let item = wg.x + wg.y * chunk.grid_x;
    if (item >= chunk.eval_count * chunk.batch) {
        return;
    }
    let k = chunk.eval_base - 1u + item / chunk.batch;
    let s = item % chunk.batch;
    let n = reuse_target(k);
    let delta = nudged_output(n, s) - cache[n.a_row + s];
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
    loop_guard(K_REUSE_DEEP);
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
    loop_guard(K_UPDATE);
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
    loop_guard(K_FUSED_EPOCHS);
}
