// The reuse method for parameters of earlier layers: the nudged unit, then full passes of the
// later layers in workgroup memory. Assembled after reuse_seq.wgsl.
// CPU twin: src/cpu/reuse.rs.

@compute @workgroup_size(WG_SIZE)
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
        // Later layers: forward_sample's dense loop and order, with the unnudged weights (pw).
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
        if (LOSS == LOSS_XENT) {
            sse[item] = xent_acts(last, s) - cache[loss_row() + s];
        } else {
            let y_off = s * chunk.outputs;
            // The squared-error change summed as in reuse_dsse (dsse_term), over `acts`.
            var total = 0.0;
            for (var o = 0u; o < chunk.outputs; o++) {
                total = total + dsse_term(acts[last + o], a_at(last_layer.unit_off + o, s), ys[y_off + o]);
            }
            sse[item] = total;
        }
    }
    loop_guard(K_REUSE_DEEP);
}
