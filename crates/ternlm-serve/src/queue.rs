//! The requests waiting for a sequence slot: a bounded queue the HTTP side pushes into and the
//! scheduler pops from. It is the only place a request waits, so `max_queue` bounds all the
//! waiting work: the scheduler takes a request only when a slot is free for it, and a request
//! whose client left or whose deadline passed is dropped from here without any compute.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::scheduler::{Job, Rejected};

/// A request and when it arrived.
pub(crate) type Waiting = (Job, Instant);

struct State {
    jobs: VecDeque<Waiting>,
    open: bool,
}

pub(crate) struct Queue {
    state: Mutex<State>,
    ready: Condvar,
    capacity: usize,
}

impl Queue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { state: Mutex::new(State { jobs: VecDeque::new(), open: true }), ready: Condvar::new(), capacity: capacity.max(1) }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a request unless the queue is full or closed; returns the depth after it.
    pub(crate) fn push(&self, job: Job) -> Result<usize, Rejected> {
        let mut s = self.lock();
        if !s.open {
            return Err(Rejected::ShuttingDown);
        }
        if s.jobs.len() >= self.capacity {
            return Err(Rejected::QueueFull(self.capacity));
        }
        s.jobs.push_back((job, Instant::now()));
        let depth = s.jobs.len();
        drop(s);
        self.ready.notify_one();
        Ok(depth)
    }

    /// Stops taking requests; those already queued are still served.
    pub(crate) fn close(&self) {
        self.lock().open = false;
        self.ready.notify_all();
    }

    /// Waits until a request is queued; `false` once the queue is closed and empty.
    pub(crate) fn wait(&self) -> bool {
        let mut s = self.lock();
        loop {
            if !s.jobs.is_empty() {
                return true;
            }
            if !s.open {
                return false;
            }
            s = self.ready.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Removes every request `drop_it` selects (oldest first) and returns them.
    pub(crate) fn remove_where(&self, mut drop_it: impl FnMut(&Job) -> bool) -> Vec<Waiting> {
        let mut s = self.lock();
        let mut out = Vec::new();
        let mut kept = VecDeque::with_capacity(s.jobs.len());
        for w in s.jobs.drain(..) {
            if drop_it(&w.0) { out.push(w) } else { kept.push_back(w) }
        }
        s.jobs = kept;
        out
    }

    /// The oldest request, if any.
    pub(crate) fn pop(&self) -> Option<Waiting> {
        self.lock().jobs.pop_front()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().jobs.len()
    }
}
