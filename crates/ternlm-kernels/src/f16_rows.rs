//! F16 weight rows times f32 activations (F16 output heads and linear layers): one 8-lane
//! accumulator per row and token, so a register tile of several rows and tokens converts each
//! weight once for all its tokens and each activation once for all its rows. A row's result
//! is the same arithmetic whatever the tile (lane `l` sums `w[8s + l]·x[8s + l]` in order of
//! `s` with fused multiply-adds, the lanes fold as [`hsum_float_8`], the ragged tail adds in
//! f64), so a sequence's logits do not depend on what it is batched with.

use half::f16;

use crate::blockq::hsum_float_8;

/// `Σ w·x` over one row, `w` as little-endian F16 bytes: the reference for every level.
pub(crate) fn dot_row(w: &[u8], x: &[f32]) -> f32 {
    let k8 = x.len() / 8 * 8;
    let mut acc = [0f32; 8];
    for s in 0..k8 / 8 {
        for (l, a) in acc.iter_mut().enumerate() {
            let i = 8 * s + l;
            *a = f16::from_le_bytes([w[2 * i], w[2 * i + 1]]).to_f32().mul_add(x[i], *a);
        }
    }
    with_tail(hsum_float_8(acc), w, x, k8)
}

/// The folded lanes plus the columns from `from` on, summed in f64.
fn with_tail(folded: f32, w: &[u8], x: &[f32], from: usize) -> f32 {
    let mut sum = f64::from(folded);
    for i in from..x.len() {
        sum += f64::from(f16::from_le_bytes([w[2 * i], w[2 * i + 1]]).to_f32() * x[i]);
    }
    sum as f32
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use crate::sync_out::SyncOut;

    /// `out.set(t·out_rows + r, dot_row(W[r], x[t]))` for every row in `rows` and each of the
    /// `n` tokens of `xs` (`k` values apart). Rows stream one at a time (reading several side
    /// by side was measured slower: the prefetchers follow one sequential stream best), each
    /// against up to 8 tokens.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn gemm(w: &[u8], row_bytes: usize, rows: std::ops::Range<usize>, xs: &[f32], k: usize, n: usize, out: SyncOut, out_rows: usize) {
        assert!(row_bytes >= 2 * k && w.len() >= rows.end * row_bytes && xs.len() >= n * k);
        for r in rows {
            let mut t = 0;
            while t < n {
                let nt = (n - t).min(8);
                // SAFETY: row r is below rows.end and tokens t..t+nt below n, which the
                // assert above bounds.
                unsafe {
                    match nt {
                        8 => tile::<1, 8>(w, row_bytes, r, xs, k, t, out, out_rows),
                        7 => tile::<1, 7>(w, row_bytes, r, xs, k, t, out, out_rows),
                        6 => tile::<1, 6>(w, row_bytes, r, xs, k, t, out, out_rows),
                        5 => tile::<1, 5>(w, row_bytes, r, xs, k, t, out, out_rows),
                        4 => tile::<1, 4>(w, row_bytes, r, xs, k, t, out, out_rows),
                        3 => tile::<1, 3>(w, row_bytes, r, xs, k, t, out, out_rows),
                        2 => tile::<1, 2>(w, row_bytes, r, xs, k, t, out, out_rows),
                        _ => tile::<1, 1>(w, row_bytes, r, xs, k, t, out, out_rows),
                    }
                }
                t += nt;
            }
        }
    }

    /// Rows `r0..r0 + R` by tokens `t0..t0 + T`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn tile<const R: usize, const T: usize>(w: &[u8], row_bytes: usize, r0: usize, xs: &[f32], k: usize, t0: usize, out: SyncOut, out_rows: usize) {
        let k8 = k / 8 * 8;
        // SAFETY: the caller runs with AVX2, FMA and F16C and bounds the rows (2k bytes each)
        // and tokens (k values each); prefetches of any address are harmless.
        let acc = unsafe {
            let mut acc = [[_mm256_setzero_ps(); T]; R];
            let wp: [*const u8; R] = std::array::from_fn(|r| w.as_ptr().add((r0 + r) * row_bytes));
            let xp: [*const f32; T] = std::array::from_fn(|t| xs.as_ptr().add((t0 + t) * k));
            for s in 0..k8 / 8 {
                for r in 0..R {
                    if s % 4 == 0 {
                        _mm_prefetch::<_MM_HINT_T0>(wp[r].wrapping_add(16 * s + 1024) as *const i8);
                    }
                    let wv = _mm256_cvtph_ps(_mm_loadu_si128(wp[r].add(16 * s) as *const __m128i));
                    for t in 0..T {
                        acc[r][t] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xp[t].add(8 * s)), acc[r][t]);
                    }
                }
            }
            acc
        };
        for r in 0..R {
            let row = &w[(r0 + r) * row_bytes..(r0 + r) * row_bytes + 2 * k];
            for t in 0..T {
                let mut lanes = [0f32; 8];
                // SAFETY: an unaligned store of 8 floats into an 8-float array.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc[r][t]) };
                let x = &xs[(t0 + t) * k..(t0 + t + 1) * k];
                out.set((t0 + t) * out_rows + r0 + r, super::with_tail(crate::blockq::hsum_float_8(lanes), row, x, k8));
            }
        }
    }
}
