//! One step's nudged evaluations split over several evaluators (`--shard`, and the ranks of
//! `--distributed mpi`): each computes a contiguous [`Share`] of every probe's evaluations, the
//! values are gathered in parameter order, and the trainer applies one update as if one evaluator
//! had computed them all.
//!
//! The shares come from [`split`], a fixed integer rule over speeds measured once at start
//! ([`build_sharded`]); the speeds are kept, so the assignment never moves with timing noise.

use crate::error::{Error, Fix, Result, Setting};
use crate::estimate::{Probe, Shape};
use crate::evaluator::{check_probe, Evaluator, History};
use crate::precision::Real;
use crate::rng::Direction;
use crate::settings::{DeviceInfo, Hyper, ShardInfo};
use crate::Dataset;
use std::cell::OnceCell;
use std::ops::Range;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// Which part of each probe's nudged evaluations an evaluator computes: for coordinate probes the
/// parameters `[start, end)` (under every offset), for SPSA the evaluations `[start, end)` of its
/// `2q`. The unperturbed loss is always computed. Values outside the share are left as they were.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    /// First evaluation.
    pub start: usize,
    /// One past the last (clamped to the count).
    pub end: usize,
}

impl Share {
    /// Everything (the default).
    pub const ALL: Share = Share {
        start: 0,
        end: usize::MAX,
    };

    /// The share `range`.
    pub fn new(range: Range<usize>) -> Share {
        Share {
            start: range.start,
            end: range.end,
        }
    }

    /// The share of `n` evaluations, clamped.
    pub fn range(self, n: usize) -> Range<usize> {
        let end = self.end.min(n);
        self.start.min(end)..end
    }

    /// Whether it holds all `n` evaluations.
    pub fn covers(self, n: usize) -> bool {
        self.range(n) == (0..n)
    }
}

impl Default for Share {
    fn default() -> Self {
        Share::ALL
    }
}

/// Splits `n` items into contiguous ranges, one per speed, in order: each gets
/// `floor(n·speed/total)` and the leftover items go one each to the largest remainders (ties to
/// the earlier). Exact integer arithmetic, so the same speeds always give the same ranges. A zero
/// speed gets nothing unless every speed is zero, when all count as equal.
pub fn split(n: usize, speeds: &[u64]) -> Vec<Range<usize>> {
    let all_zero = speeds.iter().all(|&s| s == 0);
    let w: Vec<u128> = speeds
        .iter()
        .map(|&s| if all_zero { 1 } else { s as u128 })
        .collect();
    let total: u128 = w.iter().sum();
    if total == 0 {
        return Vec::new();
    }
    let mut sizes: Vec<usize> = w
        .iter()
        .map(|&x| (n as u128 * x / total) as usize)
        .collect();
    let mut left = n - sizes.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..w.len()).filter(|&i| w[i] > 0).collect();
    // Stable sort: equal remainders keep shard order.
    order.sort_by_key(|&i| std::cmp::Reverse(n as u128 * w[i] % total));
    for &i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        sizes[i] += 1;
        left -= 1;
    }
    let mut at = 0;
    sizes
        .into_iter()
        .map(|s| {
            at += s;
            at - s..at
        })
        .collect()
}

/// Evaluations per offset of a probe of `shape` for `p` parameters: P for coordinates, `2q` for
/// SPSA. Shares count these.
pub fn share_len(p: usize, shape: Shape) -> usize {
    match shape {
        Shape::Coordinates(_) => p,
        Shape::Directions(q) => 2 * q as usize,
    }
}

/// The shares of [`split`] for `speeds` over a probe of `shape` and `p` parameters.
pub fn shares(p: usize, shape: Shape, speeds: &[u64]) -> Vec<Share> {
    split(share_len(p, shape), speeds)
        .into_iter()
        .map(Share::new)
        .collect()
}

/// The ranges of a `values` slice of `runs` runs (see [`Evaluator::probe`]) that `share` holds,
/// in order: for coordinates, each run's offsets one after another.
pub fn value_ranges(p: usize, shape: Shape, runs: usize, share: Share) -> Vec<Range<usize>> {
    let n = shape.len(p);
    let per = share_len(p, shape);
    let r = share.range(per);
    let offsets = match shape {
        Shape::Coordinates(count) => count,
        Shape::Directions(_) => 1,
    };
    (0..runs)
        .flat_map(|run| (0..offsets).map(move |j| run * n + j * per))
        .map(|base| base + r.start..base + r.end)
        .collect()
}

/// A probe of `shape` for timing (the nudges' size does not change the work).
fn timing_probe(shape: Shape) -> Probe {
    match shape {
        Shape::Coordinates(count) => Probe::coordinates(&vec![1e-3; count]),
        Shape::Directions(samples) => Probe::Directions {
            eps: 1e-3,
            seed: 0,
            step: 0,
            samples,
            direction: Direction::Rademacher,
        },
    }
}

/// Evaluations per second of one probe of `ev` at `params` (`share` of the evaluations, the
/// unperturbed loss counted): one untimed probe first (drivers compile lazily), then one timed.
fn measure<E: Evaluator>(
    ev: &mut E,
    params: &[f32],
    runs: usize,
    shape: Shape,
    share: Share,
) -> Result<u64> {
    let p = ev.num_params();
    let probes = vec![timing_probe(shape); runs];
    let active = vec![true; runs];
    let mut losses = vec![E::Loss::ZERO; runs];
    let mut values = vec![E::Loss::ZERO; runs * shape.len(p)];
    let all: Vec<f32> = params.iter().copied().cycle().take(runs * p).collect();
    ev.probe(&all, &probes, &active, &mut losses, &mut values)?;
    let start = Instant::now();
    ev.probe(&all, &probes, &active, &mut losses, &mut values)?;
    let seconds = start.elapsed().as_secs_f64().max(1e-9);
    let offsets = shape.len(p) / share_len(p, shape).max(1);
    let evals = runs * (1 + offsets * share.range(share_len(p, shape)).len());
    Ok(((evals as f64 / seconds).round() as u64).max(1))
}

/// What a sharded evaluator is built for: how many shards, the parameters per run, the run count
/// and probe shape, and the parameters to time a probe at.
pub struct ShardPlan<'a> {
    /// Shards (adapters), in order.
    pub count: usize,
    /// Parameters per run.
    pub p: usize,
    /// Runs per probe.
    pub runs: usize,
    /// The probes' shape.
    pub shape: Shape,
    /// One run's parameters for the timed probe.
    pub params: &'a [f32],
}

/// Builds a [`ShardedEvaluator`] of `plan.count` evaluators made by `make(i, share)`. The first
/// time (`speeds` empty) each shard is built on an equal share and timed once ([`split`] of the
/// measured evaluations per second then sizes the shares, and shards whose share changed are built
/// again); later builds (a mini-batch remainder, another estimator) reuse the recorded speeds.
pub fn build_sharded<E: Evaluator>(
    plan: &ShardPlan<'_>,
    speeds: &OnceCell<Vec<u64>>,
    mut make: impl FnMut(usize, Share) -> Result<E>,
) -> Result<ShardedEvaluator<E>> {
    let mut timed: Vec<Option<(Share, E)>> = (0..plan.count).map(|_| None).collect();
    if speeds.get().is_none() {
        let equal = shares(plan.p, plan.shape, &vec![1; plan.count]);
        let mut measured = Vec::with_capacity(plan.count);
        for (i, &share) in equal.iter().enumerate() {
            let mut ev = make(i, share)?;
            measured.push(measure(&mut ev, plan.params, plan.runs, plan.shape, share)?);
            timed[i] = Some((share, ev));
        }
        let _ = speeds.set(measured);
    }
    let speeds = speeds.get().cloned().unwrap_or_default();
    let mut parts = Vec::with_capacity(plan.count);
    for (i, share) in shares(plan.p, plan.shape, &speeds).into_iter().enumerate() {
        parts.push(match timed[i].take() {
            Some((s, ev)) if s == share => ev,
            _ => make(i, share)?,
        });
    }
    ShardedEvaluator::new(parts, speeds, plan.shape)
}

/// One shard's losses and values.
type Scratch<L> = (Vec<L>, Vec<L>);

/// Evaluators that each compute a [`Share`] of every probe, run side by side (one thread each) and
/// gathered in parameter order: to the trainer, one evaluator. Built by [`build_sharded`]; the
/// shards must agree bit for bit for the result to equal one of them alone.
#[derive(Debug)]
pub struct ShardedEvaluator<E: Evaluator> {
    shards: Vec<E>,
    shares: Vec<Share>,
    speeds: Vec<u64>,
    shape: Shape,
    /// Each shard's losses and values.
    scratch: Vec<Scratch<E::Loss>>,
}

impl<E: Evaluator> ShardedEvaluator<E> {
    /// `shards[i]` built for share `shares(P, shape, speeds)[i]`.
    pub fn new(shards: Vec<E>, speeds: Vec<u64>, shape: Shape) -> Result<Self> {
        let p = shards.first().map_or(0, Evaluator::num_params);
        if shards.is_empty() || shards.len() != speeds.len() {
            return Err(Error::Config(format!(
                "sharding: {} evaluators for {} speeds",
                shards.len(),
                speeds.len()
            )));
        }
        if shards.iter().any(|s| s.num_params() != p) {
            return Err(Error::Config(
                "sharding: shards of different networks".into(),
            ));
        }
        let count = shards.len();
        Ok(ShardedEvaluator {
            shards,
            shares: shares(p, shape, &speeds),
            speeds,
            shape,
            scratch: (0..count).map(|_| (Vec::new(), Vec::new())).collect(),
        })
    }

    /// Each shard's share, in order.
    pub fn shares(&self) -> &[Share] {
        &self.shares
    }

    /// The shards' measured evaluations per second, in order.
    pub fn speeds(&self) -> &[u64] {
        &self.speeds
    }
}

impl<E: Evaluator + Send> Evaluator for ShardedEvaluator<E> {
    type Loss = E::Loss;

    fn num_params(&self) -> usize {
        self.shards[0].num_params()
    }

    fn max_runs(&self) -> usize {
        self.shards
            .iter()
            .map(Evaluator::max_runs)
            .min()
            .unwrap_or(1)
    }

    fn probe(
        &mut self,
        params: &[f32],
        probes: &[Probe],
        active: &[bool],
        losses: &mut [E::Loss],
        values: &mut [E::Loss],
    ) -> Result<()> {
        let p = self.num_params();
        check_probe(
            p,
            self.max_runs(),
            params.len(),
            probes,
            active,
            losses.len(),
            values.len(),
        )?;
        let per = share_len(p, self.shape);
        let busy: Vec<bool> = self
            .shares
            .iter()
            .map(|s| !s.range(per).is_empty())
            .collect();
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .shards
                .iter_mut()
                .zip(self.scratch.iter_mut())
                .zip(&busy)
                .filter(|(_, &b)| b)
                .map(|((ev, (l, v)), _)| {
                    l.resize(losses.len(), E::Loss::ZERO);
                    v.resize(values.len(), E::Loss::ZERO);
                    scope.spawn(move || ev.probe(params, probes, active, l, v))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Gpu("a shard's thread panicked".into())))
                })
                .collect()
        });
        results.into_iter().collect::<Result<Vec<()>>>()?;
        let first = busy.iter().position(|&b| b).unwrap_or(0);
        for (r, l) in losses.iter_mut().enumerate().filter(|(r, _)| active[*r]) {
            *l = self.scratch[first].0[r];
        }
        for (i, share) in self.shares.iter().enumerate().filter(|(i, _)| busy[*i]) {
            let shard = &self.scratch[i].1;
            let per_run = value_ranges(p, self.shape, probes.len(), *share);
            let ranges_per_run = per_run.len() / probes.len();
            for (k, range) in per_run.into_iter().enumerate() {
                // Inactive runs keep their slots, as Evaluator::probe promises.
                if active[k / ranges_per_run] {
                    values[range.clone()].copy_from_slice(&shard[range]);
                }
            }
        }
        Ok(())
    }

    fn device(&self) -> DeviceInfo {
        let each: Vec<DeviceInfo> = self.shards.iter().map(Evaluator::device).collect();
        let p = self.num_params();
        let params = shares(p, Shape::Coordinates(1), &self.speeds);
        let directions = matches!(self.shape, Shape::Directions(_));
        let join = |f: fn(&DeviceInfo) -> &str, sep: &str| {
            let v: Vec<&str> = each.iter().map(f).collect();
            v.join(sep)
        };
        DeviceInfo {
            kind: each[0].kind.clone(),
            adapter: join(|d| &d.adapter, " + "),
            backend: join(|d| &d.backend, "+"),
            shards: each
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let r = params[i].range(p);
                    ShardInfo {
                        adapter: d.adapter.clone(),
                        backend: d.backend.clone(),
                        params: [r.start, r.end],
                        evaluations: directions.then(|| {
                            let e = self.shares[i].range(share_len(p, self.shape));
                            [e.start, e.end]
                        }),
                        speed: Some(self.speeds[i]),
                    }
                })
                .collect(),
        }
    }

    fn batch_len(&self) -> usize {
        self.shards[0].batch_len()
    }

    fn set_batch(&mut self, data: &Dataset) -> Result<()> {
        self.shards.iter_mut().try_for_each(|s| s.set_batch(data))
    }

    fn kernel_note(&self) -> Option<String> {
        self.shards[0].kernel_note()
    }

    fn resident_loop(
        &mut self,
        init: &[f32],
        hyper: &Hyper,
        epochs_per_submit: usize,
        stop: Option<&AtomicBool>,
        on_epoch: &mut dyn FnMut(usize, f64),
    ) -> Result<History> {
        let _ = (init, hyper, epochs_per_submit, stop, on_epoch);
        Err(refuse_resident())
    }
}

/// The resident loop keeps the update on one device; a split step needs the host to gather.
pub fn refuse_resident() -> Error {
    Error::refused(
        &[(Setting::Shard, ""), (Setting::Loop, "resident")],
        "the resident loop applies the update on one GPU; a split step is gathered on the host",
        Some(Fix::Use(Setting::Loop, "host")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(n: usize, speeds: &[u64]) -> Vec<usize> {
        split(n, speeds).iter().map(|r| r.len()).collect()
    }

    /// Contiguous, in order, covering [0, n) without overlap.
    fn assert_tiles(n: usize, ranges: &[Range<usize>]) {
        let mut at = 0;
        for (i, r) in ranges.iter().enumerate() {
            assert_eq!(
                r.start, at,
                "range {i} of {ranges:?} starts at {} not {at}",
                r.start
            );
            at = r.end;
        }
        assert_eq!(at, n, "{ranges:?} ends at {at}, not {n}");
    }

    #[test]
    fn split_is_proportional_to_speed() {
        assert_eq!(sizes(100, &[1, 1]), [50, 50]);
        assert_eq!(sizes(100, &[3, 1]), [75, 25]);
        assert_eq!(sizes(9, &[1, 2]), [3, 6]);
        assert_tiles(9, &split(9, &[1, 2]));
    }

    #[test]
    fn split_gives_remainders_to_the_largest_fractions_then_the_earlier() {
        // 10·(1,1,1)/3 = 3.33 each: the one left over goes to the first.
        assert_eq!(sizes(10, &[1, 1, 1]), [4, 3, 3]);
        // 11 = 3.67 + 3.67 + 3.67: two left, to the first two.
        assert_eq!(sizes(11, &[1, 1, 1]), [4, 4, 3]);
        // 10·(1,2)/3 = 3.33, 6.67: the larger fraction gets it.
        assert_eq!(sizes(10, &[1, 2]), [3, 7]);
        for n in 0..50 {
            for speeds in [&[7u64, 3, 5][..], &[1, 1000], &[u64::MAX, u64::MAX, 1]] {
                assert_tiles(n, &split(n, speeds));
            }
        }
    }

    #[test]
    fn split_gives_a_zero_speed_nothing_unless_all_are_zero() {
        assert_eq!(sizes(10, &[0, 5]), [0, 10]);
        assert_eq!(sizes(10, &[5, 0, 5]), [5, 0, 5]);
        assert_eq!(sizes(10, &[0, 0]), [5, 5]);
        assert_tiles(10, &split(10, &[5, 0, 5]));
    }

    #[test]
    fn split_with_one_adapter_or_fewer_items_than_adapters() {
        assert_eq!(split(17, &[123]), vec![(0..17)]);
        assert_eq!(sizes(2, &[1, 1, 1]), [1, 1, 0]);
        assert_eq!(sizes(0, &[1, 2]), [0, 0]);
        assert!(split(5, &[]).is_empty());
    }

    #[test]
    fn value_ranges_cover_each_run_and_offset() {
        let share = Share::new(2..4);
        assert_eq!(
            value_ranges(5, Shape::Coordinates(2), 2, share),
            [2..4, 7..9, 12..14, 17..19]
        );
        assert_eq!(
            value_ranges(5, Shape::Directions(3), 1, share),
            vec![(2..4)]
        );
        assert_eq!(
            value_ranges(5, Shape::Coordinates(1), 1, Share::ALL),
            vec![(0..5)]
        );
    }

    #[test]
    fn share_clamps_to_the_count() {
        assert_eq!(Share::ALL.range(7), 0..7);
        assert!(Share::ALL.covers(7));
        assert_eq!(Share::new(5..9).range(7), 5..7);
        assert_eq!(Share::new(9..12).range(7), 7..7);
        assert!(!Share::new(0..3).covers(7));
    }
}
