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
//!
//! Panics: a task that panics, on a worker or on the caller, stops the job
//! from handing out further indices; the panic is caught where it happened,
//! the caller waits until every worker has let go of the task (the task
//! borrows the caller's stack), and only then re-raises the first panic on
//! the caller. Workers survive their tasks' panics, so the pool keeps its
//! size and serves the next job.

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
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
    /// Set when a task of the current job panicked: no more indices start.
    aborted: AtomicBool,
    /// The first panic of the current job, re-raised on the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
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
            aborted: AtomicBool::new(false),
            panic: Mutex::new(None),
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
    /// every call has finished. If a call panics, indices not yet started
    /// are skipped and the first panic is re-raised here once no worker
    /// runs `f` any more.
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
        s.aborted.store(false, Ordering::Relaxed);
        s.epoch.fetch_add(1, Ordering::Release);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        IN_POOL.with(|w| w.set(true));
        take_indices(s, n, f);
        IN_POOL.with(|w| w.set(false));
        // Wait even when a task panicked: workers may still be inside `f`,
        // which borrows from this caller's stack.
        let mut spins = 0u32;
        while s.done.load(Ordering::Acquire) < self.workers {
            spins += 1;
            if spins < SPIN_LIMIT {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        let panic = s.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(payload) = panic {
            drop(_one_job);
            resume_unwind(payload);
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
        // SAFETY: see above; the task is Sync and outlives this job.
        take_indices(&s, n, unsafe { &*task });
        s.done.fetch_add(1, Ordering::Release);
    }
}

/// Run indices of the current job until none is left or a task panicked;
/// a panic is caught here and kept (the first one) for the caller.
fn take_indices(s: &Shared, n: usize, f: &(dyn Fn(usize) + Sync)) {
    let r = catch_unwind(AssertUnwindSafe(|| loop {
        if s.aborted.load(Ordering::Relaxed) {
            break;
        }
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        f(i);
    }));
    if let Err(payload) = r {
        s.aborted.store(true, Ordering::Relaxed);
        let mut first = s.panic.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(payload);
        }
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

/// Run `f` on every piece of `runs`, a run a thread (the global pool plus
/// the caller), each thread taking its own run's pieces front to back and
/// then, while pieces are left, the last piece of the run with the most
/// left: so that a thread that streams slower, is preempted or joins late
/// holds the others up by about a piece, not by the rest of its run.
///
/// Decode cuts its products into one contiguous stream a thread of equal
/// bytes (`qdot::decode_runs`), but equal bytes are not equal time: on the
/// 2-core Xeon of stop 57 the two threads finished a DeepSeek-V2-Lite-shaped
/// decode's jobs 61 µs apart on average (about a tenth of a job). A thief
/// takes the pieces the owner would have read last, so each thread stays
/// in one stream. On a quiet machine that costs and gains nothing
/// measurable (a thread alone gets the bandwidth the other left); beside
/// another busy process it saves 14–16 % of the products' time
/// (`docs/speed-log.md`, stop 57).
pub fn run_stealing<T: Send>(threads: usize, runs: Vec<Vec<T>>, f: impl Fn(T) + Sync) {
    if runs.len() <= 1 || threads <= 1 {
        runs.into_iter().flatten().for_each(f);
        return;
    }
    global(threads).run_stealing(runs, f);
}

impl Pool {
    /// [`run_stealing`] on this pool.
    pub fn run_stealing<T: Send>(&self, runs: Vec<Vec<T>>, f: impl Fn(T) + Sync) {
        let slots: Vec<Vec<Mutex<Option<T>>>> =
            runs.into_iter().map(|r| r.into_iter().map(|p| Mutex::new(Some(p))).collect()).collect();
        // Each run's pieces not yet taken, `front..back`, as `front << 32 | back`.
        let left: Vec<AtomicU64> = slots.iter().map(|r| AtomicU64::new(r.len() as u64)).collect();
        let unpack = |v: u64| (v >> 32, v & 0xFFFF_FFFF);
        let take = |r: usize, from_back: bool| -> Option<T> {
            let mut cur = left[r].load(Ordering::Relaxed);
            loop {
                let (front, back) = unpack(cur);
                if front >= back {
                    return None;
                }
                let (next, i) =
                    if from_back { (front << 32 | (back - 1), back - 1) } else { ((front + 1) << 32 | back, front) };
                match left[r].compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
                    Ok(_) => return slots[r][i as usize].lock().unwrap_or_else(|e| e.into_inner()).take(),
                    Err(now) => cur = now,
                }
            }
        };
        let remaining = |r: usize| {
            let (front, back) = unpack(left[r].load(Ordering::Relaxed));
            back.saturating_sub(front)
        };
        self.run(slots.len(), &|own| {
            while let Some(p) = take(own, false) {
                f(p);
            }
            // Then the last piece of the run with the most left, while any is.
            while let Some((_, r)) = (0..slots.len()).map(|r| (remaining(r), r)).max().filter(|&(n, _)| n > 0) {
                if let Some(p) = take(r, true) {
                    f(p);
                }
            }
        });
    }
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

    fn on_worker() -> bool {
        std::thread::current().name().is_some_and(|n| n.starts_with("whale-worker"))
    }

    /// A panic in a task, on a worker or on the caller, comes out of `run` on
    /// the caller, only after no task runs any more; the pool then serves the
    /// next job with all its workers.
    #[test]
    fn a_panicking_task_is_raised_on_the_caller_after_the_workers_let_go() {
        // Enough tasks that the job outlasts the panic's own handling (the
        // panic hook may capture a backtrace, milliseconds).
        const N: usize = 2000;
        let pool = Pool::new(2);
        for panic_on_worker in [true, false] {
            for round in 0..5 {
                let active = AtomicUsize::new(0);
                let ran = AtomicUsize::new(0);
                // Workers awake (spinning), so that they take part at once.
                pool.run(8, &|_| std::thread::sleep(std::time::Duration::from_micros(100)));
                let r = catch_unwind(AssertUnwindSafe(|| {
                    pool.run(N, &|i| {
                        active.fetch_add(1, Ordering::SeqCst);
                        ran.fetch_add(1, Ordering::SeqCst);
                        if on_worker() == panic_on_worker {
                            active.fetch_sub(1, Ordering::SeqCst);
                            panic!("injected in task {i}");
                        }
                        // Slow enough that other threads are mid-task when the panic comes.
                        std::thread::sleep(std::time::Duration::from_micros(200));
                        active.fetch_sub(1, Ordering::SeqCst);
                    })
                }));
                let payload = r.expect_err("the panic reaches the caller");
                let msg = payload.downcast_ref::<String>().map(String::as_str).unwrap_or("");
                assert!(msg.starts_with("injected in task"), "round {round}: {msg:?}");
                assert_eq!(active.load(Ordering::SeqCst), 0, "a task still ran after run() returned");
                assert!(
                    ran.load(Ordering::SeqCst) < N,
                    "the job was not cut short: {} ran (panic on worker: {panic_on_worker}, round {round})",
                    ran.load(Ordering::SeqCst)
                );
                // The pool is whole: every index of the next job runs, on
                // the caller and on the workers.
                let hits: Vec<AtomicUsize> = (0..256).map(|_| AtomicUsize::new(0)).collect();
                let workers_ran = AtomicBool::new(false);
                pool.run(256, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                    if on_worker() {
                        workers_ran.store(true, Ordering::Relaxed);
                    }
                    // Long enough in all for sleeping workers to wake and join.
                    std::thread::sleep(std::time::Duration::from_micros(20));
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                assert!(workers_ran.load(Ordering::Relaxed), "no worker took part after the panic");
            }
        }
    }

    /// Every piece runs once; while run 0's owner is held in its first
    /// piece, the other threads take run 0's pieces from its back (each
    /// thread's run-0 pieces in one direction: ascending from piece 0 for
    /// the owner, descending for a thief).
    #[test]
    fn run_stealing_runs_each_piece_once_and_the_idle_thread_takes_from_the_back() {
        // Pieces of run 0; the other runs have 2 each.
        const SLOW: usize = 40;
        for threads in [1usize, 2, 3] {
            let pool = Pool::new(threads - 1);
            let runs: Vec<Vec<(usize, usize)>> =
                (0..threads).map(|r| (0..if r == 0 { SLOW } else { 2 }).map(|i| (r, i)).collect()).collect();
            let total: usize = runs.iter().map(Vec::len).sum();
            let hits: Vec<Vec<AtomicUsize>> =
                runs.iter().map(|r| r.iter().map(|_| AtomicUsize::new(0)).collect()).collect();
            let order = Mutex::new(Vec::new());
            let stolen = AtomicBool::new(false);
            pool.run_stealing(runs, |(r, i)| {
                hits[r][i].fetch_add(1, Ordering::Relaxed);
                order.lock().unwrap().push((std::thread::current().id(), r, i));
                if r == 0 && i > 0 && i + 1 < SLOW {
                    stolen.store(true, Ordering::Relaxed);
                }
                // Run 0's first piece waits (at most 5 s) for a thief.
                let t0 = std::time::Instant::now();
                while threads > 1 && (r, i) == (0, 0) && !stolen.load(Ordering::Relaxed) && t0.elapsed().as_secs() < 5 {
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
            });
            assert!(hits.iter().flatten().all(|h| h.load(Ordering::Relaxed) == 1), "{threads} threads");
            let order = order.into_inner().unwrap();
            assert_eq!(order.len(), total);
            let mut by_thread: std::collections::HashMap<_, Vec<usize>> = Default::default();
            for &(t, r, i) in &order {
                if r == 0 {
                    by_thread.entry(t).or_default().push(i);
                }
            }
            for seq in by_thread.values() {
                let up = seq.windows(2).all(|w| w[0] < w[1]);
                let down = seq.windows(2).all(|w| w[0] > w[1]);
                assert!(up && seq[0] == 0 || down, "{threads} threads: {seq:?}");
            }
            if threads > 1 {
                assert!(by_thread.len() > 1, "{threads} threads: run 0 ran on one thread only");
            }
        }
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
