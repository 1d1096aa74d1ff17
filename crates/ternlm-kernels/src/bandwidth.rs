//! A short memory read-bandwidth probe: every thread of the pool sums its share of a buffer
//! far larger than the caches, and the best of a few passes is the machine's practical read
//! ceiling. `ternlm bench` divides decode traffic by it to say how close to the roofline a
//! model runs.

use std::hint::black_box;
use std::time::Instant;

use crate::pool::{ThreadPool, split_range};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes per second read by all of `pool`'s threads from a `bytes`-sized buffer, best of
/// `passes` passes.
pub fn read_bandwidth(pool: &ThreadPool, bytes: usize, passes: usize) -> f64 {
    let words = (bytes / 8).max(1 << 12);
    // Written first so every page is really mapped (a zero page would read from one frame).
    let buf: Vec<u64> = (0..words as u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
    let parts = pool.n_threads();
    let checksum = AtomicU64::new(0);
    let mut best = 0f64;
    for _ in 0..passes.max(1) {
        let start = Instant::now();
        pool.for_each(parts, &|p| {
            let range = split_range(words, parts, 64, p);
            checksum.fetch_add(sum_words(&buf[range]), Ordering::Relaxed);
        });
        let secs = start.elapsed().as_secs_f64();
        best = best.max((words * 8) as f64 / secs);
    }
    black_box(checksum.load(Ordering::Relaxed));
    best
}

/// Eight independent lanes so the loop is bound by loads, not by one add chain; the compiler
/// turns it into vector loads.
fn sum_words(w: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let mut chunks = w.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(v);
        }
    }
    let tail: u64 = chunks.remainder().iter().fold(0, |s, &v| s.wrapping_add(v));
    acc.iter().fold(tail, |s, &v| s.wrapping_add(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_returns_a_positive_rate() {
        let bw = read_bandwidth(&ThreadPool::new(2), 1 << 20, 2);
        assert!(bw.is_finite() && bw > 0.0);
        assert_eq!(sum_words(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), 55);
    }
}
