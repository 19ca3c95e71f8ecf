//! The mini-batch order of an epoch: which samples, in which order, and how they split into
//! batches. Pure functions of `(n, seed, epoch)`, the same on every machine.
//!
//! The shuffle draws its random numbers from the crate's Philox ([`philox4x32_10`]) under the run's
//! seed, in a counter domain of its own: SPSA directions set counter word 3 to 0 or 1, the batch
//! order to [`ORDER_DOMAIN`], so the two never share a random number.

use crate::rng::philox4x32_10;
use std::ops::Range;

/// Counter word 3 of every Philox block the batch order draws (ASCII "BATC"); SPSA uses 0 and 1.
pub const ORDER_DOMAIN: u32 = 0x4241_5443;
const _: () = assert!(
    ORDER_DOMAIN > 1,
    "must differ from SPSA's counter words 0 and 1"
);

/// The sample at each position of epoch `epoch` (0-based) of a run seeded `seed`.
///
/// Without `shuffle`, `0, 1, …, n − 1`. With it, Durstenfeld's Fisher–Yates: start from the
/// identity and for `i = n − 1` down to `1` swap positions `i` and `j`, with `j` uniform in
/// `0..=i` drawn by [`below`]`(i + 1)`. The 32-bit words come in order from the Philox blocks
/// `philox(counter = [b, epoch low, epoch high, ORDER_DOMAIN], key = [seed low, seed high])`,
/// `b = 0, 1, …`, each block's four words first to last.
///
/// # Panics
/// If `n` exceeds `u32::MAX` (the indices are `u32`; no dataset that large can be loaded).
pub fn epoch_order(n: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<u32> {
    assert!(u32::try_from(n).is_ok(), "at most u32::MAX samples");
    let mut order: Vec<u32> = (0..n as u32).collect();
    if shuffle {
        let mut words = Words::new(seed, epoch);
        for i in (1..n).rev() {
            let j = below(i as u32 + 1, || words.next_word());
            order.swap(i, j as usize);
        }
    }
    order
}

/// The stream of Philox words of one (seed, epoch).
struct Words {
    key: [u32; 2],
    epoch: [u32; 2],
    block: u32,
    buf: [u32; 4],
    used: usize,
}

impl Words {
    fn new(seed: u64, epoch: u64) -> Words {
        Words {
            key: [seed as u32, (seed >> 32) as u32],
            epoch: [epoch as u32, (epoch >> 32) as u32],
            block: 0,
            buf: [0; 4],
            used: 4,
        }
    }

    fn next_word(&mut self) -> u32 {
        if self.used == 4 {
            let counter = [self.block, self.epoch[0], self.epoch[1], ORDER_DOMAIN];
            self.buf = philox4x32_10(counter, self.key);
            // Below 2^32 samples the expected draw count stays under 2^33 words (2^31 blocks).
            self.block = self.block.wrapping_add(1);
            self.used = 0;
        }
        self.used += 1;
        self.buf[self.used - 1]
    }
}

/// A uniform integer in `0..s` (`s ≥ 1`) by Lemire's multiply-shift with rejection (ACM TOMACS
/// 2019): `m = x·s` in 64 bits for a word `x`; while the low half of `m` is below
/// `(2^32 − s) mod s`, draw a new `x`; the answer is the high half. Exactly uniform; the modulo
/// is computed only when the first low half is below `s`.
pub fn below(s: u32, mut next: impl FnMut() -> u32) -> u32 {
    debug_assert!(s > 0);
    let mut m = u64::from(next()) * u64::from(s);
    if (m as u32) < s {
        let threshold = s.wrapping_neg() % s;
        while (m as u32) < threshold {
            m = u64::from(next()) * u64::from(s);
        }
    }
    (m >> 32) as u32
}

/// How many batches an epoch of `n` samples has: `ceil(n / batch_size)`, where a `batch_size` of 0
/// or above `n` means one batch of all samples, and `n = 0` means none.
pub fn num_batches(n: usize, batch_size: usize) -> usize {
    n.div_ceil(effective(n, batch_size))
}

/// The batches of an epoch as ranges of positions (into [`epoch_order`]'s vector), in order: each
/// `batch_size` long but the last, which holds the remainder. A `batch_size` of 0 or above `n`
/// means one batch `0..n` (so "every sample" can be passed as 0 or as `n`); `n = 0` yields none.
pub fn batches(n: usize, batch_size: usize) -> impl Iterator<Item = Range<usize>> {
    let b = effective(n, batch_size);
    (0..num_batches(n, batch_size)).map(move |k| k * b..n.min((k + 1) * b))
}

/// The batch size actually used: `n` for 0 or anything above `n`, never 0 (so division is safe).
fn effective(n: usize, batch_size: usize) -> usize {
    if batch_size == 0 || batch_size > n {
        n.max(1)
    } else {
        batch_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A first word whose low half falls under the threshold is rejected and the next word used;
    /// `s = 2^31 + 1` makes the threshold `2^31 − 1`, so word 0 (low half 0) is rejected and word
    /// 1 (low half `s`) accepted with answer 0.
    #[test]
    fn below_rejects_words_under_the_threshold() {
        let s = (1u32 << 31) + 1;
        let mut stream = [0u32, 1, 7].into_iter();
        let mut drawn = 0;
        let got = below(s, || {
            drawn += 1;
            stream.next().unwrap()
        });
        assert_eq!((got, drawn), (0, 2), "answer and words consumed");
        let mut high = [u32::MAX].into_iter();
        assert_eq!(below(s, || high.next().unwrap()), (1u32 << 31));
    }
}
