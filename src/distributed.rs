//! `--distributed mpi` (cargo feature `mpi`): the ranks of `mpirun -n R` each evaluate a
//! contiguous [`Share`] of every probe on their local evaluator, and an all-gather (MPI_Allgatherv)
//! hands every rank all the values, so every rank applies the same update: the result is the
//! one-process run's, bit for bit.
//!
//! One step sends, per rank, a status word, a stop word, the loss of each run and the rank's share
//! of the values (as float64, exact for float32); every rank receives all of them: P + 3 numbers
//! per rank and run for forward differences, P·offsets + 3 for the others.
//!
//! Stopping: a signal reaches the ranks at different moments (or only one of them), and a rank
//! that stopped on its own while the others entered the next gather would leave them waiting
//! forever. So the trainer of a distributed run watches [`agreed_stop`], which every rank raises
//! at the same gather: the first one after any rank's own stop flag was raised.

use crate::error::{Error, Result};
use crate::estimate::{Probe, Shape};
use crate::evaluator::{check_probe, Evaluator, History};
use crate::precision::Real;
use crate::settings::{DeviceInfo, Hyper, ShardInfo};
use crate::shard::{share_len, shares, value_ranges, Share};
use crate::Dataset;
use ::mpi::datatype::PartitionMut;
use ::mpi::topology::SimpleCommunicator;
use ::mpi::traits::*;
use ::mpi::Count;
use std::sync::atomic::{AtomicBool, Ordering};

/// Raised on every rank at the same gather once any rank's own stop flag was raised (one MPI
/// world per process, so one flag per process).
static AGREED_STOP: AtomicBool = AtomicBool::new(false);

/// The stop flag the trainer of a distributed run watches instead of its own: raised on every
/// rank after the same step, so all ranks stop before the same next step. Lowered when a
/// [`MpiEvaluator`] is built.
pub fn agreed_stop() -> &'static AtomicBool {
    &AGREED_STOP
}

/// MPI, initialised for this process; finalised when dropped. Hold it for the whole run.
pub struct Mpi(::mpi::environment::Universe);

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Mpi").field(&World::current()).finish()
    }
}

impl Mpi {
    /// Initialises MPI (once per process: a second call is an error).
    pub fn init() -> Result<Mpi> {
        ::mpi::initialize()
            .map(Mpi)
            .ok_or_else(|| Error::Config("MPI is already initialised in this process".into()))
    }

    /// This process's place among the ranks.
    pub fn world(&self) -> World {
        let c = self.0.world();
        World {
            rank: c.rank() as usize,
            size: c.size() as usize,
        }
    }
}

/// This process's rank and the number of ranks (MPI's world communicator).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct World {
    /// 0-based rank.
    pub rank: usize,
    /// Ranks.
    pub size: usize,
}

impl World {
    /// The world as MPI sees it (MPI must be initialised, see [`Mpi::init`]).
    pub fn current() -> World {
        let c = SimpleCommunicator::world();
        World {
            rank: c.rank() as usize,
            size: c.size() as usize,
        }
    }

    /// Each rank's share of a probe of `shape` for `p` parameters: equal, contiguous, in rank
    /// order ([`crate::shard::split`] with equal speeds).
    pub fn shares(&self, p: usize, shape: Shape) -> Vec<Share> {
        shares(p, shape, &vec![1; self.size])
    }
}

/// Every rank's byte string, in rank order (an all-gather of the lengths, then of the bytes).
fn gather_bytes(mine: &[u8]) -> Vec<Vec<u8>> {
    let comm = SimpleCommunicator::world();
    let size = comm.size() as usize;
    let mut lens = vec![0 as Count; size];
    comm.all_gather_into(&(mine.len() as Count), &mut lens[..]);
    let displs = offsets(&lens);
    let mut all = vec![0u8; lens.iter().map(|&l| l as usize).sum()];
    comm.all_gather_varcount_into(
        mine,
        &mut PartitionMut::new(&mut all[..], &lens[..], &displs[..]),
    );
    (0..size)
        .map(|q| all[displs[q] as usize..(displs[q] + lens[q]) as usize].to_vec())
        .collect()
}

/// Exclusive prefix sums of `counts`.
fn offsets(counts: &[Count]) -> Vec<Count> {
    counts
        .iter()
        .scan(0, |at, &c| {
            let here = *at;
            *at += c;
            Some(here)
        })
        .collect()
}

/// This rank's evaluator, computing its share of every probe, with the other ranks' shares
/// gathered after each probe: to the trainer, one evaluator of the whole step.
#[derive(Debug)]
pub struct MpiEvaluator<'s, E: Evaluator> {
    local: E,
    /// This rank's own stop flag (set by its signal handler), shared at every gather.
    stop: Option<&'s AtomicBool>,
    world: World,
    shape: Shape,
    shares: Vec<Share>,
    /// Each rank's (adapter, backend).
    devices: Vec<(String, String)>,
    losses: Vec<E::Loss>,
    values: Vec<E::Loss>,
}

impl<'s, E: Evaluator> MpiEvaluator<'s, E> {
    /// Wraps `local`, built for `world.shares(P, shape)[world.rank]`, sharing `stop` (this
    /// rank's own stop flag) at every gather and lowering [`agreed_stop`]. Collective: every rank
    /// builds its evaluators in the same order (their device names are exchanged here).
    pub fn new(
        local: E,
        world: World,
        shape: Shape,
        stop: Option<&'s AtomicBool>,
    ) -> MpiEvaluator<'s, E> {
        AGREED_STOP.store(false, Ordering::SeqCst);
        let d = local.device();
        let mine = format!("{}\t{}", d.adapter, d.backend);
        let devices = gather_bytes(mine.as_bytes())
            .into_iter()
            .map(|b| {
                let s = String::from_utf8_lossy(&b).into_owned();
                let (a, k) = s.split_once('\t').unwrap_or((&s, ""));
                (a.to_string(), k.to_string())
            })
            .collect();
        MpiEvaluator {
            shares: world.shares(local.num_params(), shape),
            local,
            stop,
            world,
            shape,
            devices,
            losses: Vec::new(),
            values: Vec::new(),
        }
    }
}

impl<E: Evaluator> Evaluator for MpiEvaluator<'_, E> {
    type Loss = E::Loss;

    fn num_params(&self) -> usize {
        self.local.num_params()
    }

    fn max_runs(&self) -> usize {
        self.local.max_runs()
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
        let (runs, n) = check_probe(
            p,
            self.max_runs(),
            params.len(),
            probes,
            active,
            losses.len(),
            values.len(),
        )?;
        self.losses.resize(runs, E::Loss::ZERO);
        self.values.resize(values.len(), E::Loss::ZERO);
        // Every rank joins the gather even when its probe failed (a status word says so), so
        // that no rank waits forever for one that gave up.
        let local = self
            .local
            .probe(params, probes, active, &mut self.losses, &mut self.values);
        let ranks = self.world.size;
        let live: Vec<usize> = (0..runs).filter(|&r| active[r]).collect();
        let per_run: Vec<Vec<std::ops::Range<usize>>> = self
            .shares
            .iter()
            .map(|&s| value_ranges(p, self.shape, 1, s))
            .collect();
        let counts: Vec<Count> = (0..ranks)
            .map(|q| {
                let vals: usize = per_run[q].iter().map(|r| r.len()).sum();
                (2 + live.len() * (1 + vals)) as Count
            })
            .collect();
        let mut send = Vec::with_capacity(counts[self.world.rank] as usize);
        send.push(if local.is_ok() { 0.0 } else { 1.0 });
        let stopping = self.stop.is_some_and(|s| s.load(Ordering::SeqCst));
        send.push(if stopping { 1.0 } else { 0.0 });
        for &r in &live {
            send.push(self.losses[r].to_f64());
            for range in &per_run[self.world.rank] {
                let v = &self.values[r * n + range.start..r * n + range.end];
                send.extend(v.iter().map(|x| x.to_f64()));
            }
        }
        let displs = offsets(&counts);
        let mut recv = vec![0.0f64; counts.iter().map(|&c| c as usize).sum()];
        SimpleCommunicator::world().all_gather_varcount_into(
            &send[..],
            &mut PartitionMut::new(&mut recv[..], &counts[..], &displs[..]),
        );
        // Every rank sees the same stop words, so all raise the agreed flag after this step.
        if (0..ranks).any(|q| recv[displs[q] as usize + 1] != 0.0) {
            AGREED_STOP.store(true, Ordering::SeqCst);
        }
        local?;
        for q in 0..ranks {
            let mut at = displs[q] as usize;
            if recv[at] != 0.0 {
                return Err(Error::Gpu(format!(
                    "MPI rank {q} of {ranks} could not evaluate its share of the step"
                )));
            }
            at += 2;
            for &r in &live {
                if q == 0 {
                    losses[r] = E::Loss::from_f64(recv[at]);
                }
                at += 1;
                for range in &per_run[q] {
                    for v in &mut values[r * n + range.start..r * n + range.end] {
                        *v = E::Loss::from_f64(recv[at]);
                        at += 1;
                    }
                }
            }
        }
        Ok(())
    }

    fn device(&self) -> DeviceInfo {
        let d = self.local.device();
        let p = self.num_params();
        let params = self.world.shares(p, Shape::Coordinates(1));
        let directions = matches!(self.shape, Shape::Directions(_));
        DeviceInfo {
            kind: d.kind,
            adapter: format!("{} MPI ranks; rank 0: {}", self.world.size, d.adapter),
            backend: d.backend,
            shards: self
                .devices
                .iter()
                .enumerate()
                .map(|(q, (adapter, backend))| {
                    let r = params[q].range(p);
                    ShardInfo {
                        adapter: format!("rank {q}: {adapter}"),
                        backend: backend.clone(),
                        params: [r.start, r.end],
                        evaluations: directions.then(|| {
                            let e = self.shares[q].range(share_len(p, self.shape));
                            [e.start, e.end]
                        }),
                        speed: None,
                    }
                })
                .collect(),
        }
    }

    fn batch_len(&self) -> usize {
        self.local.batch_len()
    }

    fn set_batch(&mut self, data: &Dataset) -> Result<()> {
        self.local.set_batch(data)
    }

    fn kernel_note(&self) -> Option<String> {
        self.local.kernel_note()
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

/// The resident loop keeps the update on one device; the ranks gather on the host.
pub fn refuse_resident() -> Error {
    Error::refused(
        &[
            (crate::error::Setting::Distributed, "mpi"),
            (crate::error::Setting::Loop, "resident"),
        ],
        "the resident loop applies the update on one GPU; the ranks gather each step on the host",
        Some(crate::error::Fix::Use(crate::error::Setting::Loop, "host")),
    )
}
