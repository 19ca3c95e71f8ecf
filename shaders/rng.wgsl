// Philox4x32-10 and the SPSA directions: the WGSL twin of src/rng.rs (same integer operations, so
// the same bits; tests/gpu.rs compares them). WGSL has no 32x32 -> 64-bit multiply, so the high
// word is assembled from 16-bit halves.

const PHILOX_M0: u32 = 0xD2511F53u;
const PHILOX_M1: u32 = 0xCD9E8D57u;
const PHILOX_W0: u32 = 0x9E3779B9u;
const PHILOX_W1: u32 = 0xBB67AE85u;
const DIR_RADEMACHER: u32 = 0u;
const DIR_GAUSSIAN: u32 = 1u;

// High 32 bits of the 64-bit product a * b.
fn mul_hi(a: u32, b: u32) -> u32 {
    let a_lo = a & 0xffffu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xffffu;
    let b_hi = b >> 16u;
    let lo_lo = a_lo * b_lo;
    let lo_hi = a_lo * b_hi;
    let hi_lo = a_hi * b_lo;
    let mid = (lo_lo >> 16u) + (lo_hi & 0xffffu) + (hi_lo & 0xffffu);
    return a_hi * b_hi + (lo_hi >> 16u) + (hi_lo >> 16u) + (mid >> 16u);
}

fn philox_round(c: vec4<u32>, k: vec2<u32>) -> vec4<u32> {
    let hi0 = mul_hi(PHILOX_M0, c.x);
    let lo0 = PHILOX_M0 * c.x;
    let hi1 = mul_hi(PHILOX_M1, c.z);
    let lo1 = PHILOX_M1 * c.z;
    return vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
}

// Rounds written out, not looped: llvmpipe counts loop iterations against its silent cap.
fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    let w = vec2<u32>(PHILOX_W0, PHILOX_W1);
    var c = philox_round(counter, key);
    c = philox_round(c, key + w);
    c = philox_round(c, key + 2u * w);
    c = philox_round(c, key + 3u * w);
    c = philox_round(c, key + 4u * w);
    c = philox_round(c, key + 5u * w);
    c = philox_round(c, key + 6u * w);
    c = philox_round(c, key + 7u * w);
    c = philox_round(c, key + 8u * w);
    return philox_round(c, key + 9u * w);
}

// Component k of direction `sample` at `step` for the run seeded (seed_lo, seed_hi).
fn direction(seed: vec2<u32>, step: u32, sample: u32, k: u32, dist: u32) -> f32 {
    let first = philox4x32_10(vec4<u32>(k, sample, step, 0u), seed);
    if (dist == DIR_RADEMACHER) {
        return select(-1.0, 1.0, (first.x >> 31u) == 0u);
    }
    let second = philox4x32_10(vec4<u32>(k, sample, step, 1u), seed);
    let halves = (first & vec4<u32>(0xffffu)) + (first >> vec4<u32>(16u));
    let sum = halves.x + halves.y + halves.z + halves.w
        + (second.x & 0xffffu) + (second.x >> 16u) + (second.y & 0xffffu) + (second.y >> 16u);
    return f32(sum) * (1.0 / 65536.0) - 6.0;
}
