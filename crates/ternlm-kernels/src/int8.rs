//! Int8 weight rows with one f32 scale per row, against per-token int8 activations: the
//! opt-in repack of an output head (`--int8-head`). An F16 head of 128256 x 2560 is 656 MB
//! per decoded token; as int8 it is 328 MB, at the cost of rounding every weight to 1/127 of
//! its row's largest and the activations to 1/127 of the token's largest.

use crate::act_quant::{ActFormat, QuantActs};
use crate::huge_buf::HugeBuf;
use crate::isa::{self, Isa};
use crate::pool::{ThreadPool, split_range};
use crate::sync_out::SyncOut;

#[derive(Clone, Debug)]
pub struct Int8Matrix {
    rows: usize,
    cols: usize,
    q: HugeBuf,
    scales: Vec<f32>,
}

impl Int8Matrix {
    pub const ACT_FORMAT: ActFormat = ActFormat::PerToken;

    /// Quantizes rows produced by `row(r, buf)` (each `cols` floats), in parallel.
    pub fn quantize(pool: &ThreadPool, rows: usize, cols: usize, row: &(dyn Fn(usize, &mut [f32]) + Sync)) -> Self {
        let mut q = HugeBuf::zeroed(rows * cols);
        let scales: Vec<std::sync::atomic::AtomicU32> = (0..rows).map(|_| std::sync::atomic::AtomicU32::new(0)).collect();
        let per_task = 256;
        pool.for_each_chunk_mut(&mut q, per_task * cols, &|task, out| {
            let mut buf = vec![0f32; cols];
            for (i, dst) in out.chunks_exact_mut(cols).enumerate() {
                let r = task * per_task + i;
                row(r, &mut buf);
                let amax = buf.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
                for (o, &v) in dst.iter_mut().zip(&buf) {
                    *o = (v * id).round_ties_even().clamp(-127.0, 127.0) as i8 as u8;
                }
                scales[r].store(d.to_bits(), std::sync::atomic::Ordering::Relaxed);
            }
        });
        let scales = scales.into_iter().map(|s| f32::from_bits(s.into_inner())).collect();
        Self { rows, cols, q, scales }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn bytes(&self) -> usize {
        self.q.len() + self.scales.len() * 4
    }

    pub fn gemm(&self, pool: &ThreadPool, acts: &QuantActs, out: &mut [f32]) {
        self.gemm_at(isa::active(), pool, acts, out);
    }

    /// `out[t * rows + r] = scale[r] · Σ q[r]·x[t] / s[t]` at a given ISA level.
    pub fn gemm_at(&self, level: Isa, pool: &ThreadPool, acts: &QuantActs, out: &mut [f32]) {
        assert!(level <= Isa::detect(), "ISA level {level:?} is beyond this CPU");
        assert_eq!((acts.k, acts.block_len), (self.cols, self.cols), "int8 rows take per-token activations of their width");
        assert_eq!(out.len(), acts.n * self.rows);
        let out = SyncOut::new(out);
        let parts = pool.n_threads() * 16;
        pool.for_each(parts, &|p| {
            for r in split_range(self.rows, parts, 16, p) {
                let w = &self.q[r * self.cols..(r + 1) * self.cols];
                for t in 0..acts.n {
                    let x = acts.row(t);
                    let isum = match level {
                        // SAFETY: the level is at most the detected one (asserted above).
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2 | Isa::Avx512 | Isa::Amx => unsafe { dot_avx2(w, x) },
                        _ => dot_scalar(w, x),
                    };
                    out.set(t * self.rows + r, isum as f32 * self.scales[r] / acts.inv[t]);
                }
            }
        });
    }
}

fn dot_scalar(w: &[u8], x: &[i8]) -> i32 {
    w.iter().zip(x).map(|(&a, &b)| i32::from(a as i8) * i32::from(b)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(w: &[u8], x: &[i8]) -> i32 {
    use std::arch::x86_64::*;
    let n = w.len().min(x.len());
    let full = n / 32 * 32;
    // SAFETY: 32 bytes at i < full from both slices. Weights lie in -127..=127, so the sign
    // trick (|w| unsigned times x signed by w) is exact and pairs fit int16 (2·127·128).
    let mut sum = unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_si256();
        for i in (0..full).step_by(32) {
            let wv = _mm256_loadu_si256(w.as_ptr().add(i) as *const __m256i);
            let xv = _mm256_loadu_si256(x.as_ptr().add(i) as *const __m256i);
            let p = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
        }
        let s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256::<1>(acc));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    };
    sum += dot_scalar(&w[full..n], &x[full..n]);
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Every level matches the scalar twin bit for bit, and the result stays within the
        /// rounding of both quantizations of the float product.
        #[test]
        fn levels_agree_and_track_float_math(rows in 1usize..40, cols in 1usize..300, n in 1usize..4, seed in any::<u64>()) {
            let mut s = seed | 1;
            let mut next = move || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0 };
            let w: Vec<f32> = (0..rows * cols).map(|_| next()).collect();
            let x: Vec<f32> = (0..n * cols).map(|_| next()).collect();
            let pool = ThreadPool::new(2);
            let m = Int8Matrix::quantize(&pool, rows, cols, &|r, buf| buf.copy_from_slice(&w[r * cols..(r + 1) * cols]));
            let mut acts = QuantActs::default();
            acts.quantize(ActFormat::PerToken, &x, cols);
            let mut reference = vec![0f32; n * rows];
            m.gemm_at(Isa::Scalar, &pool, &acts, &mut reference);
            for level in [Isa::Avx2, Isa::Avx512] {
                if level <= Isa::detect() {
                    let mut out = vec![0f32; n * rows];
                    m.gemm_at(level, &pool, &acts, &mut out);
                    prop_assert_eq!(&out, &reference);
                }
            }
            for t in 0..n {
                for r in 0..rows {
                    let exact: f32 = (0..cols).map(|i| w[r * cols + i] * x[t * cols + i]).sum();
                    prop_assert!((reference[t * rows + r] - exact).abs() < 0.02 * (cols as f32).sqrt() + 1e-3);
                }
            }
        }
    }
}
