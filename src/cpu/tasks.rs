//! The reuse method's work units and their distribution over threads: each thread takes the next
//! unit from a shared queue (rows differ in cost when inputs are sparse), and each parameter's
//! delta is computed the same way whichever thread takes it, so results do not depend on the
//! thread count.

use super::pool::Pool;
use super::*;
use std::sync::{Mutex, PoisonError};

/// Parameters per work unit where the scalar reference takes every item.
const EACH_GROUP: usize = 64;

/// What a work unit's parameters are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// One row of the last hidden layer before a closed-form output layer (all its units).
    Row,
    /// Output-layer parameters of whole rows (inputs' weights, the biases last): a block.
    Output,
    /// Any other parameters.
    Each,
}

/// Parameters `first..first + len`, of one kind.
#[derive(Clone, Copy, Debug)]
pub(super) struct Task {
    pub(super) first: usize,
    pub(super) len: usize,
    pub(super) kind: Kind,
}

/// The work units covering every parameter in order, for `b` samples. `closed` says whether the
/// output layer has the closed form (then the last hidden layer goes by rows).
pub(super) fn reuse_tasks(layers: &[LayerSpan], closed: bool, b: usize) -> Vec<Task> {
    let last = layers.len() - 1;
    let mut tasks = Vec::new();
    for (l, layer) in layers.iter().enumerate() {
        let total = (layer.inputs + 1) * layer.outputs;
        let (kind, bounds): (Kind, Vec<(usize, usize)>) = if l == last {
            // Blocks of rows (inputs' weights to every output, the biases as the last row).
            let group = super::output::output_block_rows(b);
            let blocks = super::output::output_blocks(layer.inputs + 1, group);
            let rows = blocks.map(|(r0, r1)| (r0 * layer.outputs, r1 * layer.outputs));
            (Kind::Output, rows.collect())
        } else {
            // Rows of weights (input i to every unit), then the biases: each `outputs` long.
            let (kind, group) = if l + 1 == last && closed {
                (Kind::Row, layer.outputs)
            } else {
                (Kind::Each, EACH_GROUP)
            };
            let starts = (0..total).step_by(group.max(1));
            (kind, starts.map(|p| (p, (p + group).min(total))).collect())
        };
        tasks.extend(bounds.into_iter().map(|(p0, p1)| Task {
            first: layer.w_off + p0,
            len: p1 - p0,
            kind,
        }));
    }
    tasks
}

/// The parts of `tasks` inside `range`, in order. A hidden row cut by the range becomes single
/// steps (the row path computes whole rows); a cut output block stays one (it computes the rows
/// covering its part and keeps that part). Each parameter's delta is the same bits either way.
pub(super) fn clip_tasks(tasks: &[Task], range: std::ops::Range<usize>) -> Vec<Task> {
    tasks
        .iter()
        .filter_map(|t| {
            let first = t.first.max(range.start);
            let end = (t.first + t.len).min(range.end);
            (first < end).then(|| {
                let whole = first == t.first && end == t.first + t.len;
                let kind = if t.kind == Kind::Row && !whole {
                    Kind::Each
                } else {
                    t.kind
                };
                Task {
                    first,
                    len: end - first,
                    kind,
                }
            })
        })
        .collect()
}

/// What [`run_tasks`] runs per task: `(task, deltas of its parameters, scratch)`.
pub(super) type TaskFn<'a, R> = dyn Fn(&Task, &mut [R], &mut Scratch<R>) + Sync + 'a;

/// Runs `each(task, deltas of its parameters, scratch)` for every task on `threads` threads (the
/// caller and the pool's workers).
pub(super) fn run_tasks<R: Real>(
    (threads, pool): (usize, &mut Option<Pool>),
    scratch: &mut [Scratch<R>],
    tasks: &[Task],
    deltas: &mut [R],
    each: &TaskFn<'_, R>,
) {
    let threads = threads.min(scratch.len()).min(tasks.len());
    let pool = match pool_for(pool, threads) {
        Some(pool) => pool,
        None => {
            let mut rest = deltas;
            for task in tasks {
                let (out, tail) = std::mem::take(&mut rest).split_at_mut(task.len);
                each(task, out, &mut scratch[0]);
                rest = tail;
            }
            return;
        }
    };
    // The next task and the deltas from its first parameter on.
    let queue = Mutex::new((tasks.iter(), deltas));
    let work = |_: usize, s: &mut Scratch<R>| loop {
        let (task, out) = {
            let mut q = queue.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(task) = q.0.next() else { break };
            let (out, tail) = std::mem::take(&mut q.1).split_at_mut(task.len);
            q.1 = tail;
            (task, out)
        };
        each(task, out, s);
    };
    pool.run_each(&mut scratch[..threads], &work);
}

/// A pool for `threads` threads (`None` for one), made when first needed and remade only when it
/// has fewer (a round uses as many threads as it has items; the evaluator drops its pool when its
/// thread count changes).
pub(super) fn pool_for(pool: &mut Option<Pool>, threads: usize) -> Option<&mut Pool> {
    if threads <= 1 {
        return None;
    }
    if pool.as_ref().is_none_or(|p| p.threads() < threads) {
        *pool = Some(Pool::new(threads - 1));
    }
    pool.as_mut().filter(|p| p.threads() > 1)
}

impl<R: Real> ReusePlan<'_, R> {
    /// The deltas of one task's parameters into `out`.
    pub(super) fn task(&self, task: &Task, out: &mut [R], bufs: &mut Bufs<R>) {
        match task.kind {
            Kind::Row if self.rows_apply() => self.hidden_row(task.first, out, bufs),
            Kind::Output if self.lanes => self.output_block(task.first, out, bufs),
            _ => {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = self.delta(task.first + j, bufs);
                }
            }
        }
    }
}
