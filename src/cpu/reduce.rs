//! The loss reduction: the twin of `shaders/reduce.wgsl` (`reduce_losses`, `reduce_seq`): strided
//! lanes, then a binary tree, in the order both sides share.

use super::*;

/// Sums per-sample values in the shader's order: lane t (of [`REDUCE_LANES`]) adds samples
/// t, t + 256, t + 512, … in turn, then lanes are combined pairwise, halving the stride each round.
/// Lanes beyond the next power of two of the sample count hold zeros and adding them is exact, so
/// the tree here starts at that width.
pub fn reduce_sse<R: Real>(sse: &[R]) -> R {
    let width = sse.len().next_power_of_two().min(REDUCE_LANES);
    // Lanes cleared only as wide as the tree: the book has one sample, a step of the reuse
    // method's output layer calls this once per parameter.
    if width <= 16 {
        let mut lanes = [R::ZERO; 16];
        return reduce_lanes(sse, &mut lanes[..width]);
    }
    if width <= 64 {
        let mut lanes = [R::ZERO; 64];
        return reduce_lanes(sse, &mut lanes[..width]);
    }
    let mut lanes = [R::ZERO; REDUCE_LANES];
    reduce_lanes(sse, &mut lanes[..width])
}

/// The sum of `sse` into `lanes` (all +0, as wide as the tree).
fn reduce_lanes<R: Real>(sse: &[R], lanes: &mut [R]) -> R {
    let width = lanes.len();
    // Lane t adds samples t, t + 256, … in turn: the same order as a strided loop per lane, but
    // row by row so that the adds vectorise.
    for row in sse.chunks(REDUCE_LANES) {
        for (lane, &v) in lanes.iter_mut().zip(row) {
            *lane = *lane + v;
        }
    }
    // Each round as two disjoint halves, so that its adds vectorise too.
    let mut stride = width / 2;
    while stride > 0 {
        let (lo, hi) = lanes.split_at_mut(stride);
        for (l, &h) in lo.iter_mut().zip(&hi[..stride]) {
            *l = *l + h;
        }
        stride /= 2;
    }
    lanes[0]
}
