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
}
