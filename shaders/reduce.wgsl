// Loss reductions: per-sample squared errors of a slot -> its loss, in the fixed order the CPU
// reference follows (strided lanes, then a binary tree). Assembled after forward.wgsl.
// CPU twin: src/cpu/reduce.rs.

// Each of the REDUCE_LANES invocations brings one lane's partial sum; lanes are combined pairwise,
// halving the stride each round. Invocation 0 gets the total. Call in uniform control flow.
fn tree_sum(lid: u32, lane: f32) -> f32 {
    lanes[lid] = lane;
    workgroupBarrier();
    for (var stride = REDUCE_LANES / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            lanes[lid] = lanes[lid] + lanes[lid + stride];
        }
        workgroupBarrier();
    }
    return lanes[0];
}

@compute @workgroup_size(REDUCE_LANES)
fn reduce_losses(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e_local = wg.x + wg.y * chunk.reduce_grid_x;
    if (e_local >= chunk.eval_count) {
        return;
    }
    let row = e_local * chunk.batch;
    var acc = 0.0;
    for (var s = lid; s < chunk.batch; s += REDUCE_LANES) {
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
        return min(1u << (32u - countLeadingZeros(chunk.batch - 1u)), REDUCE_LANES);
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
    // reduce_losses' lanes and tree in one invocation (the order the CPU twin follows).
    for (var i = 0u; i < width; i++) {
        var acc = 0.0;
        for (var s = tree_lane(i, width); s < chunk.batch; s += REDUCE_LANES) {
            acc = acc + sse[row + s];
        }
        tree = tree_add(tree, i, acc);
    }
    return tree.total;
}

@compute @workgroup_size(WG_SIZE)
fn reduce_seq(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e_local = (wg.x + wg.y * chunk.reduce_grid_x) * WG_SIZE + lid;
    if (e_local >= chunk.eval_count) {
        return;
    }
    out[chunk.out_base + chunk.eval_base + e_local] = reduce_row(e_local * chunk.batch) * chunk.inv_count;
    loop_guard(K_REDUCE_SEQ);
}
