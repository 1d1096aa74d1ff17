//! A persistent thread pool. A job is a borrowed closure run over task indices `0..n`, handed
//! out by an atomic counter, with the calling thread working too. Nothing is allocated and no
//! channel is used per job.
//!
//! Decode issues hundreds of small jobs per token, so idle workers spin for the next one (a
//! futex wake-up costs as much as a small job). The pool must not collapse when it does not
//! have the CPUs to itself (another busy process, or more threads than CPUs), so no thread
//! ever waits for one that is not running, spinning gives way, and the pool falls back to
//! the caller alone when that is faster:
//!
//! - A worker *enters* a job (a compare-and-swap on the job's state word, which fails once the
//!   job is closed) before it may read the closure, and *leaves* it when the task counter runs
//!   dry. The caller runs tasks too, then closes the job and waits only for the workers that
//!   entered. A worker the scheduler has not run yet simply misses the job (the caller did its
//!   share), and can never reach the closure of a job that `for_each` has returned from.
//! - At most one worker per CPU the process may use, besides the caller, stays awake
//!   (spinning or working); the others park, and the caller wakes parked ones up to that
//!   number when it posts a job. `ThreadPool::new(1000)` on two CPUs thus runs near the speed
//!   of two threads instead of crawling.
//! - A worker that finds it was descheduled while spinning (the clock jumped between two
//!   reads) takes the machine for busy and, for a while that doubles as long as that keeps
//!   happening, spins only briefly before it parks, leaving the CPU time to the caller and to
//!   the other processes.
//! - The caller waits for entered workers by spinning briefly and then parking until the last
//!   one leaves, so it does not burn a CPU that a descheduled worker needs to finish.
//! - A governor (`Governor`) times jobs run both ways, on the pool and on the caller alone,
//!   and keeps the faster: when the process gets no more than one CPU's worth of time, a
//!   second thread only adds waits.

use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

type Task = dyn Fn(usize) + Sync;

/// How long an idle worker spins for the next job before it parks, while the machine looks
/// free: longer than the caller's work between two jobs, sampling included.
const SPIN: Duration = Duration::from_micros(1000);
/// The same after the worker was descheduled lately: enough to catch the next job of a
/// layer, short enough to give the CPU back soon on a busy machine.
const SHORT_SPIN: Duration = Duration::from_micros(20);
/// A pause this long between two clock reads of a spin loop means the thread was descheduled
/// (interrupts and the hypervisor take far less).
const GAP: Duration = Duration::from_micros(200);
/// How long a descheduled worker keeps to short spins; doubled, up to [`CALM_MAX`], while it
/// keeps being descheduled, so a machine that stays busy is rarely probed.
const CALM_MIN: Duration = Duration::from_millis(20);
const CALM_MAX: Duration = Duration::from_millis(640);
/// How long the caller spins for entered workers to leave before it parks: a task or two
/// when the workers are running.
const CALLER_SPIN: Duration = Duration::from_micros(50);
/// Spin iterations between two clock reads (a read costs about as much as 64 pauses).
const CLOCK_EVERY: u32 = 64;

/// `state`: the job takes no more workers.
const CLOSED: usize = 1 << (usize::BITS - 1);
/// `state`: the caller is parked (or about to park) until the last entered worker leaves.
const WAITING: usize = 1 << (usize::BITS - 2);
/// `state`: the number of workers inside the job.
const ENTERED: usize = WAITING - 1;

/// A type-erased pointer to the closure of the running job.
#[derive(Clone, Copy)]
struct JobPtr(*const Task);
// SAFETY: the pointee is `Sync`, and a worker dereferences it only between entering and
// leaving the job, while `for_each` (which waits for every entered worker) keeps it alive.
unsafe impl Send for JobPtr {}

/// Keeps the hot atomics on cache lines of their own (two lines: adjacent-line prefetch).
#[repr(align(128))]
struct Padded<T>(T);

impl<T> Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The posted job. Written by `for_each` only while the job is closed and no worker is
/// inside; read by a worker only while it is inside. `task` is left dangling once its job
/// has returned (and before the first job): no worker can enter a closed job, and the next
/// job overwrites it before it opens.
struct Job {
    task: JobPtr,
    n_tasks: usize,
    generation: u64,
}

/// Workers in the parking loop are `sleepers + tickets`; a ticket is a wake-up already
/// counted as awake by whoever sent it.
struct Sleep {
    sleepers: usize,
    tickets: usize,
}

struct Shared {
    /// Bumped once per job; waiting workers look for a new value.
    generation: Padded<AtomicU64>,
    /// [`CLOSED`], [`WAITING`] and the count of entered workers.
    state: Padded<AtomicUsize>,
    next: Padded<AtomicUsize>,
    job: Mutex<Job>,
    /// The thread in `for_each`, for the last worker out to unpark; written before the
    /// caller sets [`WAITING`], read only by a worker that saw it set.
    caller: Mutex<Option<Thread>>,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    /// Workers not parked (spinning, or inside a job).
    awake: AtomicUsize,
    /// How many workers may stay awake: one per usable CPU besides the caller's.
    max_awake: usize,
    sleep: Mutex<Sleep>,
    wake: Condvar,
    /// Makes every worker wait this long before it tries to enter a job, so tests can
    /// exercise late workers.
    #[cfg(test)]
    entry_delay: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic never leaves these small records half-written, so a poisoned lock is usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serialises jobs, and chooses for each whether the workers take part.
    governor: Mutex<Governor>,
}

impl ThreadPool {
    /// A pool with `n_threads` threads in all (the caller counts as one). More threads than
    /// the process has CPUs are allowed but gain nothing: the extra ones stay parked.
    pub fn new(n_threads: usize) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::build(n_threads, cpus, Duration::ZERO)
    }

    #[cfg_attr(not(test), allow(unused_variables))]
    fn build(n_threads: usize, cpus: usize, entry_delay: Duration) -> Self {
        let n_workers = n_threads.max(1) - 1;
        let shared = Arc::new(Shared {
            generation: Padded(AtomicU64::new(0)),
            state: Padded(AtomicUsize::new(CLOSED)),
            next: Padded(AtomicUsize::new(0)),
            // Never dereferenced: no worker can enter before the first job is posted.
            job: Mutex::new(Job { task: JobPtr(std::ptr::null::<fn(usize)>() as *const Task), n_tasks: 0, generation: 0 }),
            caller: Mutex::new(None),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            awake: AtomicUsize::new(n_workers),
            max_awake: n_workers.min(cpus.max(1) - 1),
            sleep: Mutex::new(Sleep { sleepers: 0, tickets: 0 }),
            wake: Condvar::new(),
            #[cfg(test)]
            entry_delay,
        });
        let workers = (1..=n_workers)
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new().name(format!("ternlm-worker-{i}")).spawn(move || worker(&shared)).expect("spawning a worker thread")
            })
            .collect();
        Self { shared, workers, governor: Mutex::new(Governor::new()) }
    }

    pub fn n_threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(i)` for every `i` in `0..n_tasks`, spread over the pool, and returns when all
    /// have finished. A panic in any task is re-raised here.
    pub fn for_each<'f>(&self, n_tasks: usize, f: &'f (dyn Fn(usize) + Sync + 'f)) {
        if self.shared.max_awake == 0 || n_tasks <= 1 {
            (0..n_tasks).for_each(f);
            return;
        }
        let mut governor = lock(&self.governor);
        let start = Instant::now();
        let helped = if governor.serial() {
            (0..n_tasks).for_each(f);
            false
        } else {
            self.run_parallel(n_tasks, f)
        };
        governor.record(start, Instant::now(), helped);
    }

    /// Runs a job on the caller and the workers that join in time; says whether any did.
    fn run_parallel<'f>(&self, n_tasks: usize, f: &'f (dyn Fn(usize) + Sync + 'f)) -> bool {
        let sh = &*self.shared;
        // SAFETY: erases the closure's lifetime; workers use it only inside the job, and we
        // return only once the job is closed and every worker that entered it has left.
        let ptr: *const Task = unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + 'f), *const Task>(f as *const _) };
        let generation = sh.generation.load(Ordering::Relaxed).wrapping_add(1);
        *lock(&sh.job) = Job { task: JobPtr(ptr), n_tasks, generation };
        sh.next.store(0, Ordering::Relaxed);
        sh.panicked.store(false, Ordering::Relaxed);
        // Opens the job: a worker's successful entry acquires everything written above.
        sh.state.store(0, Ordering::Release);
        sh.generation.store(generation, Ordering::Release);
        // Store (generation) then load (`awake`, in `wake_workers`), against a parking worker's
        // store (`awake`) then load (generation): without a SeqCst fence on both sides each
        // could miss the other's store, and the worker would park through this job. The
        // matching fence is in `wait_for_job`.
        fence(Ordering::SeqCst);
        self.wake_workers();
        let mine = catch_unwind(AssertUnwindSafe(|| run_tasks(sh, f, n_tasks)));
        if sh.state.fetch_or(CLOSED, Ordering::AcqRel) & ENTERED != 0 {
            wait_for_workers(sh);
        }
        let ran = mine.unwrap_or_else(|p| resume_unwind(p));
        assert!(!sh.panicked.load(Ordering::Relaxed), "a thread pool task panicked");
        ran < n_tasks
    }

    /// Wakes parked workers until `max_awake` are awake (or none is left parked). Called
    /// after the new generation is stored and fenced (see `run_parallel`), so a worker about
    /// to park that this load still counts as awake sees the new generation itself.
    fn wake_workers(&self) {
        let sh = &*self.shared;
        if sh.awake.load(Ordering::Relaxed) >= sh.max_awake {
            return;
        }
        let mut sleep = lock(&sh.sleep);
        let want = sh.max_awake.saturating_sub(sh.awake.load(Ordering::Relaxed)).min(sleep.sleepers);
        if want == 0 {
            return;
        }
        let everyone = want == sleep.sleepers;
        sleep.sleepers -= want;
        sleep.tickets += want;
        sh.awake.fetch_add(want, Ordering::Relaxed);
        if everyone {
            sh.wake.notify_all();
        } else {
            for _ in 0..want {
                sh.wake.notify_one();
            }
        }
    }
}

/// Decides whether jobs run on the whole pool or on the caller alone, by timing both.
///
/// When the process gets no more than one CPU's worth of time (another busy process in a
/// different session or cgroup, which the scheduler gives as much time as ours, or a
/// quota), a second thread cannot add speed, and every job it joins costs wake-ups and
/// waits for a thread that was descheduled in the middle of a task: the caller alone, as
/// at `-t 1`, is then faster. Jobs are timed in windows (wall time per job, counting the
/// caller's work between jobs but not longer pauses), each feeding a running estimate for
/// the way it ran; now and then a window runs the other way as a probe, and the way with
/// the better estimate is kept. On a busy machine single windows vary by tens of %, so one
/// window moves an estimate only part of the way. Probes back off while the other way
/// loses by far, and come sooner when a window turns out much slower than the best recent
/// one, or when in most of its jobs no worker helped (the machine got busier).
struct Governor {
    serial: bool,
    /// The current window runs the other way.
    probing: bool,
    jobs: u32,
    /// Jobs of the window where some worker ran a task.
    helped: u32,
    time: Duration,
    last_end: Option<Instant>,
    /// Estimated wall time per job, in seconds, on the pool (`[0]`) and on the caller
    /// alone (`[1]`); none until that way has run a window.
    estimate: [Option<f64>; 2],
    /// The fastest recent window run the current way, forgotten slowly.
    best: f64,
    /// Windows run the current way since the last probe or switch.
    since_probe: u32,
    /// Windows between probes: doubled while probes lose by far.
    probe_every: u32,
}

/// A window: at least this many jobs and this much time (two tokens of decode or so).
const WINDOW_JOBS: u32 = 128;
const WINDOW: Duration = Duration::from_millis(16);
/// The longest pause between two jobs still counted as the caller's work; longer ones are
/// the program doing something else (waiting for input, say).
const PAUSE: Duration = Duration::from_millis(2);
/// How far a window moves the estimate of its way towards itself; a probe, rarer, moves it
/// further.
const WEIGHT: f64 = 0.25;
const PROBE_WEIGHT: f64 = 0.5;
/// Windows between probes: fewest, before the first, and most (a losing probe costs a
/// fraction of a window, so one in 128 costs well under 1%; a busy machine is caught by
/// [`SLOWDOWN`] and the workers' absence long before the first scheduled probe).
const PROBE_MIN: u32 = 2;
const PROBE_FIRST: u32 = 64;
const PROBE_MAX: u32 = 128;
/// A window this much slower than the best recent one, or one where the workers helped in
/// fewer than half the jobs (they run in nearly all on a free machine), brings the next
/// probe forward, to no fewer than [`PROBE_SOON`] windows after the last.
const SLOWDOWN: f64 = 1.5;
const PROBE_SOON: u32 = 4;
/// The other way's estimate must be this much lower to switch.
const SWITCH: f64 = 0.93;
/// A probe slower than this ratio lets the probes back off.
const FAR: f64 = 1.1;

impl Governor {
    fn new() -> Self {
        Self { serial: false, probing: false, jobs: 0, helped: 0, time: Duration::ZERO, last_end: None, estimate: [None; 2], best: f64::MAX, since_probe: 0, probe_every: PROBE_FIRST }
    }

    /// Whether the next job runs on the caller alone.
    fn serial(&self) -> bool {
        self.serial != self.probing
    }

    /// Counts a job that ran from `start` to `end`, `helped` by some worker.
    fn record(&mut self, start: Instant, end: Instant, helped: bool) {
        if let Some(last) = self.last_end {
            self.time += start.saturating_duration_since(last).min(PAUSE);
        }
        self.last_end = Some(end);
        self.time += end.saturating_duration_since(start);
        self.jobs += 1;
        self.helped += u32::from(helped);
        if self.jobs < WINDOW_JOBS || self.time < WINDOW {
            return;
        }
        let per_job = self.time.as_secs_f64() / f64::from(self.jobs);
        let unhelped = !self.serial() && self.helped < self.jobs / 2;
        self.jobs = 0;
        self.helped = 0;
        self.time = Duration::ZERO;
        let way = usize::from(self.serial());
        let weight = if self.probing { PROBE_WEIGHT } else { WEIGHT };
        self.estimate[way] = Some(self.estimate[way].map_or(per_job, |e| e + (per_job - e) * weight));
        if self.probing {
            self.probing = false;
            self.since_probe = 0;
            let current = self.estimate[1 - way].unwrap_or(per_job);
            self.probe_every = if per_job < current * FAR { PROBE_MIN } else { (2 * self.probe_every).min(PROBE_MAX) };
        } else {
            self.best = per_job.min(self.best * (1.0 + 1.0 / 64.0));
            self.since_probe += 1;
        }
        if let [Some(pool), Some(alone)] = self.estimate {
            let (mine, other) = if self.serial { (alone, pool) } else { (pool, alone) };
            if other < mine * SWITCH {
                self.serial = !self.serial;
                self.best = other;
                self.since_probe = 0;
                self.probe_every = PROBE_MIN;
                return;
            }
        }
        let slower = per_job > self.best * SLOWDOWN;
        self.probing = self.since_probe >= self.probe_every || ((slower || unhelped) && self.since_probe >= PROBE_SOON);
    }
}

/// Waits until no worker is inside the (closed) job: spins for [`CALLER_SPIN`], then parks
/// and lets the last worker out unpark it.
fn wait_for_workers(sh: &Shared) {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        if sh.state.load(Ordering::Acquire) & ENTERED == 0 {
            return;
        }
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(CLOCK_EVERY) && start.elapsed() > CALLER_SPIN {
            break;
        }
        std::hint::spin_loop();
    }
    // Only now, about to park, does the caller leave its handle, before it sets WAITING: a
    // worker reads it only after seeing WAITING, and locks `caller` after that, so its lock
    // comes after ours (coherence on `state`) and it finds this handle.
    *lock(&sh.caller) = Some(std::thread::current());
    // From here every worker leaving sees WAITING, and the last one unparks us.
    if sh.state.fetch_or(WAITING, Ordering::AcqRel) & ENTERED == 0 {
        return;
    }
    while sh.state.load(Ordering::Acquire) & ENTERED != 0 {
        std::thread::park();
    }
}

/// Enters the posted job unless it is closed.
fn enter(sh: &Shared) -> bool {
    sh.state.fetch_update(Ordering::Acquire, Ordering::Relaxed, |s| (s & CLOSED == 0).then_some(s + 1)).is_ok()
}

/// Leaves the job; the last worker out unparks a caller that is waiting for it.
fn leave(sh: &Shared) {
    let mut s = sh.state.load(Ordering::Relaxed);
    loop {
        if s & ENTERED == 1 && s & WAITING != 0 {
            // The job is closed and we are its last worker, so nothing else changes `state`
            // and the caller, parked or about to park, has left its handle: take it first, as
            // the caller may return (and post another job) the moment we leave.
            let caller = lock(&sh.caller).clone();
            sh.state.fetch_sub(1, Ordering::Release);
            if let Some(t) = caller {
                t.unpark();
            }
            return;
        }
        match sh.state.compare_exchange_weak(s, s - 1, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(now) => s = now,
        }
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

/// Runs tasks until none is left; returns how many.
fn run_tasks(shared: &Shared, f: &(dyn Fn(usize) + Sync + '_), n_tasks: usize) -> usize {
    let mut ran = 0;
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= n_tasks {
            return ran;
        }
        f(i);
        ran += 1;
    }
}

/// A worker's memory of being descheduled, which decides how long it spins.
struct Patience {
    /// When the worker last found it was descheduled; it spins only briefly for `backoff`
    /// after that.
    last_gap: Option<Instant>,
    backoff: Duration,
}

impl Patience {
    fn new() -> Self {
        Self { last_gap: None, backoff: CALM_MIN }
    }

    fn spin_budget(&self, now: Instant) -> Duration {
        match self.last_gap {
            Some(t) if now < t + self.backoff => SHORT_SPIN,
            _ => SPIN,
        }
    }

    fn descheduled(&mut self, now: Instant) {
        // Descheduled again soon after the last calm period ended: the machine is still busy,
        // so stay calm for longer; otherwise this is a new busy spell.
        let again = self.last_gap.is_some_and(|t| now.duration_since(t) < 2 * self.backoff + CALM_MIN);
        self.backoff = if again { (2 * self.backoff).min(CALM_MAX) } else { CALM_MIN };
        self.last_gap = Some(now);
    }
}

/// Waits for a generation other than `seen`: spins (see [`Patience`]) unless too many workers
/// are awake, then parks. Dropping the pool bumps the generation too.
fn wait_for_job(sh: &Shared, seen: u64, patience: &mut Patience) -> u64 {
    if sh.awake.load(Ordering::Relaxed) <= sh.max_awake {
        let start = Instant::now();
        let mut budget = patience.spin_budget(start);
        let mut last = start;
        let mut spins = 0u32;
        loop {
            let g = sh.generation.load(Ordering::Acquire);
            if g != seen {
                return g;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(CLOCK_EVERY) {
                let now = Instant::now();
                if now.duration_since(last) > GAP {
                    patience.descheduled(now);
                    budget = SHORT_SPIN;
                }
                if now.duration_since(start) > budget {
                    break;
                }
                last = now;
            }
            std::hint::spin_loop();
        }
    }
    let mut sleep = lock(&sh.sleep);
    sh.awake.fetch_sub(1, Ordering::Relaxed);
    sleep.sleepers += 1;
    // Store (`awake`) then load (generation), against `run_parallel`'s store (generation)
    // then load (`awake`): with a SeqCst fence on both sides, either we see the new job
    // below, or the caller sees us no longer awake and takes the lock to wake us, which it
    // gets only once we are counted as a sleeper and waiting. The lock alone is not enough:
    // the caller skips it while it sees enough workers awake. (A missed wake-up would only
    // cost this worker the job, not a hang: the caller never waits for a worker that did
    // not enter.) `Drop` bumps the generation before it notifies under the lock.
    fence(Ordering::SeqCst);
    loop {
        let g = sh.generation.load(Ordering::Acquire);
        if g != seen {
            if sleep.tickets > 0 {
                sleep.tickets -= 1;
            } else {
                sleep.sleepers -= 1;
                sh.awake.fetch_add(1, Ordering::Relaxed);
            }
            return g;
        }
        sleep = sh.wake.wait(sleep).unwrap_or_else(|e| e.into_inner());
    }
}

fn worker(sh: &Shared) {
    let mut seen = 0u64;
    let mut patience = Patience::new();
    loop {
        seen = wait_for_job(sh, seen, &mut patience);
        if sh.shutdown.load(Ordering::Acquire) {
            return;
        }
        #[cfg(test)]
        if !sh.entry_delay.is_zero() {
            std::thread::sleep(sh.entry_delay);
        }
        if !enter(sh) {
            continue;
        }
        let (task, n_tasks, generation) = {
            let job = lock(&sh.job);
            (job.task, job.n_tasks, job.generation)
        };
        // The job we entered may be newer than the one we saw posted.
        seen = generation;
        // SAFETY: we are inside the job, so `task` is its closure (written before the job
        // opened), and `for_each` keeps it alive until every worker inside has left.
        let f = unsafe { &*task.0 };
        if catch_unwind(AssertUnwindSafe(|| run_tasks(sh, f, n_tasks))).is_err() {
            sh.panicked.store(true, Ordering::Relaxed);
        }
        leave(sh);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        // Workers wait for a new generation only; one that sees this one (acquiring the
        // store above) then finds `shutdown` set. No job runs: `drop` has the pool to itself.
        self.shared.generation.fetch_add(1, Ordering::Release);
        {
            let _sleep = lock(&self.shared.sleep);
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

    /// Runs a job of `n` tasks, each calling `also(i)` and then counting a hit for `i`, and
    /// asserts that every task ran exactly once.
    #[track_caller]
    fn assert_each_once(pool: &ThreadPool, n: usize, also: impl Fn(usize) + Sync, context: impl std::fmt::Display) {
        let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
        pool.for_each(n, &|i| {
            also(i);
            hits[i].fetch_add(1, Ordering::Relaxed);
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{context}");
    }

    /// Runs `f` over 8 tasks and asserts that its panic reaches the caller.
    #[track_caller]
    fn assert_reraises(pool: &ThreadPool, f: &(dyn Fn(usize) + Sync)) {
        let r = catch_unwind(AssertUnwindSafe(|| pool.for_each(8, f)));
        assert!(r.is_err());
    }

    /// Asserts that the pool still runs every task of an 8-task job (after a panic).
    #[track_caller]
    fn assert_survives(pool: &ThreadPool) {
        let count = AtomicUsize::new(0);
        pool.for_each(8, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 8);
    }

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
                assert_each_once(&pool, n, |_| {}, format_args!("threads {threads} n {n}"));
            }
        }
    }

    #[test]
    fn a_panicking_task_is_reraised_and_the_pool_survives() {
        let pool = ThreadPool::new(2);
        assert_reraises(&pool, &|i| assert!(i != 5, "task 5"));
        assert_survives(&pool);
    }

    #[test]
    fn many_jobs_on_more_threads_than_cpus() {
        // 16 threads on a pool that believes it has 2 CPUs (one worker awake at a time), and
        // on the real CPU count.
        for pool in [ThreadPool::build(16, 2, Duration::ZERO), ThreadPool::new(16)] {
            let total = AtomicUsize::new(0);
            for job in 0..2000 {
                let n = 1 + job % 37;
                let also = |_| {
                    total.fetch_add(1, Ordering::Relaxed);
                };
                assert_each_once(&pool, n, also, format_args!("job {job}"));
            }
            assert_eq!(total.load(Ordering::Relaxed), (0..2000).map(|j| 1 + j % 37).sum::<usize>());
        }
    }

    #[test]
    fn one_cpu_runs_everything_on_the_caller() {
        let pool = ThreadPool::build(4, 1, Duration::ZERO);
        let me = std::thread::current().id();
        pool.for_each(64, &|_| assert_eq!(std::thread::current().id(), me));
    }

    #[test]
    fn a_slow_worker_does_not_lose_tasks() {
        // Whatever worker 1 runs takes a while, so the caller finishes the rest and parks
        // until worker 1 leaves.
        let pool = ThreadPool::build(3, 3, Duration::ZERO);
        for job in 0..20 {
            let also = |_| {
                if std::thread::current().name() == Some("ternlm-worker-1") {
                    std::thread::sleep(Duration::from_millis(2));
                }
            };
            assert_each_once(&pool, 24, also, format_args!("job {job}"));
        }
    }

    #[test]
    fn late_workers_never_run_a_finished_job() {
        // Workers wait before entering, so most miss their job; a task that ran after its
        // `for_each` returned would show up as a count changed after the fact.
        let pool = ThreadPool::build(4, 4, Duration::from_micros(300));
        let mut done: Vec<(Arc<AtomicUsize>, usize)> = Vec::new();
        for job in 0..200 {
            let count = Arc::new(AtomicUsize::new(0));
            let n = 2 + job % 5;
            let c = Arc::clone(&count);
            pool.for_each(n, &move |_| {
                c.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(count.load(Ordering::Relaxed), n);
            done.push((count, n));
        }
        std::thread::sleep(Duration::from_millis(5));
        assert!(done.iter().all(|(c, n)| c.load(Ordering::Relaxed) == *n));
    }

    #[test]
    fn a_panic_on_a_worker_is_reraised() {
        let pool = ThreadPool::build(3, 3, Duration::ZERO);
        for _ in 0..3 {
            let worker_ran = AtomicBool::new(false);
            assert_reraises(&pool, &|_| {
                if std::thread::current().name().is_some_and(|n| n.starts_with("ternlm-worker")) {
                    worker_ran.store(true, Ordering::Relaxed);
                    panic!("worker task");
                }
                // The caller holds on to its task until a worker has taken one (awake
                // workers enter within microseconds; the bound only keeps a broken pool
                // from hanging the test).
                let start = Instant::now();
                while !worker_ran.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(10) {
                    std::thread::yield_now();
                }
            });
        }
        assert_survives(&pool);
    }

    #[test]
    fn jobs_from_several_threads_take_turns() {
        let pool = ThreadPool::build(3, 3, Duration::ZERO);
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..300 {
                        pool.for_each(9, &|i| {
                            if i == 0 {
                                std::thread::yield_now();
                            }
                            total.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 3 * 300 * 9);
    }

    #[test]
    fn drop_while_idle_or_parked() {
        drop(ThreadPool::new(4));
        let pool = ThreadPool::build(5, 2, Duration::ZERO);
        pool.for_each(10, &|_| {});
        // Long enough for the awake worker to give up spinning and park.
        std::thread::sleep(Duration::from_millis(5));
        drop(pool);
    }

    /// Runs `jobs` jobs through `g`, each taking `serial` or `parallel` as the governor
    /// chooses, back to back from `t`; returns the share run serially.
    fn drive(g: &mut Governor, t: &mut Instant, jobs: u32, serial: Duration, parallel: Duration) -> f64 {
        drive_helped(g, t, jobs, serial, parallel, true)
    }

    /// As [`drive`], with the workers helping in parallel jobs or not.
    fn drive_helped(g: &mut Governor, t: &mut Instant, jobs: u32, serial: Duration, parallel: Duration, helped: bool) -> f64 {
        let mut n_serial = 0;
        for _ in 0..jobs {
            let s = g.serial();
            let end = *t + if s { serial } else { parallel };
            g.record(*t, end, helped && !s);
            *t = end;
            n_serial += u32::from(s);
        }
        f64::from(n_serial) / f64::from(jobs)
    }

    #[test]
    fn the_governor_keeps_the_pool_while_it_is_faster() {
        let (mut g, mut t) = (Governor::new(), Instant::now());
        let share = drive(&mut g, &mut t, 200_000, Duration::from_micros(90), Duration::from_micros(50));
        // Only probes run serially, fewer as they keep losing.
        assert!(share < 0.02, "{share}");
        assert!(!g.serial());
    }

    #[test]
    fn the_governor_falls_back_to_the_caller_and_returns() {
        let (mut g, mut t) = (Governor::new(), Instant::now());
        // A busy machine: the caller alone is faster.
        drive(&mut g, &mut t, 50_000, Duration::from_micros(60), Duration::from_micros(100));
        let share = drive(&mut g, &mut t, 100_000, Duration::from_micros(60), Duration::from_micros(100));
        assert!(share > 0.97, "{share}");
        // The machine frees up: back to the pool within the longest probe interval.
        drive(&mut g, &mut t, 100_000, Duration::from_micros(60), Duration::from_micros(35));
        let share = drive(&mut g, &mut t, 100_000, Duration::from_micros(60), Duration::from_micros(35));
        assert!(share < 0.02, "{share}");
    }

    #[test]
    fn the_governor_probes_soon_when_the_workers_stop_helping() {
        let (mut g, mut t) = (Governor::new(), Instant::now());
        // Six windows of parallel jobs (160 each), but well before the first scheduled probe.
        drive_helped(&mut g, &mut t, 1000, Duration::from_micros(60), Duration::from_micros(100), false);
        assert!(g.serial());
        let (mut g, mut t) = (Governor::new(), Instant::now());
        drive_helped(&mut g, &mut t, 1000, Duration::from_micros(60), Duration::from_micros(100), true);
        assert!(!g.serial());
    }

    #[test]
    fn the_governor_does_not_count_long_pauses() {
        let (mut g, t) = (Governor::new(), Instant::now());
        g.record(t, t + Duration::from_micros(10), true);
        g.record(t + Duration::from_secs(5), t + Duration::from_secs(5) + Duration::from_micros(10), true);
        assert_eq!(g.time, PAUSE + Duration::from_micros(20));
    }

    #[test]
    fn the_pool_is_correct_either_way_the_governor_goes() {
        let pool = ThreadPool::build(3, 3, Duration::ZERO);
        for serial in [true, false, true] {
            lock(&pool.governor).serial = serial;
            for job in 0..500 {
                assert_each_once(&pool, 16, |_| {}, format_args!("job {job}"));
            }
        }
        assert_reraises(&pool, &|i| assert!(i != 5, "task 5"));
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
