// Nudged losses on the GPU: what every kernel shares (constants, the Chunk uniform, bindings,
// workgroup memory, kernel ids, the loop-cap tripwire, layer and parameter access). The module is
// assembled in this order (src/gpu/mod.rs, SHADER_FILES): math, rng, common, forward, reduce,
// reuse, reuse_seq, reuse_deep, resident.
//
// Evaluation slot e = 0 is the unperturbed network; slot e = k + 1
// belongs to parameter k. Summation orders are the contract with src/cpu/, which follows them
// line for line (see its module docs). WGSL has no pointers to storage buffers as function
// parameters, so a kernel that reads a different buffer (xs vs. the cache, acts vs. a_at) spells
// its loop out again; each such repetition says so where it stands.
//
// A step may hold several runs (a sweep) and several coordinate offsets (central and Richardson
// differences): each chunk belongs to one run and one offset, and its uniform says where that
// run's parameters, outputs and reuse cache start (param_base, out_base, cache_base).
//
// Naive method (the book), per chunk of slots (forward.wgsl, reduce.wgsl):
//   nudged_sse     one workgroup per (slot, sample): the forward pass of that sample with that nudge,
//                  units spread over the workgroup, activations in workgroup memory -> squared error.
//   reduce_losses  one workgroup per slot: strided lanes + binary tree over samples, x 1/(B*outputs).
//   reduce_seq     the same sum, one invocation per slot (no barriers: far cheaper on llvmpipe),
//                  used up to SEQ_REDUCE_MAX_BATCH samples.
//   spsa_sse       nudged_sse for SPSA: slot 1 + d moves every parameter by +-eps times direction
//                  d / 2, regenerated from the run's seed (shaders/rng.wgsl), never stored.
// Reuse method (forward.wgsl, reuse.wgsl, reuse_seq.wgsl, reuse_deep.wgsl):
//   forward_store  one workgroup per sample: the unperturbed pass, keeping every z and a in `cache`.
//   forward_tile   the same for CPU adapters, a dispatch per layer, tiles of units x samples;
//   forward_loss   then each sample's squared error.
//   reuse_prepare  identity output layer: per (last hidden unit, sample) the sums that make the
//                  output layer's change closed-form (MSE) or cross-entropy's series terms
//                  (reuse.wgsl, prepare_xent), once per step.
//   reuse_dsse     one invocation per (parameter, sample), parameters of the last two layers: the
//                  nudged unit, a rank-one update of the next layer (closed-form for an identity
//                  output layer), the change of the squared error.
//   reuse_deep     one workgroup per (parameter, sample), parameters of earlier layers: as above,
//                  then full forward passes of the later layers in workgroup memory.
//   reduce_losses  as above, so slot k + 1 holds L_k - L directly.
//   reuse_fused    reuse_dsse and its reduction in one workgroup per parameter (hardware GPUs).
//   reuse_seq      the same in one invocation per parameter, or per SEQ_R weights of one unit, or
//                  (MSE's closed form, last hidden layer's weights) per R inputs of U units
//                  (CPU adapters such as llvmpipe: no barriers, few loads).
// Resident loop (resident.wgsl):
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
// Before this file: shaders/math.wgsl (activate, exp_f32, ...) and shaders/rng.wgsl (direction).

// Shared with src/gpu/evaluator.rs (checked by tests/shaders.rs).
const WG_SIZE: u32 = 64u;
const REDUCE_LANES: u32 = 256u;
const MAX_WIDTH: u32 = 2048u;
const LAYER_WORDS: u32 = 8u;
const NO_NUDGE: u32 = 0xffffffffu;
const NO_DIR: u32 = 0xffffffffu;
const METHOD_NAIVE: u32 = 0u;
const FUSED_MAX_WIDTH: u32 = 32u;
// Few invocations: llvmpipe pays per invocation group at every barrier, and tiny models have
// little to spread.
const FUSED_WG: u32 = 16u;
// The loss, one pipeline per loss (src/gpu/kernels.rs, loss_code): a constant, so the other
// loss's code is compiled out and llvmpipe never runs (or counts loop passes of) it.
const LOSS_MSE: u32 = 0u;
const LOSS_XENT: u32 = 1u;
override LOSS: u32 = 0u;

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
    inv_count: f32,      // 1 / (batch * outputs) for MSE, 1 / batch for cross-entropy, rounded on the host
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

// Cross-entropy (LOSS == LOSS_XENT) of an identity output layer's logits against the targets as
// probabilities, in src/math.rs softmax_xent_soft's order: m from logit 0 by xent_max_step, then
// s = sum of exp(z - m), ls = ln_f32(s), and the soft terms, each over the outputs ascending.
// Reuse keeps each sample's loss in the run's cache after the inputs (src/gpu/plan.rs, Sizes).
fn loss_row() -> u32 {
    return chunk.cache_base + (2u * chunk.total_units + layer_info(0u).n_in) * chunk.batch;
}

// The logits of sample s after a reuse nudge: with row != NO_LOGIT_ROW a unit of the last hidden
// layer changed by v, so logit k is z[k] + v * W[row + k]; otherwise logit u alone is v.
const NO_LOGIT_ROW: u32 = 0xffffffffu;
struct LogitNudge {
    u: u32,
    row: u32,
    v: f32,
}

fn nudged_logit(out_unit: u32, k: u32, s: u32, n: LogitNudge) -> f32 {
    let z = z_at(out_unit + k, s);
    if (n.row != NO_LOGIT_ROW) {
        return z + n.v * pw(n.row + k);
    }
    return select(z, n.v, k == n.u);
}

// Sample s's cross-entropy over the nudged logits (an unmatched u and no row: the cached ones).
fn xent_logits(s: u32, n: LogitNudge) -> f32 {
    let out_unit = layer_info(chunk.num_layers - 1u).unit_off;
    let y_off = s * chunk.outputs;
    var m = nudged_logit(out_unit, 0u, s, n);
    for (var k = 1u; k < chunk.outputs; k++) {
        m = xent_max_step(m, nudged_logit(out_unit, k, s, n));
    }
    var sum = 0.0;
    for (var k = 0u; k < chunk.outputs; k++) {
        sum = xent_sum_step(sum, nudged_logit(out_unit, k, s, n), m);
    }
    let ls = ln_f32(sum);
    var acc = 0.0;
    for (var k = 0u; k < chunk.outputs; k++) {
        acc = acc + xent_soft_term(m, ls, nudged_logit(out_unit, k, s, n), ys[y_off + k]);
    }
    return acc;
}

// xent_logits over the logits in workgroup memory from acts[at] (forward_sample, reuse_deep).
// Repeats its loops: WGSL has no parameter that is either workgroup memory or the cache.
fn xent_acts(at: u32, s: u32) -> f32 {
    let y_off = s * chunk.outputs;
    var m = acts[at];
    for (var k = 1u; k < chunk.outputs; k++) {
        m = xent_max_step(m, acts[at + k]);
    }
    var sum = 0.0;
    for (var k = 0u; k < chunk.outputs; k++) {
        sum = xent_sum_step(sum, acts[at + k], m);
    }
    let ls = ln_f32(sum);
    var acc = 0.0;
    for (var k = 0u; k < chunk.outputs; k++) {
        acc = acc + xent_soft_term(m, ls, acts[at + k], ys[y_off + k]);
    }
    return acc;
}
