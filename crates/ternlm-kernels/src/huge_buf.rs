//! Zeroed byte buffers for weights repacked at load, backed by transparent huge pages where
//! the OS offers them: decode streams hundreds of megabytes per token, and with 4 KiB pages
//! every 4 KiB of weights costs a TLB miss that the hardware prefetcher cannot hide.

use std::ops::{Deref, DerefMut};

use memmap2::MmapMut;

const HUGE: usize = 2 << 20;

pub struct HugeBuf {
    map: Option<MmapMut>,
    vec: Vec<u8>,
    offset: usize,
    len: usize,
}

impl HugeBuf {
    /// `len` zero bytes. Buffers of at least 2 MiB are mapped anonymously and advised to use
    /// huge pages (the kernel backs the 2 MiB-aligned stretches inside with them; no slack is
    /// mapped for alignment, since slack would become resident too); smaller ones, and any
    /// platform where mapping fails, use the heap.
    pub fn zeroed(len: usize) -> Self {
        if len >= HUGE
            && let Ok(map) = MmapMut::map_anon(len)
        {
            #[cfg(target_os = "linux")]
            let _ = map.advise(memmap2::Advice::HugePage);
            return Self { map: Some(map), vec: Vec::new(), offset: 0, len };
        }
        Self { map: None, vec: vec![0; len], offset: 0, len }
    }

    /// A buffer holding `v`'s bytes (copied into huge pages when `v` is large).
    pub fn from_vec(v: Vec<u8>) -> Self {
        if v.len() < HUGE {
            let len = v.len();
            return Self { map: None, vec: v, offset: 0, len };
        }
        let mut b = Self::zeroed(v.len());
        b.copy_from_slice(&v);
        b
    }
}

impl Deref for HugeBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.map {
            Some(m) => &m[self.offset..self.offset + self.len],
            None => &self.vec,
        }
    }
}

impl DerefMut for HugeBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.map {
            Some(m) => &mut m[self.offset..self.offset + self.len],
            None => &mut self.vec,
        }
    }
}

impl Clone for HugeBuf {
    fn clone(&self) -> Self {
        let mut b = Self::zeroed(self.len);
        b.copy_from_slice(self);
        b
    }
}

impl std::fmt::Debug for HugeBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HugeBuf({} bytes{})", self.len, if self.map.is_some() { ", mapped" } else { "" })
    }
}

impl From<Vec<u8>> for HugeBuf {
    fn from(v: Vec<u8>) -> Self {
        Self::from_vec(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_buffers_are_zeroed_and_writable() {
        for len in [0, 100, 3 << 20] {
            let mut b = HugeBuf::zeroed(len);
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&x| x == 0));
            if len > 0 {
                b[len - 1] = 7;
                assert_eq!(b.clone()[len - 1], 7);
            }
        }
        assert_eq!(&*HugeBuf::from_vec(vec![1, 2, 3]), &[1, 2, 3]);
    }
}
