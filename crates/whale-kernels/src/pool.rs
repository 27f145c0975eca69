//! A persistent worker pool for the parallel loops of a forward pass.
//!
//! Decode runs a few hundred small matrix products per token; spawning OS
//! threads for each (tens of microseconds apiece) costs more than the work on
//! a small model. The pool keeps its workers alive: publishing a job is one
//! atomic increment, and idle workers spin briefly before they sleep on a
//! condition variable, so back-to-back products start in well under a
//! microsecond while an idle server uses no CPU.
//!
//! One job runs at a time (callers are serialized); a job started from inside
//! a worker runs inline on that worker, so nested parallel loops cannot
//! deadlock.

use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// Spins before a waiting thread falls back to sleeping (a few tens of µs).
const SPIN_LIMIT: u32 = 20_000;

type Task = dyn Fn(usize) + Sync;

struct Shared {
    /// The published job: a type- and lifetime-erased task and its count.
    /// Written only by the caller while it holds `caller`, before `epoch` is
    /// bumped; read by workers only after they observed the bump.
    job: UnsafeCell<(*const Task, usize)>,
    epoch: AtomicU64,
    next: AtomicUsize,
    /// Workers finished with the current epoch.
    done: AtomicUsize,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
}

// SAFETY: `job` is only written while no worker reads it (see `Pool::run`),
// and the task it points to is `Sync`.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw pointer is only dereferenced during `run`.
unsafe impl Send for Shared {}

pub struct Pool {
    shared: Arc<Shared>,
    workers: usize,
    caller: Mutex<()>,
}

thread_local! {
    /// Set on workers, and on a caller while it runs its share of a job.
    static IN_POOL: Cell<bool> = const { Cell::new(false) };
}

fn noop(_: usize) {}

impl Pool {
    /// A pool with `workers` background threads (the caller is one more).
    pub fn new(workers: usize) -> Pool {
        let noop: &'static Task = &noop;
        let shared = Arc::new(Shared {
            job: UnsafeCell::new((noop as *const Task, 0)),
            epoch: AtomicU64::new(0),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
        });
        for i in 0..workers {
            let s = shared.clone();
            let spawned = std::thread::Builder::new().name(format!("whale-worker-{i}")).spawn(move || worker(s));
            if spawned.is_err() {
                // Fewer workers is still correct: the caller does the rest.
                return Pool { shared, workers: i, caller: Mutex::new(()) };
            }
        }
        Pool { shared, workers, caller: Mutex::new(()) }
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Run `f(0..n)` across the workers and the calling thread; returns when
    /// every call has finished.
    pub fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        if n == 0 {
            return;
        }
        if n == 1 || self.workers == 0 || IN_POOL.with(Cell::get) {
            (0..n).for_each(f);
            return;
        }
        let _one_job = self.caller.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: lifetime erasure. The pointer is published below and every
        // worker has finished with it (done == workers) before this function
        // returns, so it never outlives `f`.
        let task: *const Task = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static Task>(f) };
        // SAFETY: no worker reads `job` now: they read it only after seeing a
        // new epoch, and the last epoch's readers all reported `done`.
        unsafe { *s.job.get() = (task, n) };
        s.next.store(0, Ordering::Relaxed);
        s.done.store(0, Ordering::Relaxed);
        s.epoch.fetch_add(1, Ordering::Release);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        IN_POOL.with(|w| w.set(true));
        loop {
            let i = s.next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                break;
            }
            f(i);
        }
        IN_POOL.with(|w| w.set(false));
        let mut spins = 0u32;
        while s.done.load(Ordering::Acquire) < self.workers {
            spins += 1;
            if spins < SPIN_LIMIT {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.shared.wake.notify_all();
    }
}

fn worker(s: Arc<Shared>) {
    IN_POOL.with(|w| w.set(true));
    // Epoch 0 is the pool's creation: a job published before this thread got
    // to run is still seen as new.
    let mut seen = 0;
    loop {
        // Wait for a new epoch: spin, then sleep.
        let mut spins = 0u32;
        let epoch = loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                break e;
            }
            spins += 1;
            if spins < SPIN_LIMIT {
                std::hint::spin_loop();
                continue;
            }
            let g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            let mut g = g;
            while s.epoch.load(Ordering::SeqCst) == seen {
                g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
            drop(g);
            spins = 0;
        };
        seen = epoch;
        if s.shutdown.load(Ordering::SeqCst) {
            return;
        }
        // SAFETY: the caller wrote `job` before bumping the epoch we observed
        // (Acquire pairs with its Release) and keeps `f` alive until we report.
        let (task, n) = unsafe { *s.job.get() };
        loop {
            let i = s.next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                break;
            }
            // SAFETY: see above; the task is Sync.
            unsafe { (*task)(i) };
        }
        s.done.fetch_add(1, Ordering::Release);
    }
}

/// The process-wide pool, sized on first use for `threads` threads in all.
pub fn global(threads: usize) -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool::new(threads.max(1) - 1))
}

/// Run `f` on each part, in parallel over up to `threads` threads (the global
/// pool plus the caller).
pub fn run_parts<T: Send>(threads: usize, parts: Vec<T>, f: impl Fn(T) + Sync) {
    if parts.len() <= 1 || threads <= 1 {
        parts.into_iter().for_each(f);
        return;
    }
    let slots: Vec<Mutex<Option<T>>> = parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
    global(threads).run(slots.len(), &|i| {
        let part = slots[i].lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = part {
            f(p);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_runs_once_across_many_jobs() {
        let pool = Pool::new(3);
        for n in [1usize, 2, 5, 64, 1000] {
            for _ in 0..50 {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run(n, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn sleeping_workers_wake_up() {
        let pool = Pool::new(2);
        std::thread::sleep(std::time::Duration::from_millis(50)); // let them sleep
        let sum = AtomicUsize::new(0);
        pool.run(100, &|i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 4950);
    }

    #[test]
    fn nested_jobs_run_inline() {
        let pool = Arc::new(Pool::new(2));
        let total = AtomicUsize::new(0);
        let p2 = pool.clone();
        pool.run(4, &|_| {
            p2.run(3, &|_| {
                total.fetch_add(1, Ordering::Relaxed);
            });
        });
        // Inner jobs run inline on whichever thread runs the outer index.
        assert_eq!(total.load(Ordering::Relaxed), 12);
    }

    #[test]
    fn run_parts_moves_each_part_once() {
        let parts: Vec<Vec<usize>> = (0..7).map(|i| vec![i; i]).collect();
        let sum = AtomicUsize::new(0);
        run_parts(2, parts, |p| {
            sum.fetch_add(p.iter().sum::<usize>(), Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), (0..7).map(|i| i * i).sum::<usize>());
    }
}
