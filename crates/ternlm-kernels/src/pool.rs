//! A persistent thread pool. A job is a borrowed closure run over task indices `0..n`, handed
//! out by an atomic counter, with the calling thread working too. Between jobs, workers spin
//! on the job counter for a short while (decode issues hundreds of small jobs per token, and
//! a futex wake-up costs as much as a small job) and then park on a condition variable.
//! Nothing is allocated and no channel is used per job.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Task = dyn Fn(usize) + Sync;

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_micros(1000);

/// A type-erased pointer to the closure of the running job.
#[derive(Clone, Copy)]
struct JobPtr(*const Task);
// SAFETY: the pointee is `Sync`, and `for_each` keeps it alive until every worker has finished
// with it (it waits for all of them to report before returning).
unsafe impl Send for JobPtr {}

struct Shared {
    /// Bumped once per job; workers run a job when they see a new value.
    generation: AtomicU64,
    /// The current job; written only while no worker can be reading it.
    job: Mutex<(Option<JobPtr>, usize)>,
    next: AtomicUsize,
    /// Workers finished with the current job.
    finished: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    /// Workers parked (or about to park) on `wake`.
    sleepers: Mutex<usize>,
    wake: Condvar,
}

pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    job_lock: Mutex<()>,
}

impl ThreadPool {
    /// A pool with `n_threads` threads in all (the caller counts as one).
    pub fn new(n_threads: usize) -> Self {
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            job: Mutex::new((None, 0)),
            next: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleepers: Mutex::new(0),
            wake: Condvar::new(),
        });
        let workers = (1..n_threads.max(1))
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new().name(format!("ternlm-worker-{i}")).spawn(move || worker(&shared)).expect("spawning a worker thread")
            })
            .collect();
        Self { shared, workers, job_lock: Mutex::new(()) }
    }

    pub fn n_threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(i)` for every `i` in `0..n_tasks`, spread over the pool, and returns when all
    /// have finished. A panic in any task is re-raised here.
    pub fn for_each<'f>(&self, n_tasks: usize, f: &'f (dyn Fn(usize) + Sync + 'f)) {
        if self.workers.is_empty() || n_tasks <= 1 {
            (0..n_tasks).for_each(f);
            return;
        }
        let _one_job_at_a_time = self.job_lock.lock().unwrap_or_else(|e| e.into_inner());
        let sh = &*self.shared;
        // SAFETY: erases the closure's lifetime; we wait below until no worker still uses it.
        let ptr: *const Task = unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + 'f), *const Task>(f as *const _) };
        *sh.job.lock().unwrap_or_else(|e| e.into_inner()) = (Some(JobPtr(ptr)), n_tasks);
        sh.next.store(0, Ordering::Relaxed);
        sh.finished.store(0, Ordering::Relaxed);
        sh.panicked.store(false, Ordering::Relaxed);
        sh.generation.fetch_add(1, Ordering::Release);
        if *sh.sleepers.lock().unwrap_or_else(|e| e.into_inner()) > 0 {
            sh.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| run_tasks(sh, f, n_tasks)));
        let mut spins = 0u32;
        while sh.finished.load(Ordering::Acquire) < self.workers.len() {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        *sh.job.lock().unwrap_or_else(|e| e.into_inner()) = (None, 0);
        if let Err(p) = mine {
            resume_unwind(p);
        }
        assert!(!sh.panicked.load(Ordering::Relaxed), "a thread pool task panicked");
    }
}

impl ThreadPool {
    /// Runs `f(i, chunk)` over the `chunk_len`-element chunks of `data` (the last may be
    /// shorter), in parallel, each chunk handed to exactly one task.
    pub fn for_each_chunk_mut<T: Send>(&self, data: &mut [T], chunk_len: usize, f: &(dyn Fn(usize, &mut [T]) + Sync)) {
        let chunk_len = chunk_len.max(1);
        let len = data.len();
        let n = len.div_ceil(chunk_len);
        let base = SendPtr(data.as_mut_ptr());
        self.for_each(n, &|i| {
            let start = i * chunk_len;
            let end = (start + chunk_len).min(len);
            let p = base;
            // SAFETY: chunk `i` is [start, end) of `data`, disjoint from every other task's
            // chunk, in bounds, and `data` stays mutably borrowed until `for_each` returns.
            let chunk = unsafe { std::slice::from_raw_parts_mut(p.0.add(start), end - start) };
            f(i, chunk);
        });
    }
}

struct SendPtr<T>(*mut T);
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
// SAFETY: only used to hand disjoint chunks of a `&mut [T]` with `T: Send` to pool tasks.
unsafe impl<T: Send> Send for SendPtr<T> {}
// SAFETY: as above; each task derives a distinct chunk from the shared base pointer.
unsafe impl<T: Send> Sync for SendPtr<T> {}

fn run_tasks(shared: &Shared, f: &(dyn Fn(usize) + Sync + '_), n_tasks: usize) {
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= n_tasks {
            break;
        }
        f(i);
    }
}

/// Waits for a generation other than `seen`: spins for [`SPIN`], then parks.
fn wait_for_job(shared: &Shared, seen: u64) -> u64 {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let g = shared.generation.load(Ordering::Acquire);
        if g != seen || shared.shutdown.load(Ordering::Acquire) {
            return g;
        }
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(256) && start.elapsed() > SPIN {
            break;
        }
        std::hint::spin_loop();
    }
    let mut sleepers = shared.sleepers.lock().unwrap_or_else(|e| e.into_inner());
    *sleepers += 1;
    // Re-check under the lock: `for_each` bumps the generation before it looks at `sleepers`
    // (under the same lock), so either we see the new job here or it sees us and notifies.
    loop {
        let g = shared.generation.load(Ordering::Acquire);
        if g != seen || shared.shutdown.load(Ordering::Acquire) {
            *sleepers -= 1;
            return g;
        }
        sleepers = shared.wake.wait(sleepers).unwrap_or_else(|e| e.into_inner());
    }
}

fn worker(shared: &Shared) {
    let mut seen = 0u64;
    loop {
        seen = wait_for_job(shared, seen);
        if shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        let (job, n_tasks) = *shared.job.lock().unwrap_or_else(|e| e.into_inner());
        let ok = match job {
            // SAFETY: `for_each` keeps the closure alive until this worker reports finished.
            Some(JobPtr(p)) => catch_unwind(AssertUnwindSafe(|| run_tasks(shared, unsafe { &*p }, n_tasks))).is_ok(),
            None => true,
        };
        if !ok {
            shared.panicked.store(true, Ordering::Relaxed);
        }
        shared.finished.fetch_add(1, Ordering::Release);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        {
            let _sleepers = self.shared.sleepers.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ThreadPool({} threads)", self.n_threads())
    }
}

/// Splits `0..n` into at most `parts` contiguous ranges of near-equal length, each a multiple
/// of `align` except possibly the last.
pub fn split_range(n: usize, parts: usize, align: usize, index: usize) -> std::ops::Range<usize> {
    let units = n.div_ceil(align.max(1));
    let per = units.div_ceil(parts.max(1));
    let start = (index * per * align).min(n);
    let end = ((index + 1) * per * align).min(n);
    start..end
}

/// Rows of an f32 output split into tasks whose boundaries fall on 64-byte lines of that
/// output, so no two tasks (which may run on different cores) write one cache line: a first
/// short task up to the first line boundary when the output does not start on one, then
/// tasks of a whole number of `align` rows. Outputs of later tokens (`t · rows` further on)
/// stay on line boundaries when `rows` is a multiple of 16.
#[derive(Clone, Copy, Debug)]
pub struct LineSplit {
    n: usize,
    lead: usize,
    chunk: usize,
}

impl LineSplit {
    /// About `parts` tasks over `n` rows whose first row is written at `out`.
    pub fn new(out: *const f32, n: usize, parts: usize, align: usize) -> Self {
        const LINE_FLOATS: usize = 16;
        let off = (out as usize / 4) % LINE_FLOATS;
        let lead = ((LINE_FLOATS - off) % LINE_FLOATS).min(n);
        let align = align.max(1).next_multiple_of(LINE_FLOATS);
        let chunk = (n - lead).div_ceil(align).div_ceil(parts.max(1)).max(1) * align;
        Self { n, lead, chunk }
    }

    pub fn count(&self) -> usize {
        usize::from(self.lead > 0) + (self.n - self.lead).div_ceil(self.chunk)
    }

    /// Rows of task `i` (`i < count()`).
    pub fn range(&self, i: usize) -> std::ops::Range<usize> {
        let first = usize::from(self.lead > 0);
        if i < first {
            return 0..self.lead;
        }
        let start = (self.lead + (i - first) * self.chunk).min(self.n);
        start..(start + self.chunk).min(self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_split_covers_every_row_once_on_line_boundaries() {
        for off in 0..16usize {
            for n in [0, 1, 5, 16, 17, 100, 2560, 6913] {
                for parts in [1, 3, 32] {
                    let base = (4096 + off * 4) as *const f32;
                    let split = LineSplit::new(base, n, parts, 16);
                    let mut next = 0;
                    for i in 0..split.count() {
                        let r = split.range(i);
                        assert_eq!(r.start, next, "off {off} n {n} parts {parts}");
                        assert!(!r.is_empty());
                        if r.start > 0 {
                            assert_eq!((off + r.start) % 16, 0, "task {i} starts mid-line");
                        }
                        next = r.end;
                    }
                    assert_eq!(next, n);
                    assert!(split.count() <= parts + 1 || n == 0);
                }
            }
        }
    }

    #[test]
    fn every_task_runs_once() {
        for threads in [1, 2, 3, 5] {
            let pool = ThreadPool::new(threads);
            for n in [0, 1, 2, 7, 100] {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.for_each(n, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn a_panicking_task_is_reraised_and_the_pool_survives() {
        let pool = ThreadPool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| pool.for_each(8, &|i| assert!(i != 5, "task 5"))));
        assert!(r.is_err());
        let count = AtomicUsize::new(0);
        pool.for_each(8, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn chunks_are_disjoint_and_complete() {
        let pool = ThreadPool::new(3);
        let mut v = vec![0usize; 103];
        pool.for_each_chunk_mut(&mut v, 10, &|i, c| {
            for x in c.iter_mut() {
                *x += i + 1;
            }
        });
        for (j, x) in v.iter().enumerate() {
            assert_eq!(*x, j / 10 + 1);
        }
    }

    #[test]
    fn split_range_covers_everything() {
        for n in [0, 1, 5, 64, 100] {
            for parts in 1..6 {
                let mut covered = 0;
                for i in 0..parts {
                    let r = split_range(n, parts, 4, i);
                    if !r.is_empty() {
                        assert_eq!(r.start, covered);
                    }
                    covered += r.len();
                }
                assert_eq!(covered, n);
            }
        }
    }
}
