// Nudged losses, the book's naive method: evaluation e = 0 is the unperturbed network, evaluation
// e = k + 1 adds eps to parameter k. Two kernels per chunk of evaluations:
//   nudged_sse     one workgroup per (evaluation, sample): the forward pass of that sample with that
//                  nudge, units of a layer spread over the workgroup's invocations, activations in
//                  workgroup memory; writes the sample's squared error.
//   reduce_losses  one workgroup per evaluation: sums the samples' squared errors in a fixed order
//                  (strided lanes, then a binary tree) and scales by 1/(samples*outputs).
// Summation order is the contract with src/cpu.rs, which follows it line for line. No invocation loops
// more than (units per invocation) x (layer inputs) times, far below llvmpipe's silent cap of 65,535
// loop iterations per invocation (src/gpu/evaluator.rs checks the bound before dispatching).
//
// Prepended at load time: shaders/math.wgsl (activate, exp_f32, ...).

// Shared with src/gpu/evaluator.rs (checked by tests/shaders.rs).
const WG_SIZE: u32 = 64u;
const REDUCE_WG: u32 = 256u;
const MAX_WIDTH: u32 = 2048u;
const NO_NUDGE: u32 = 0xffffffffu;

// One per chunk of evaluations, at a dynamic offset. Layout mirrored by ChunkUniform in Rust.
struct Chunk {
    num_layers: u32,
    batch: u32,
    eval_base: u32,      // global index of the chunk's first evaluation
    eval_count: u32,     // evaluations in this chunk
    grid_x: u32,         // workgroups along x of the nudged_sse dispatch
    reduce_grid_x: u32,  // workgroups along x of the reduce_losses dispatch
    outputs: u32,        // width of the last layer
    _pad: u32,
    eps: f32,
    inv_count: f32,      // 1 / (batch * outputs), rounded on the host
    _pad2: vec2<u32>,
}

@group(0) @binding(0) var<uniform> chunk: Chunk;
@group(0) @binding(1) var<storage, read> params: array<f32>;
// Per layer 4 words: inputs, outputs, weight offset (biases follow the weights), activation code.
@group(0) @binding(2) var<storage, read> layers: array<u32>;
@group(0) @binding(3) var<storage, read> xs: array<f32>;      // [batch][inputs]
@group(0) @binding(4) var<storage, read> ys: array<f32>;      // [batch][outputs]
@group(0) @binding(5) var<storage, read_write> sse: array<f32>;    // [eval in chunk][batch]
@group(0) @binding(6) var<storage, read_write> losses: array<f32>; // [all evaluations]

// Two halves: layer l writes half l % 2 and reads the other.
var<workgroup> acts: array<f32, 4096>;
var<workgroup> lanes: array<f32, 256>;

fn param(j: u32, nudge: u32) -> f32 {
    let w = params[j];
    return select(w, w + chunk.eps, j == nudge);
}

@compute @workgroup_size(64)
fn nudged_sse(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let item = wg.x + wg.y * chunk.grid_x;  // evaluation-in-chunk * batch + sample
    // Workgroup-uniform: every invocation of a workgroup leaves together.
    if (item >= chunk.eval_count * chunk.batch) {
        return;
    }
    let e = chunk.eval_base + item / chunk.batch;
    let s = item % chunk.batch;
    let nudge = select(e - 1u, NO_NUDGE, e == 0u);

    for (var l = 0u; l < chunk.num_layers; l++) {
        let n_in = layers[4u * l];
        let n_out = layers[4u * l + 1u];
        let w_off = layers[4u * l + 2u];
        let kind = layers[4u * l + 3u];
        let b_off = w_off + n_in * n_out;
        let dst = (l % 2u) * MAX_WIDTH;
        let src = MAX_WIDTH - dst;
        for (var u = lid; u < n_out; u += WG_SIZE) {
            var acc = 0.0;
            if (l == 0u) {
                let x_off = s * n_in;
                for (var i = 0u; i < n_in; i++) {
                    acc = acc + xs[x_off + i] * param(w_off + i * n_out + u, nudge);
                }
            } else {
                for (var i = 0u; i < n_in; i++) {
                    acc = acc + acts[src + i] * param(w_off + i * n_out + u, nudge);
                }
            }
            acc = acc + param(b_off + u, nudge);
            acts[dst + u] = activate(acc, kind);
        }
        workgroupBarrier();
    }

    if (lid == 0u) {
        let last = ((chunk.num_layers - 1u) % 2u) * MAX_WIDTH;
        let y_off = s * chunk.outputs;
        var total = 0.0;
        for (var o = 0u; o < chunk.outputs; o++) {
            let d = acts[last + o] - ys[y_off + o];
            total = total + d * d;
        }
        sse[item] = total;
    }
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
    lanes[lid] = acc;
    workgroupBarrier();
    for (var stride = REDUCE_WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            lanes[lid] = lanes[lid] + lanes[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        losses[chunk.eval_base + e_local] = lanes[0] * chunk.inv_count;
    }
}
