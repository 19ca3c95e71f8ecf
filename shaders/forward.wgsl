// Forward passes: the naive method's nudged passes (one workgroup per (slot, sample)) and the
// reuse method's unperturbed pass that fills the cache. Assembled after common.wgsl.
// CPU twin: src/cpu/forward.rs.

// Whether forward_sample moves parameters along SPSA directions: true only in spsa_sse's pipeline
// (src/gpu/variants.rs), so that the other kernels' modules leave the direction generator out
// (src/gpu/specialise.rs drops the branch not taken) and the driver never compiles it for them.
override FWD_SPSA: bool = false;

// Invocations of a workgroup of forward_sample's kernels, the stride of its unit loop: WG_SIZE, or
// fewer for a model whose every layer fits them (src/gpu/variants.rs, FWD_NARROW_WG), so that
// llvmpipe runs one SIMD group per barrier instead of eight with all but a few lanes idle. Each
// unit is still summed by one invocation in the same order, and every unit loop still makes one
// pass: the loop-pass counts (src/gpu/kernels.rs) and the bits are those of the wide workgroup.
override FWD_WG: u32 = WG_SIZE;

// Parameter j of forward_sample's pass: `param` where SPSA directions are in use, otherwise the
// same nudge without naming `direction`.
fn fwd_param(j: u32, nudge: u32, dir: u32) -> f32 {
    if (FWD_SPSA) {
        return param(j, nudge, dir);
    }
    let w = pw(j);
    return select(w, w + chunk.eps, j == nudge);
}

// The forward pass of sample s with parameter `nudge` moved by eps (NO_NUDGE: none), or along
// SPSA evaluation `dir` (NO_DIR: none), spread over the workgroup; `store` keeps z and a in the
// cache. Returns (in invocation 0) the sample's loss: squared error or cross-entropy.
fn forward_sample(s: u32, nudge: u32, dir: u32, lid: u32, store: bool) -> f32 {
    for (var l = 0u; l < chunk.num_layers; l++) {
        let info = layer_info(l);
        let dst = (l % 2u) * MAX_WIDTH;
        let src = MAX_WIDTH - dst;
        for (var u = lid; u < info.n_out; u += FWD_WG) {
            var acc = 0.0;
            if (l == 0u) {
                let x_off = s * info.n_in;
                for (var i = 0u; i < info.n_in; i++) {
                    acc = acc + xs[x_off + i] * fwd_param(info.w_off + i * info.n_out + u, nudge, dir);
                }
            } else {
                for (var i = 0u; i < info.n_in; i++) {
                    acc = acc + acts[src + i] * fwd_param(info.w_off + i * info.n_out + u, nudge, dir);
                }
            }
            acc = acc + fwd_param(info.b_off + u, nudge, dir);
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
        if (LOSS == LOSS_XENT) {
            total = xent_acts(last, s);
        } else {
            let y_off = s * chunk.outputs;
            for (var o = 0u; o < chunk.outputs; o++) {
                let d = acts[last + o] - ys[y_off + o];
                total = total + d * d;
            }
        }
    }
    return total;
}

// With one sample the loss sum of slot e (reduce_seq's and reduce_losses' tree over one lane) is
// 0.0 + total: written here, and the host dispatches no reduction (src/gpu/evaluator.rs,
// direct_losses), one dispatch less per step.
fn one_sample_loss(e: u32, total: f32) {
    if (chunk.batch == 1u) {
        out[chunk.out_base + e] = (0.0 + total) * chunk.inv_count;
    }
}

@compute @workgroup_size(FWD_WG)
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
        one_sample_loss(e, total);
    }
    loop_guard(K_NUDGED_SSE);
}

// nudged_sse for SPSA: slot 0 is the unperturbed network, slot 1 + d is evaluation d (direction
// d / 2, sign by parity).
@compute @workgroup_size(FWD_WG)
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
        one_sample_loss(e, total);
    }
    loop_guard(K_SPSA_SSE);
}

@compute @workgroup_size(FWD_WG)
fn forward_store(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = wg.x + wg.y * chunk.grid_x;
    if (s >= chunk.batch) {
        return;
    }
    let total = forward_sample(s, NO_NUDGE, NO_DIR, lid, true);
    if (lid == 0u) {
        sse[s] = total;
        if (LOSS == LOSS_XENT) {
            cache[loss_row() + s] = total;  // what reuse's changes are taken from
        }
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

@compute @workgroup_size(WG_SIZE)
fn forward_tile(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let l = chunk.eval_base;
    // Repeats forward_sample's layer loop in forward_sample's order: WGSL cannot pass the cache or
    // workgroup memory as a pointer parameter, and this loop is tiled over (units x samples).
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

// After forward_tile: one invocation per sample, its loss (forward_sample's order).
@compute @workgroup_size(WG_SIZE)
fn forward_loss(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = (wg.x + wg.y * chunk.grid_x) * WG_SIZE + lid;
    if (s >= chunk.batch) {
        return;
    }
    if (LOSS == LOSS_XENT) {
        // The cached logits (z of an identity output layer is its a), nothing nudged.
        let total = xent_logits(s, LogitNudge(NO_LOGIT_ROW, NO_LOGIT_ROW, 0.0));
        sse[s] = total;
        cache[loss_row() + s] = total;
    } else {
        let out_layer = layer_info(chunk.num_layers - 1u);
        let y_off = s * chunk.outputs;
        // The squared-error tail of forward_sample, reading the cache instead of `acts` (no
        // storage pointers as function parameters in WGSL).
        var total = 0.0;
        for (var o = 0u; o < chunk.outputs; o++) {
            let d = a_at(out_layer.unit_off + o, s) - ys[y_off + o];
            total = total + d * d;
        }
        sse[s] = total;
    }
    loop_guard(K_FORWARD_LOSS);
}
