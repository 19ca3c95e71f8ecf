// Transcendentals with + - * floor and bitcasts only: a line-for-line twin of src/math.rs, so that the
// GPU and the CPU reference round identically. Constants are hex floats (exact); tests/shaders.rs
// checks them against the Rust bit patterns.

const EXP_HI: f32 = 0x1.6p+6f;
const EXP_LO: f32 = -0x1.5cp+6f;
const LOG2E: f32 = 0x1.715476p+0f;
const EXP_C1: f32 = 0x1.63p-1f;
const EXP_C2: f32 = -0x1.bd0106p-13f;
const EXP_P0: f32 = 0x1.a0d2cep-13f;
const EXP_P1: f32 = 0x1.6e879cp-10f;
const EXP_P2: f32 = 0x1.11121p-7f;
const EXP_P3: f32 = 0x1.555382p-5f;
const EXP_P4: f32 = 0x1.555554p-3f;
const EXP_P5: f32 = 0x1p-1f;
const TANH_P0: f32 = -0x1.75e1d4p-8f;
const TANH_P1: f32 = 0x1.52269cp-6f;
const TANH_P2: f32 = -0x1.b83c5ap-5f;
const TANH_P3: f32 = 0x1.110726p-3f;
const TANH_P4: f32 = -0x1.555532p-2f;
const TANH_SMALL: f32 = 0x1.4p-1f;
const TANH_BIG: f32 = 0x1.233334p+3f;
const SIGMOID_CLAMP: f32 = 0x1.4p+6f;
const RECIP_MAGIC: u32 = 0x7ef311c3u;
const LN_P0: f32 = 0x1.204376p-4f;
const LN_P1: f32 = -0x1.d7a37p-4f;
const LN_P2: f32 = 0x1.de4a34p-4f;
const LN_P3: f32 = -0x1.fcba9ep-4f;
const LN_P4: f32 = 0x1.23d37ep-3f;
const LN_P5: f32 = -0x1.555ca0p-3f;
const LN_P6: f32 = 0x1.999d58p-3f;
const LN_P7: f32 = -0x1.fffff8p-3f;
const LN_P8: f32 = 0x1.555554p-2f;
const LN_SQRT2_MANT: u32 = 0x003504f3u;
const F32_MIN_NORMAL_BITS: u32 = 0x00800000u;
const F32_INF_BITS: u32 = 0x7f800000u;
const XENT_SIXTH: f32 = 0x1.555556p-3f;
const XENT_TWENTYFOURTH: f32 = 0x1.555556p-5f;
const XENT_SERIES_MAX_X: f32 = 0x1p-6f;

// Activation codes, as in src/model.rs (Activation::code).
const ACT_IDENTITY: u32 = 0u;
const ACT_SIGMOID: u32 = 1u;
const ACT_TANH: u32 = 2u;
const ACT_RELU: u32 = 3u;

fn exp_f32(x_in: f32) -> f32 {
    var x = x_in;
    if (x > EXP_HI) {
        x = EXP_HI;
    }
    if (x < EXP_LO) {
        x = EXP_LO;
    }
    let fx = floor(x * LOG2E + 0.5);
    var r = x - fx * EXP_C1;
    r = r - fx * EXP_C2;
    let z = r * r;
    var y = EXP_P0;
    y = y * r + EXP_P1;
    y = y * r + EXP_P2;
    y = y * r + EXP_P3;
    y = y * r + EXP_P4;
    y = y * r + EXP_P5;
    // Grouped so: Mesa's NIR reassociates `(a + b) + 1.0` into `a + (b + 1.0)` (see src/math.rs).
    y = y * z + (r + 1.0);
    let n = i32(fx);
    return y * bitcast<f32>(u32(n + 127) << 23u);
}

fn recip_f32(d: f32) -> f32 {
    var r = bitcast<f32>(RECIP_MAGIC - bitcast<u32>(d));
    r = r * (2.0 - d * r);
    r = r * (2.0 - d * r);
    r = r * (2.0 - d * r);
    r = r + r * (1.0 - d * r);
    return r;
}

fn sigmoid_f32(x_in: f32) -> f32 {
    var x = x_in;
    if (x > SIGMOID_CLAMP) {
        x = SIGMOID_CLAMP;
    }
    if (x < -SIGMOID_CLAMP) {
        x = -SIGMOID_CLAMP;
    }
    return recip_f32(1.0 + exp_f32(-x));
}

fn tanh_f32(x: f32) -> f32 {
    var a = x;
    if (x < 0.0) {
        a = -x;
    }
    var t: f32;
    if (a < TANH_SMALL) {
        let z = a * a;
        var p = TANH_P0;
        p = p * z + TANH_P1;
        p = p * z + TANH_P2;
        p = p * z + TANH_P3;
        p = p * z + TANH_P4;
        t = p * z * a + a;
    } else if (a < TANH_BIG) {
        t = 1.0 - 2.0 * recip_f32(exp_f32(a + a) + 1.0);
    } else {
        t = 1.0;
    }
    if (x < 0.0) {
        return -t;
    }
    return t;
}

// NaN and +inf pass through; below the normals (0, subnormals, negatives, -inf) as MIN_POSITIVE.
fn ln_f32(x: f32) -> f32 {
    let u_in = bitcast<u32>(x);
    if ((u_in & 0x7fffffffu) > F32_INF_BITS || u_in == F32_INF_BITS) {
        return x;
    }
    var u = u_in;
    if (u < F32_MIN_NORMAL_BITS || u > 0x7fffffffu) {
        u = F32_MIN_NORMAL_BITS;
    }
    let mant = u & 0x007fffffu;
    var k = i32(u >> 23u) - 127;
    var m_bits = mant | 0x3f800000u;
    if (mant >= LN_SQRT2_MANT) {
        m_bits = mant | 0x3f000000u;
        k = k + 1;
    }
    let f = bitcast<f32>(m_bits) - 1.0;
    let kf = f32(k);
    let z = f * f;
    var y = LN_P0;
    y = y * f + LN_P1;
    y = y * f + LN_P2;
    y = y * f + LN_P3;
    y = y * f + LN_P4;
    y = y * f + LN_P5;
    y = y * f + LN_P6;
    y = y * f + LN_P7;
    y = y * f + LN_P8;
    y = y * f * z;
    y += kf * EXP_C2;
    y -= 0.5 * z;
    let r = f + y;
    return r + kf * EXP_C1;
}

// Softmax cross-entropy helpers (src/math.rs softmax_xent): a kernel keeps m = z[0] and
// m = xent_max_step(m, z[j]) for j ascending; then s = 0.0 and s = xent_sum_step(s, z[j], m) for j
// ascending; the loss is xent_from_parts(m, s, z[label]), or with soft targets ls = ln_f32(s) and
// acc = 0.0, acc = acc + xent_soft_term(m, ls, z[j], p[j]) for j ascending.
fn xent_max_step(m: f32, z: f32) -> f32 {
    if (z > m) {
        return z;
    }
    return m;
}

fn xent_sum_step(s: f32, z: f32, m: f32) -> f32 {
    return s + exp_f32(z - m);
}

fn xent_from_parts(m: f32, s: f32, zy: f32) -> f32 {
    return (m - zy) + ln_f32(s);
}

fn xent_soft_term(m: f32, ls: f32, z: f32, p: f32) -> f32 {
    return p * ((m - z) + ls);
}

fn relu_f32(x: f32) -> f32 {
    if (x > 0.0) {
        return x;
    }
    return 0.0;
}

fn activate(x: f32, kind: u32) -> f32 {
    switch kind {
        case ACT_SIGMOID: {
            return sigmoid_f32(x);
        }
        case ACT_TANH: {
            return tanh_f32(x);
        }
        case ACT_RELU: {
            return relu_f32(x);
        }
        default: {
            return x;
        }
    }
}
