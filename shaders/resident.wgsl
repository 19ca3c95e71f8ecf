// The resident loop: the update on the GPU, and fused_epochs for tiny models. Assembled last.
// fused_epochs computes the squared error only: the planner never picks it for cross-entropy
// (src/gpu/plan.rs, fused_epochs_per_dispatch), whose resident loop runs the step's kernels.

// The optimiser's kinds in its block (src/gpu/resident.rs, opt_block: after the two copies of
// the parameters and the two state vectors in `next`: bc1, bc2, kind, β1 or μ, 1 − β1, β2, 1 − β2, ε).
const OPT_MOMENTUM: u32 = 1u;
const OPT_ADAM: u32 = 2u;

// One optimiser step, in src/optim.rs's order of float32 operations (OptState::step), on the
// gradient estimate::gradient gives: delta / eps, or zero where the nudge vanished.
@compute @workgroup_size(WG_SIZE)
fn update(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let k = (wg.x + wg.y * chunk.grid_x) * WG_SIZE + lid;
    let p = chunk.num_params;
    if (k >= p) {
        return;
    }
    var delta = out[k + 1u];
    if (chunk.method == METHOD_NAIVE) {
        delta = out[k + 1u] - out[0];
    }
    let w = params[k];
    var g = delta / chunk.eps;
    if ((w + chunk.eps) - w == 0.0) {
        g = 0.0;
    }
    let at = 4u * p;
    let kind = bitcast<u32>(next[at + 2u]);
    if (kind == OPT_MOMENTUM) {
        let vel = next[at + 3u] * next[2u * p + k] + g;
        next[2u * p + k] = vel;
        next[k] = w - chunk.lr * vel;
    } else if (kind == OPT_ADAM) {
        let m = next[at + 3u] * next[2u * p + k] + next[at + 4u] * g;
        let v = next[at + 5u] * next[3u * p + k] + next[at + 6u] * (g * g);
        next[2u * p + k] = m;
        next[3u * p + k] = v;
        let d = sqrt(v / next[at + 1u]) + next[at + 7u];
        next[k] = w - (chunk.lr * (m / next[at])) / d;
    } else {
        next[k] = w - g * chunk.lr;
    }
    loop_guard(K_UPDATE);
}

// Parameter j of the current epoch in fused_epochs (which keeps parameters in `next`).
fn fused_param(base: u32, j: u32, nudge: u32) -> f32 {
    let w = next[base + j];
    return select(w, w + chunk.eps, j == nudge);
}

@compute @workgroup_size(FUSED_WG)
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
            // Repeats forward_sample's layer loop in forward_sample's order: one invocation per (slot, sample)
            // here, activations in the private `h` (WGSL has no pointer parameter for either array).
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
            // forward_sample's squared-error tail, over `h`.
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
            // The update kernel's rule, on the ping-pong copy in `next` (update reads `params`).
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
