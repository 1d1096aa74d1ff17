//! A growable byte buffer aligned to 64 bytes (a cache line), for kernel scratch that SIMD
//! loads stream through: the allocator only promises 16 bytes, and then every other 32-byte
//! load straddles two cache lines.

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

#[derive(Default)]
pub struct AlignedBytes {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedBytes {
    pub const fn new() -> Self {
        Self { lines: Vec::new(), len: 0 }
    }

    /// Makes the buffer `len` bytes long; new bytes are zero, kept bytes keep their values.
    pub fn resize(&mut self, len: usize) {
        self.lines.resize(len.div_ceil(64), Line([0; 64]));
        self.len = len;
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `lines` holds at least `len` contiguous initialized bytes (each `Line` is 64
        // plain bytes with no padding), and the borrow ties the slice to `self`.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const u8, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, with the unique borrow of `self`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut u8, self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_resizable() {
        let mut b = AlignedBytes::new();
        b.resize(100);
        assert_eq!(b.as_slice().as_ptr() as usize % 64, 0);
        b.as_mut_slice()[99] = 5;
        b.resize(1000);
        assert_eq!((b.as_slice().len(), b.as_slice()[99], b.as_slice()[999]), (1000, 5, 0));
    }
}
