//! A growable byte buffer aligned to 64 bytes (a cache line), for kernel scratch that SIMD
//! loads stream through: the allocator only promises 16 bytes, and then every other 32-byte
//! load straddles two cache lines.

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

#[derive(Clone, Default)]
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

/// Quantized activations (int8) on 64-byte boundaries: rows a multiple of 64 bytes wide then
/// start on cache lines, which AMX tile loads need to run at full speed (a tile load whose rows
/// straddle lines was measured three times slower). Dereferences to `[i8]`.
#[derive(Clone, Default)]
pub struct AlignedI8(AlignedBytes);

impl AlignedI8 {
    pub const fn new() -> Self {
        Self(AlignedBytes::new())
    }

    /// Makes the buffer `len` values long; new values are zero, kept values keep theirs.
    pub fn resize(&mut self, len: usize) {
        self.0.resize(len);
    }
}

impl std::ops::Deref for AlignedI8 {
    type Target = [i8];
    fn deref(&self) -> &[i8] {
        let b = self.0.as_slice();
        // SAFETY: i8 and u8 have the same size and alignment, and every byte is a valid i8.
        unsafe { std::slice::from_raw_parts(b.as_ptr() as *const i8, b.len()) }
    }
}

impl std::ops::DerefMut for AlignedI8 {
    fn deref_mut(&mut self) -> &mut [i8] {
        let b = self.0.as_mut_slice();
        // SAFETY: as in `deref`, with the unique borrow of `self`.
        unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr() as *mut i8, b.len()) }
    }
}

impl std::fmt::Debug for AlignedI8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl PartialEq for AlignedI8 {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl PartialEq<Vec<i8>> for AlignedI8 {
    fn eq(&self, other: &Vec<i8>) -> bool {
        **self == other[..]
    }
}

impl PartialEq<AlignedI8> for Vec<i8> {
    fn eq(&self, other: &AlignedI8) -> bool {
        self[..] == **other
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
        let mut q = AlignedI8::new();
        q.resize(300);
        q[7] = -3;
        assert_eq!((q.as_ptr() as usize % 64, q.len(), q[7]), (0, 300, -3));
    }
}
