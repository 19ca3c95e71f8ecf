//! The counter-based random numbers of SPSA: Philox4x32-10 (Salmon et al., SC'11, the Random123
//! generator), written here and in `shaders/rng.wgsl` with the same integer operations, so a
//! direction drawn on the GPU equals the one drawn on the CPU bit for bit.
//!
//! A direction is never stored (MeZO's trick): component k of direction i at step t is regenerated
//! wherever it is needed from the key `(seed, t, i, k)`, as `philox(counter = [k, i, t, 0|1],
//! key = [seed low, seed high])`. Counter word 3 is SPSA's domain (0 or 1); other users of the
//! generator take other values (the batch order: [`crate::batches::ORDER_DOMAIN`]).

use serde::{Deserialize, Serialize};

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Philox4x32 with 10 rounds: the four output words for `counter` under `key`.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let p0 = u64::from(M0) * u64::from(c[0]);
        let p1 = u64::from(M1) * u64::from(c[2]);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The distribution of the SPSA direction's components.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// ±1 with equal probability (the top bit of the first Philox word): SPSA's classic choice.
    #[default]
    Rademacher,
    /// Approximately standard normal: the Irwin–Hall sum of 12 uniforms on a 2⁻¹⁶ grid, minus 6.
    /// Mean 0, variance 1 up to the grid, tails cut at ±6; every value and the sum are exact in
    /// float32, so CPU and GPU agree without a shared `log`/`cos`.
    Gaussian,
}

impl Direction {
    /// `"rademacher"` or `"gaussian"`.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Rademacher => "rademacher",
            Direction::Gaussian => "gaussian",
        }
    }

    /// The shader's code for this distribution (`DIR_*` in `shaders/rng.wgsl`).
    pub fn code(self) -> u32 {
        match self {
            Direction::Rademacher => 0,
            Direction::Gaussian => 1,
        }
    }
}

/// What identifies one SPSA direction: the run's seed, the step (0-based epoch) and the sample
/// index within the step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectionKey {
    /// Run seed.
    pub seed: u64,
    /// 0-based step (epoch − 1).
    pub step: u32,
    /// Which of the step's directions.
    pub sample: u32,
}

/// Component `k` of the direction `key` under `dist`.
pub fn direction(key: DirectionKey, k: u32, dist: Direction) -> f32 {
    let philox_key = [key.seed as u32, (key.seed >> 32) as u32];
    let first = philox4x32_10([k, key.sample, key.step, 0], philox_key);
    match dist {
        Direction::Rademacher => {
            if first[0] >> 31 == 0 {
                1.0
            } else {
                -1.0
            }
        }
        Direction::Gaussian => {
            let second = philox4x32_10([k, key.sample, key.step, 1], philox_key);
            // Twelve 16-bit halves; their sum is below 2^20, exact as an f32.
            let mut sum = 0u32;
            for w in first.iter().chain(&second[..2]) {
                sum += (w & 0xffff) + (w >> 16);
            }
            sum as f32 * (1.0 / 65536.0) - 6.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123's known-answer vectors (kat_vectors, "philox4x32 10").
    #[test]
    fn philox_matches_random123_known_answers() {
        let cases = [
            (
                [0, 0, 0, 0],
                [0, 0],
                [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
            ),
            (
                [u32::MAX; 4],
                [u32::MAX; 2],
                [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
            ),
            (
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0],
                [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
            ),
        ];
        for (ctr, key, want) in cases {
            assert_eq!(
                philox4x32_10(ctr, key),
                want,
                "counter {ctr:x?} key {key:x?}"
            );
        }
    }

    /// Over many components the two distributions have the moments they claim.
    #[test]
    fn directions_have_mean_zero_and_unit_variance() {
        const N: u32 = 200_000;
        const MOMENT_TOLERANCE: f64 = 0.02;
        for dist in [Direction::Rademacher, Direction::Gaussian] {
            let key = DirectionKey {
                seed: 0x1234_5678_9abc,
                step: 7,
                sample: 3,
            };
            let (mut sum, mut sq) = (0.0f64, 0.0f64);
            for k in 0..N {
                let z = f64::from(direction(key, k, dist));
                sum += z;
                sq += z * z;
            }
            let mean = sum / f64::from(N);
            let var = sq / f64::from(N) - mean * mean;
            assert!(mean.abs() < MOMENT_TOLERANCE, "{dist:?}: mean {mean}");
            assert!(
                (var - 1.0).abs() < MOMENT_TOLERANCE,
                "{dist:?}: variance {var}"
            );
        }
    }
}
