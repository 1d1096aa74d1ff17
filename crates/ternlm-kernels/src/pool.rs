//! A persistent thread pool. Workers park on a condition variable between jobs; a job is a
//! borrowed closure run over task indices `0..n`, handed out by an atomic counter, with the
//! calling thread working too. Nothing is allocated per job.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

type Task = dyn Fn(usize) + Sync;

/// A type-erased pointer to the closure of the running job.
#[derive(Clone, Copy)]
struct JobPtr(*const Task);
// SAFETY: the pointee is `Sync`, and `for_each` keeps it alive until every worker has finished
// with it (it waits for `active == 0` before returning).
unsafe impl Send for JobPtr {}

struct State {
    generation: u64,
    job: Option<JobPtr>,
    n_tasks: usize,
    active: usize,
    panicked: bool,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    done: Condvar,
    next: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a task panicked; the state itself stays consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
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
            state: Mutex::new(State { generation: 0, job: None, n_tasks: 0, active: 0, panicked: false, shutdown: false }),
            work: Condvar::new(),
            done: Condvar::new(),
            next: AtomicUsize::new(0),
        });
        let workers = (1..n_threads.max(1))
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("ternlm-worker-{i}"))
                    .spawn(move || worker(&shared))
                    .expect("spawning a worker thread")
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
        // SAFETY: erases the closure's lifetime; we wait below until no worker still uses it.
        let ptr: *const Task =
            unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + 'f), *const Task>(f as *const _) };
        {
            let mut st = self.shared.lock();
            self.shared.next.store(0, Ordering::Relaxed);
            st.job = Some(JobPtr(ptr));
            st.n_tasks = n_tasks;
            st.active = self.workers.len();
            st.panicked = false;
            st.generation = st.generation.wrapping_add(1);
            self.shared.work.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| run_tasks(&self.shared, f, n_tasks)));
        let mut st = self.shared.lock();
        while st.active > 0 {
            st = self.shared.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.job = None;
        let worker_panicked = st.panicked;
        drop(st);
        if let Err(p) = mine {
            resume_unwind(p);
        }
        assert!(!worker_panicked, "a thread pool task panicked");
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

fn worker(shared: &Shared) {
    let mut seen = 0u64;
    loop {
        let (job, n_tasks) = {
            let mut st = shared.lock();
            while st.generation == seen && !st.shutdown {
                st = shared.work.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.shutdown {
                return;
            }
            seen = st.generation;
            (st.job, st.n_tasks)
        };
        let ok = match job {
            // SAFETY: `for_each` keeps the closure alive until this worker decrements `active`.
            Some(JobPtr(p)) => catch_unwind(AssertUnwindSafe(|| run_tasks(shared, unsafe { &*p }, n_tasks))).is_ok(),
            None => true,
        };
        let mut st = shared.lock();
        st.panicked |= !ok;
        st.active -= 1;
        if st.active == 0 {
            shared.done.notify_all();
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_all();
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

#[cfg(test)]
mod tests {
    use super::*;

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
