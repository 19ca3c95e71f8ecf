//! The WGSL twins of `ln_f32` and the softmax cross-entropy helpers against Rust on the GPU: bit
//! for bit on llvmpipe (lavapipe and GL), within `OTHER_ADAPTER_MAX_ULP` elsewhere. Unlike the
//! other GPU tests these fail without an adapter: they exist only to run on one.

mod common;

use common::{max_ulp, run_kernel, ulp_distance};
use perturb::gpu::{AdapterOptions, GpuContext, MATH_WGSL};
use perturb::math::ln_f32;
use perturb::xent::{softmax_xent_f32, softmax_xent_soft_f32, xent_max, xent_sum_exp};
use rand::{RngExt, SeedableRng};

fn context() -> GpuContext {
    let ctx = GpuContext::new(&AdapterOptions::from_env())
        .unwrap_or_else(|e| panic!("no GPU adapter; this test needs one: {e}"));
    eprintln!("GPU test on {} ({})", ctx.info.name, ctx.backend());
    ctx
}

/// Distance that counts any bit difference (so `-0` vs `+0` is 1), with NaN equal to NaN.
fn bit_distance(a: f32, b: f32) -> u64 {
    if a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()) {
        0
    } else {
        ulp_distance(a, b).max(1)
    }
}

/// Asserts `gpu[i]` within `budget` of `cpu[i]` for every i; on failure names the input of the
/// worst one, described by `input(i)`, and both values.
fn assert_twin(what: &str, gpu: &[f32], cpu: &[f32], budget: u64, input: impl Fn(usize) -> String) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths differ");
    let (worst, d) = gpu
        .iter()
        .zip(cpu)
        .map(|(&g, &c)| bit_distance(g, c))
        .enumerate()
        .max_by_key(|&(_, d)| d)
        .unwrap_or((0, 0));
    eprintln!(
        "{what}: {} values, worst {d} ULP at index {worst}",
        gpu.len()
    );
    assert!(
        d <= budget,
        "{what}: {} is {d} ULP apart (allowed {budget}): \
         gpu {:e} ({:#010x}) vs cpu {:e} ({:#010x})",
        input(worst),
        gpu[worst],
        gpu[worst].to_bits(),
        cpu[worst],
        cpu[worst].to_bits()
    );
}

const LN_KERNEL: &str = "
@group(0) @binding(0) var<storage, read> xin: array<u32>;
@group(0) @binding(1) var<storage, read_write> yout: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i >= arrayLength(&xin)) { return; }
    yout[i] = ln_f32(bitcast<f32>(xin[i]));
}";

/// ln over every exponent (a prime stride through all bit patterns, both signs), densely over
/// [1, 1e4] where the loss calls it, and the special values, passed as bits so that no load can
/// flush or quieten them.
#[test]
fn ln_twin_agrees_bitwise_on_the_gpu() {
    const STRIDE: usize = 40_009;
    const DENSE_STRIDE: usize = 1_009;
    let ctx = context();
    let specials = [
        0.0f32,
        -0.0,
        1e-45,
        1e-40,
        f32::MIN_POSITIVE,
        f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -1.0,
        1.0,
        0.99999994,
        1.0000001,
        std::f32::consts::FRAC_1_SQRT_2,
        std::f32::consts::SQRT_2,
    ];
    let xs: Vec<u32> = (0..=u32::MAX)
        .step_by(STRIDE)
        .chain((1.0f32.to_bits()..=1e4f32.to_bits()).step_by(DENSE_STRIDE))
        .chain((1u32..=1000).map(|k| (k as f32).to_bits()))
        .chain(specials.map(f32::to_bits))
        .collect();
    let out: Vec<f32> = run_kernel(
        &ctx,
        &format!("{MATH_WGSL}{LN_KERNEL}"),
        &xs,
        xs.len(),
        xs.len(),
    );
    let cpu: Vec<f32> = xs.iter().map(|&b| ln_f32(f32::from_bits(b))).collect();
    assert_twin("ln_f32", &out, &cpu, max_ulp(&ctx), |i| {
        format!("ln({:e} = {:#010x})", f32::from_bits(xs[i]), xs[i])
    });
}

/// Input: `[K, n]`, then per sample `K` logits, `K` soft targets and the label (floats as bits).
/// Output per sample: hard loss, soft loss, `m`, `s`. The loops are the contract in
/// `shaders/math.wgsl`; K is read at run time, as the loss kernels will.
const XENT_KERNEL: &str = "
@group(0) @binding(0) var<storage, read> xin: array<u32>;
@group(0) @binding(1) var<storage, read_write> yout: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let k = xin[0];
    let i = id.x;
    if (i >= xin[1]) { return; }
    let base = 2u + i * (2u * k + 1u);
    var m = bitcast<f32>(xin[base]);
    for (var j = 1u; j < k; j = j + 1u) {
        m = xent_max_step(m, bitcast<f32>(xin[base + j]));
    }
    var s = 0.0;
    for (var j = 0u; j < k; j = j + 1u) {
        s = xent_sum_step(s, bitcast<f32>(xin[base + j]), m);
    }
    let label = xin[base + 2u * k];
    let ls = ln_f32(s);
    var acc = 0.0;
    for (var j = 0u; j < k; j = j + 1u) {
        let p = bitcast<f32>(xin[base + k + j]);
        acc = acc + xent_soft_term(m, ls, bitcast<f32>(xin[base + j]), p);
    }
    yout[4u * i] = xent_from_parts(m, s, bitcast<f32>(xin[base + label]));
    yout[4u * i + 1u] = acc;
    yout[4u * i + 2u] = m;
    yout[4u * i + 3u] = s;
}";

/// One sample: logits, soft targets, label.
type Sample = (Vec<f32>, Vec<f32>, usize);

/// Seeded samples of `k` classes: logits uniform in [-scale, scale) (with some ties and signed
/// zeros), soft targets normalised in float32, a random label.
fn samples(k: usize, scale: f32, count: usize, seed: u64) -> Vec<Sample> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|n| {
            let mut z: Vec<f32> = (0..k).map(|_| rng.random_range(-scale..scale)).collect();
            match n % 5 {
                0 => z[k - 1] = z[0],
                1 => z.iter_mut().step_by(2).for_each(|v| *v = -0.0),
                2 => z.iter_mut().for_each(|v| *v = 0.0),
                _ => {}
            }
            let raw: Vec<f32> = (0..k).map(|_| rng.random_range(0.0f32..1.0)).collect();
            let total: f32 = raw.iter().sum();
            let p = raw.iter().map(|&v| v * (1.0 / total)).collect();
            (z, p, rng.random_range(0..k))
        })
        .collect()
}

fn check_xent(ctx: &GpuContext, k: usize, scale: f32, seed: u64) {
    const SAMPLES: usize = 2_000;
    let data = samples(k, scale, SAMPLES, seed);
    let mut input = vec![k as u32, SAMPLES as u32];
    for (z, p, y) in &data {
        input.extend(z.iter().chain(p).map(|v| v.to_bits()));
        input.push(*y as u32);
    }
    let src = format!("{MATH_WGSL}{XENT_KERNEL}");
    let out: Vec<f32> = run_kernel(ctx, &src, &input, 4 * SAMPLES, SAMPLES);
    let cpu: Vec<f32> = data
        .iter()
        .flat_map(|(z, p, y)| {
            let m = xent_max(z);
            [
                softmax_xent_f32(z, *y),
                softmax_xent_soft_f32(z, p),
                m,
                xent_sum_exp(z, m),
            ]
        })
        .collect();
    let what = format!("xent K = {k}, logits in ±{scale:e} (hard, soft, m, s per sample)");
    assert_twin(&what, &out, &cpu, max_ulp(ctx), |i| {
        let (z, _, y) = &data[i / 4];
        let part = ["hard loss", "soft loss", "max", "sum of exps"][i % 4];
        format!("sample {}: {part}, label {y}, logits {z:?}", i / 4)
    });
}

#[test]
fn softmax_xent_twins_agree_bitwise_on_the_gpu() {
    let ctx = context();
    for (k, seed) in [(1, 1), (2, 2), (10, 3), (100, 4)] {
        for scale in [1e-3f32, 1.0, 30.0, 1e4] {
            check_xent(&ctx, k, scale, seed);
        }
    }
}
