//! A small persistent thread pool for the CPU evaluator: a step hands its work to threads that
//! already exist instead of spawning (and joining) new ones each time.
//!
//! [`Pool::run_each`] runs `each(i, &mut items[i])` for every i, item 0 on the calling thread and
//! item i on worker i; it returns when all are done, so borrowed data outlives every use.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

/// The job of one round, its lifetime erased: [`Pool::run_each`] waits for every worker to finish
/// it before the borrow it was made from ends.
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn(usize) + Sync));

// SAFETY: the pointee is `Sync` and outlives the round (see `Job`).
unsafe impl Send for Job {}

struct State {
    job: Option<Job>,
    /// Rounds started so far; a worker runs each round once.
    round: u64,
    /// Workers 1..wanted take part in the current round.
    wanted: usize,
    /// Workers of the current round still running.
    running: usize,
    panicked: bool,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    start: Condvar,
    finished: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Worker threads waiting for rounds of work.
pub(super) struct Pool {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.handles.len())
            .finish()
    }
}

impl Pool {
    /// A pool whose rounds run on the caller and `workers` more threads (none if spawning fails:
    /// rounds then run on the caller alone).
    pub(super) fn new(workers: usize) -> Pool {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                job: None,
                round: 0,
                wanted: 0,
                running: 0,
                panicked: false,
                stop: false,
            }),
            start: Condvar::new(),
            finished: Condvar::new(),
        });
        let handles = (1..=workers)
            .map_while(|w| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("perturb-cpu-{w}"))
                    .spawn(move || work(&shared, w))
                    .ok()
            })
            .collect();
        Pool { shared, handles }
    }

    /// Threads a round can use: the caller and the workers.
    pub(super) fn threads(&self) -> usize {
        self.handles.len() + 1
    }

    /// Runs `each(i, &mut items[i])` for every item, item 0 on the calling thread and the others
    /// on workers (items beyond [`Pool::threads`] run on the caller after item 0). A panic in any
    /// of them is raised here once all have finished.
    pub(super) fn run_each<T: Send>(
        &mut self,
        items: &mut [T],
        each: &(dyn Fn(usize, &mut T) + Sync),
    ) {
        let n = items.len();
        let spread = n.min(self.threads());
        if spread <= 1 {
            for (i, item) in items.iter_mut().enumerate() {
                each(i, item);
            }
            return;
        }
        let base = SendPtr(items.as_mut_ptr());
        let job = move |i: usize| {
            let base = &base;
            // SAFETY: index i < spread <= n is run by exactly one thread per round (the caller
            // takes 0 and every index from `spread` on, worker w takes w), so no two threads hold
            // the same item, and `items` outlives the round (this function waits for it).
            let item = unsafe { &mut *base.0.add(i) };
            each(i, item);
        };
        let job: &(dyn Fn(usize) + Sync) = &job;
        // SAFETY: only the lifetime changes; the round ends (`Wait::drop`) before `job` does.
        let job: &'static (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(job) };
        {
            let mut st = self.shared.lock();
            st.job = Some(Job(job));
            st.round += 1;
            st.wanted = spread;
            st.running = spread - 1;
            st.panicked = false;
        }
        self.shared.start.notify_all();
        let wait = Wait(&self.shared);
        job(0);
        for i in spread..n {
            job(i);
        }
        drop(wait);
        if self.shared.lock().panicked {
            panic!("a CPU evaluator worker thread panicked");
        }
    }
}

/// A raw pointer to the items of a round, shared with the workers.
struct SendPtr<T>(*mut T);

// SAFETY: each item is handed to one thread only (see `Pool::run_each`), and `T: Send`.
unsafe impl<T: Send> Sync for SendPtr<T> {}

/// Waits for the round's workers when dropped (also while the caller unwinds).
struct Wait<'a>(&'a Shared);

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        while st.running > 0 {
            st = self
                .0
                .finished
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
        st.job = None;
    }
}

/// Worker w's loop: run each round it is wanted in, until the pool is dropped.
fn work(shared: &Shared, w: usize) {
    let mut seen = 0;
    loop {
        let job = {
            let mut st = shared.lock();
            while st.round == seen && !st.stop {
                st = shared
                    .start
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if st.stop {
                return;
            }
            seen = st.round;
            if w >= st.wanted {
                continue;
            }
            st.job.expect("a job while a round runs")
        };
        // SAFETY: the job lives until every wanted worker has finished this round (`Wait`).
        let ok = catch_unwind(AssertUnwindSafe(|| unsafe { (*job.0)(w) })).is_ok();
        let mut st = shared.lock();
        st.panicked |= !ok;
        st.running -= 1;
        if st.running == 0 {
            shared.finished.notify_all();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.start.notify_all();
        for h in self.handles.drain(..) {
            // A worker never panics outside `catch_unwind`; nothing to report.
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_once_per_round_over_many_rounds() {
        let mut pool = Pool::new(3);
        let mut items = vec![0usize; 6];
        for round in 1..=200 {
            let len = 1 + round % 6;
            pool.run_each(&mut items[..len], &|i, v| *v += i + 1);
        }
        let expect: Vec<usize> = (0..6)
            .map(|i| (1..=200).filter(|r| 1 + r % 6 > i).count() * (i + 1))
            .collect();
        assert_eq!(items, expect);
    }

    #[test]
    fn a_worker_panic_reaches_the_caller_and_the_pool_still_works() {
        let mut pool = Pool::new(1);
        let mut items = [0u32; 2];
        let hit = catch_unwind(AssertUnwindSafe(|| {
            pool.run_each(&mut items, &|i, _| assert!(i != 1, "worker 1 fails"))
        }));
        assert!(hit.is_err(), "the worker's panic was not raised");
        pool.run_each(&mut items, &|i, v| *v = i as u32 + 7);
        assert_eq!(items, [7, 8]);
    }
}
