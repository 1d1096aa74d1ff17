//! A raw output pointer that parallel tasks write disjoint elements through.

/// Shares a mutable f32 buffer among pool tasks that each write a disjoint set of indices.
#[derive(Clone, Copy)]
pub(crate) struct SyncOut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: users guarantee that concurrent tasks write disjoint indices and nobody reads the
// buffer until the pool job has finished.
unsafe impl Send for SyncOut {}
// SAFETY: as above.
unsafe impl Sync for SyncOut {}

impl SyncOut {
    pub(crate) fn new(out: &mut [f32]) -> Self {
        Self { ptr: out.as_mut_ptr(), len: out.len() }
    }

    /// Writes `v` at `i`. Panics on an out-of-range index rather than writing past the end.
    #[inline]
    pub(crate) fn set(&self, i: usize, v: f32) {
        assert!(i < self.len, "SyncOut index {i} out of range {}", self.len);
        // SAFETY: in bounds (checked above); disjointness is the caller's contract.
        unsafe { *self.ptr.add(i) = v }
    }

    /// Writes `f(j)` at `start + j` for `j < len`: one bounds check for the run, and a plain
    /// loop the compiler vectorizes (per-element [`Self::set`] calls do not).
    #[inline]
    pub(crate) fn fill(&self, start: usize, len: usize, f: impl Fn(usize) -> f32) {
        assert!(start <= self.len && len <= self.len - start, "SyncOut run {start}+{len} out of range {}", self.len);
        // SAFETY: in bounds (checked above); disjointness is the caller's contract, so no other
        // reference to these elements exists while the slice lives.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) };
        for (j, d) in dst.iter_mut().enumerate() {
            *d = f(j);
        }
    }

    /// Starts fetching the cache line holding element `i` for writing, so a task's stores at
    /// its end do not each wait for their line (when its last writer was another core, that
    /// is a cross-core transfer per line, enough to stall a burst of stores).
    #[inline]
    pub(crate) fn prefetch(&self, i: usize) {
        #[cfg(target_arch = "x86_64")]
        if i < self.len {
            // SAFETY: a prefetch never faults and has no architectural effect; the address is
            // in bounds anyway.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_ET0 }>(self.ptr.add(i) as *const i8) }
        }
    }
}
