//! Transcendentals written with `+`, `-`, `*`, `floor` and bit casts only, twinned line for line in
//! `shaders/math.wgsl`.
//!
//! GPU `exp`/`tanh`/division are allowed to differ from Rust's by several ULP (lavapipe: `exp` ~8 ULP,
//! `tanh` ~86 ULP) and a finite-difference gradient divides that noise by eps. Evaluating the same
//! Cephes-style polynomials with the same operations in the same order on both sides makes the CPU
//! reference and the GPU agree bit for bit wherever the GPU rounds `+` and `*` like IEEE 754 and does
//! not fuse them. Constants are given as bit patterns (hex floats in WGSL) so that no decimal-to-float
//! conversion can round differently; `tests/shaders.rs` checks the WGSL constants against these.

/// Largest distance of [`ln_f32`] from the correctly rounded natural log, in ULP, over every
/// positive normal float (measured exhaustively: 1; over 99.4% of them it is exact).
pub const LN_MAX_ULP: u32 = 1;

/// Bit patterns of every constant shared with `shaders/math.wgsl`, by WGSL name.
pub const SHARED_CONSTANTS: &[(&str, u32)] = &[
    ("EXP_HI", 0x42b0_0000),
    ("EXP_LO", 0xc2ae_0000),
    ("LOG2E", 0x3fb8_aa3b),
    ("EXP_C1", 0x3f31_8000),
    ("EXP_C2", 0xb95e_8083),
    ("EXP_P0", 0x3950_6967),
    ("EXP_P1", 0x3ab7_43ce),
    ("EXP_P2", 0x3c08_8908),
    ("EXP_P3", 0x3d2a_a9c1),
    ("EXP_P4", 0x3e2a_aaaa),
    ("EXP_P5", 0x3f00_0000),
    ("TANH_P0", 0xbbba_f0ea),
    ("TANH_P1", 0x3ca9_134e),
    ("TANH_P2", 0xbd5c_1e2d),
    ("TANH_P3", 0x3e08_8393),
    ("TANH_P4", 0xbeaa_aa99),
    ("TANH_SMALL", 0x3f20_0000),
    ("TANH_BIG", 0x4111_999a),
    ("SIGMOID_CLAMP", 0x42a0_0000),
    ("RECIP_MAGIC", 0x7ef3_11c3),
    ("LN_P0", 0x3d90_21bb),
    ("LN_P1", 0xbdeb_d1b8),
    ("LN_P2", 0x3def_251a),
    ("LN_P3", 0xbdfe_5d4f),
    ("LN_P4", 0x3e11_e9bf),
    ("LN_P5", 0xbe2a_ae50),
    ("LN_P6", 0x3e4c_ceac),
    ("LN_P7", 0xbe7f_fffc),
    ("LN_P8", 0x3eaa_aaaa),
    ("LN_SQRT2_MANT", 0x0035_04f3),
    ("F32_MIN_NORMAL_BITS", 0x0080_0000),
    ("F32_INF_BITS", 0x7f80_0000),
    // The cross-entropy series of `src/xent.rs` (`series_terms`, `series_max_x`): 1/6, 1/24 and
    // `SERIES_MAX_X_F32`, each rounded to float32.
    ("XENT_SIXTH", 0x3e2a_aaab),
    ("XENT_TWENTYFOURTH", 0x3d2a_aaab),
    ("XENT_SERIES_MAX_X", 0x3c80_0000),
];

const fn c(name: &str) -> f32 {
    f32::from_bits(bits(name))
}

const fn bits(name: &str) -> u32 {
    let mut i = 0;
    while i < SHARED_CONSTANTS.len() {
        if const_str_eq(SHARED_CONSTANTS[i].0, name) {
            return SHARED_CONSTANTS[i].1;
        }
        i += 1;
    }
    panic!("unknown shared constant")
}

const fn const_str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const EXP_HI: f32 = c("EXP_HI");
const EXP_LO: f32 = c("EXP_LO");
const LOG2E: f32 = c("LOG2E");
const EXP_C1: f32 = c("EXP_C1");
const EXP_C2: f32 = c("EXP_C2");
const EXP_P: [f32; 6] = [
    c("EXP_P0"),
    c("EXP_P1"),
    c("EXP_P2"),
    c("EXP_P3"),
    c("EXP_P4"),
    c("EXP_P5"),
];
const TANH_P: [f32; 5] = [
    c("TANH_P0"),
    c("TANH_P1"),
    c("TANH_P2"),
    c("TANH_P3"),
    c("TANH_P4"),
];
const TANH_SMALL: f32 = c("TANH_SMALL");
const TANH_BIG: f32 = c("TANH_BIG");
/// The sigmoid's input clamp (±80): beyond it the result is already 0 or 1 in float32.
pub(crate) const SIGMOID_CLAMP: f32 = c("SIGMOID_CLAMP");
const RECIP_MAGIC: u32 = bits("RECIP_MAGIC");
const LN_P: [f32; 9] = [
    c("LN_P0"),
    c("LN_P1"),
    c("LN_P2"),
    c("LN_P3"),
    c("LN_P4"),
    c("LN_P5"),
    c("LN_P6"),
    c("LN_P7"),
    c("LN_P8"),
];
const LN_SQRT2_MANT: u32 = bits("LN_SQRT2_MANT");
const F32_MIN_NORMAL_BITS: u32 = bits("F32_MIN_NORMAL_BITS");
const F32_INF_BITS: u32 = bits("F32_INF_BITS");

/// `e^x`, within a few ULP for x in [-87, 88]; the input is clamped to that range so that the result
/// is always a normal float (no subnormals, whose flushing differs between devices).
#[inline]
pub fn exp_f32(x: f32) -> f32 {
    // Same as the shader's two comparisons (NaN passes through).
    exp_in_range(x.clamp(EXP_LO, EXP_HI))
}

/// [`exp_f32`] past its clamp, for callers whose input already lies in `[EXP_LO, EXP_HI]` (or is
/// NaN), where the clamp is the identity: the same bits, two comparisons fewer per lane.
#[inline(always)]
pub(crate) fn exp_in_range(x: f32) -> f32 {
    let fx = (x * LOG2E + 0.5).floor();
    // Cody-Waite: ln 2 split in two so that fx * C1 is exact.
    let r = x - fx * EXP_C1;
    let r = r - fx * EXP_C2;
    let z = r * r;
    let mut y = EXP_P[0];
    y = y * r + EXP_P[1];
    y = y * r + EXP_P[2];
    y = y * r + EXP_P[3];
    y = y * r + EXP_P[4];
    y = y * r + EXP_P[5];
    // Grouped so: Mesa's NIR reassociates `(a + b) + 1.0` into `a + (b + 1.0)`, so that is the
    // only order both sides can share.
    y = y * z + (r + 1.0);
    // `fx` is a whole number in [-126, 128] (x is clamped) or NaN, where `as i32` gives 0; the
    // unchecked conversion of the same values vectorises (the saturating one is scalarised).
    let n = if fx.is_nan() {
        0
    } else {
        // SAFETY: fx is finite and within i32's range (see above).
        unsafe { fx.to_int_unchecked::<i32>() }
    };
    y * f32::from_bits(((n + 127) as u32) << 23)
}

/// `1/d` for d >= 1 by four Newton steps from a bit-trick estimate (no division instruction, whose
/// rounding is not specified on GPUs). Within about 1 ULP of the correctly rounded value.
#[inline]
pub fn recip_f32(d: f32) -> f32 {
    let mut r = f32::from_bits(RECIP_MAGIC.wrapping_sub(d.to_bits()));
    r = r * (2.0 - d * r);
    r = r * (2.0 - d * r);
    r = r * (2.0 - d * r);
    // Last step in correction form: the plain form can stall one ULP short (1/1 → 0.99999994).
    r = r + r * (1.0 - d * r);
    r
}

/// Logistic sigmoid `1 / (1 + e^-x)`; the input is clamped to ±80 where the result is already 0 or
/// 1 to float32 precision, keeping every intermediate normal.
#[inline]
pub fn sigmoid_f32(x: f32) -> f32 {
    let x = x.clamp(-SIGMOID_CLAMP, SIGMOID_CLAMP);
    // -x lies in [-80, 80] (or is NaN), inside exp's clamp.
    recip_f32(1.0 + exp_in_range(-x))
}

/// Hyperbolic tangent: an odd polynomial near 0 (where `1 - 2/(e^2x + 1)` would cancel), the
/// exponential form in between, and ±1 beyond 9.1 where tanh rounds to ±1 in float32.
#[inline]
pub fn tanh_f32(x: f32) -> f32 {
    let a = if x < 0.0 { -x } else { x };
    let t = if a < TANH_SMALL {
        let z = a * a;
        let mut p = TANH_P[0];
        p = p * z + TANH_P[1];
        p = p * z + TANH_P[2];
        p = p * z + TANH_P[3];
        p = p * z + TANH_P[4];
        p * z * a + a
    } else if a < TANH_BIG {
        // a + a lies in [1.25, 18.2) here, inside exp's clamp.
        1.0 - 2.0 * recip_f32(exp_in_range(a + a) + 1.0)
    } else {
        1.0
    };
    if x < 0.0 {
        -t
    } else {
        t
    }
}

/// `max(x, 0)` written as a comparison so that NaN and -0 behave the same on every device.
#[inline]
pub fn relu_f32(x: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        0.0
    }
}

/// Natural logarithm, within [`LN_MAX_ULP`] of the correctly rounded value for every positive
/// normal float (Cephes `logf`: exponent and mantissa split by bit casts, mantissa normalised to
/// [sqrt(1/2), sqrt(2)), a degree-9 polynomial, then `k * ln 2` added as the hi/lo pair of
/// [`exp_f32`]). Exact at 1 (`+0`).
///
/// Outside the positive normals, decided on the bits so no float comparison (which a GPU may
/// optimise assuming no NaN) is involved:
/// * NaN (either sign) and `+inf` are returned unchanged;
/// * `+0`, `-0`, positive subnormals, negatives and `-inf` are treated as [`f32::MIN_POSITIVE`] and
///   give `ln(2^-126) = -87.33655`: finite, like [`exp_f32`]'s clamp, and immune to the
///   subnormal flushing that differs between devices.
#[inline]
pub fn ln_f32(x: f32) -> f32 {
    let u = x.to_bits();
    // Chosen at the end rather than returned early: the same values, and a loop of calls
    // vectorises (an early return keeps it scalar).
    let passes = (u & 0x7fff_ffff) > F32_INF_BITS || u == F32_INF_BITS;
    let u = if !(F32_MIN_NORMAL_BITS..=0x7fff_ffff).contains(&u) {
        F32_MIN_NORMAL_BITS
    } else {
        u
    };
    let mant = u & 0x007f_ffff;
    let mut k = (u >> 23) as i32 - 127;
    // m = 1.mant in [1, 2); halve it (exponent 126) when m >= sqrt 2 so that f = m - 1 (exact,
    // Sterbenz) lies in [sqrt(1/2) - 1, sqrt 2 - 1).
    let mut m_bits = mant | 0x3f80_0000;
    if mant >= LN_SQRT2_MANT {
        m_bits = mant | 0x3f00_0000;
        k += 1;
    }
    let f = f32::from_bits(m_bits) - 1.0;
    let kf = k as f32;
    let z = f * f;
    let mut y = LN_P[0];
    y = y * f + LN_P[1];
    y = y * f + LN_P[2];
    y = y * f + LN_P[3];
    y = y * f + LN_P[4];
    y = y * f + LN_P[5];
    y = y * f + LN_P[6];
    y = y * f + LN_P[7];
    y = y * f + LN_P[8];
    y = y * f * z;
    // Small terms first, the exact k * ln2_hi last, as Cephes.
    y += kf * EXP_C2;
    y -= 0.5 * z;
    let r = f + y;
    let r = r + kf * EXP_C1;
    if passes {
        x
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    /// Worst ULP distance of [`ln_f32`] from the correctly rounded `ln` over `bits`, as
    /// (distance, input).
    fn worst_ln_ulp(bits: impl Iterator<Item = u32>) -> (u32, f32) {
        bits.map(f32::from_bits)
            .map(|x| (ulps(ln_f32(x), (x as f64).ln() as f32), x))
            .fold((0, 0.0), |w, d| if d.0 > w.0 { d } else { w })
    }

    fn assert_ln_within_bound(what: &str, (d, x): (u32, f32)) {
        eprintln!("ln_f32 {what}: worst {d} ULP at {x:e}");
        assert!(
            d <= LN_MAX_ULP,
            "ln_f32 {what}: ln({x:e}) = {:e} is {d} ULP from {:e} (allowed {LN_MAX_ULP})",
            ln_f32(x),
            (x as f64).ln()
        );
    }

    /// The ULP criterion holds even where ln -> 0 (x near 1): `f = m - 1` is exact and the
    /// polynomial only adds `O(f^2)`, so the relative error stays at rounding level and no
    /// absolute floor is needed.
    #[test]
    fn ln_is_within_its_ulp_bound_on_every_float_of_1_to_1e4_and_its_mantissa_range() {
        let (lo, hi) = (0.5f32.to_bits(), 1e4f32.to_bits());
        assert_ln_within_bound("[0.5, 1e4] every float", worst_ln_ulp(lo..=hi));
    }

    #[test]
    fn ln_is_within_its_ulp_bound_across_all_positive_normals() {
        // A prime stride reaches every exponent and scattered mantissas (about 35 M inputs).
        const STRIDE: usize = 61;
        let normals = (f32::MIN_POSITIVE.to_bits()..f32::INFINITY.to_bits()).step_by(STRIDE);
        assert_ln_within_bound("all normals, sampled", worst_ln_ulp(normals));
        let ends = [
            1e-30f32,
            1e30,
            f32::MIN_POSITIVE,
            f32::MAX,
            std::f32::consts::FRAC_1_SQRT_2,
            std::f32::consts::SQRT_2,
        ];
        assert_ln_within_bound(
            "range ends",
            worst_ln_ulp(ends.map(f32::to_bits).into_iter()),
        );
    }

    #[test]
    fn ln_special_values_are_the_documented_ones() {
        let floor = ln_f32(f32::MIN_POSITIVE);
        assert_eq!(floor, -87.33655, "ln(MIN_POSITIVE)");
        let below = [0.0f32, -0.0, 1e-45, 1e-40, -1.0, -1e30, f32::NEG_INFINITY];
        for x in below {
            assert_eq!(ln_f32(x).to_bits(), floor.to_bits(), "ln({x:e})");
        }
        assert_eq!(ln_f32(f32::INFINITY), f32::INFINITY);
        assert!(ln_f32(f32::NAN).is_nan());
        assert!(ln_f32(-f32::NAN).is_nan());
        assert_eq!(ln_f32(1.0).to_bits(), 0.0f32.to_bits(), "ln(1) is +0");
    }

    #[test]
    fn exp_is_within_4_ulp_of_std_on_its_range() {
        const MAX_ULP: u32 = 4;
        let mut worst = (0.0f32, 0u32);
        let mut x = -87.0f32;
        while x < 88.0 {
            let d = ulps(exp_f32(x), x.exp());
            if d > worst.1 {
                worst = (x, d);
            }
            x += 0.0137;
        }
        assert!(
            worst.1 <= MAX_ULP,
            "exp({}) off by {} ULP: {} vs {}",
            worst.0,
            worst.1,
            exp_f32(worst.0),
            worst.0.exp()
        );
    }

    #[test]
    fn sigmoid_and_tanh_are_within_4_ulp_of_f64_reference() {
        const MAX_ULP: u32 = 4;
        let mut x = -30.0f32;
        while x < 30.0 {
            let s = (1.0 / (1.0 + (-(x as f64)).exp())) as f32;
            assert!(
                ulps(sigmoid_f32(x), s) <= MAX_ULP,
                "sigmoid({x}): {} vs {s}",
                sigmoid_f32(x)
            );
            let t = (x as f64).tanh() as f32;
            assert!(
                ulps(tanh_f32(x), t) <= MAX_ULP,
                "tanh({x}): {} vs {t}",
                tanh_f32(x)
            );
            x += 0.00731;
        }
    }

    /// sigmoid and tanh call exp past its clamp where their input is already inside it: the same
    /// bits as through [`exp_f32`] (with its clamp) on a strided sweep of every float32 pattern.
    #[test]
    fn exp_past_its_clamp_gives_the_clamped_exps_bits_in_sigmoid_and_tanh() {
        const STRIDE: usize = 997;
        let sweep = (0..=u32::MAX).step_by(STRIDE).map(f32::from_bits);
        let specials = [
            0.0f32,
            -0.0,
            80.0,
            -80.0,
            9.1,
            -9.1,
            0.625,
            f32::INFINITY,
            f32::NAN,
        ];
        for x in sweep.chain(specials) {
            let c = x.clamp(-SIGMOID_CLAMP, SIGMOID_CLAMP);
            let sig = recip_f32(1.0 + exp_f32(-c));
            assert_eq!(sigmoid_f32(x).to_bits(), sig.to_bits(), "sigmoid({x:e})");
            let a = x.abs();
            if (TANH_SMALL..TANH_BIG).contains(&a) {
                let t = 1.0 - 2.0 * recip_f32(exp_f32(a + a) + 1.0);
                let t = if x < 0.0 { -t } else { t };
                assert_eq!(tanh_f32(x).to_bits(), t.to_bits(), "tanh({x:e})");
            }
        }
    }

    #[test]
    fn extremes_stay_finite_and_saturate() {
        assert_eq!(sigmoid_f32(1e30), 1.0);
        assert!(sigmoid_f32(-1e30) < 1e-30 && sigmoid_f32(-1e30) > 0.0);
        assert_eq!(tanh_f32(50.0), 1.0);
        assert_eq!(tanh_f32(-50.0), -1.0);
        assert_eq!(exp_f32(1000.0), exp_f32(88.0));
        assert!(exp_f32(88.0).is_finite());
        assert!(sigmoid_f32(f32::NAN).is_nan());
        assert_eq!(relu_f32(-0.0).to_bits(), 0.0f32.to_bits());
    }
}
