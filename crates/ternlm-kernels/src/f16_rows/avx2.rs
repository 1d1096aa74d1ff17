//! AVX2 F16 rows: 8-lane f32 accumulators, weights converted with F16C. One token streams the
//! rows one at a time; a batch takes tiles of 2 rows by up to 4 tokens (8 accumulators,
//! which with the 2 converted weight vectors and one activation vector fit the 16 vector
//! registers), so each row is read from memory once for all tokens and each activation
//! vector, loaded once, meets both rows (a few tokens' activations, 10 KB each at width 2560,
//! do not fit L1: reloaded once per multiply-add they bounded the kernel).

// Register tiles are indexed by row and token on purpose: the index form is what maps onto
// the tile's registers.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::{Passes, interleave, put_batch_acts, take_batch_acts};
use crate::sync_out::SyncOut;

/// Rows of a batch tile.
const TILE_ROWS: usize = 2;
/// Tokens of a batch tile.
const TILE_TOKENS: usize = 4;

/// `out.set(t·out_rows + r, dot_row(W[r], x[t]))` for every row in `rows` and each of the `n`
/// tokens of `xs` (`k` values apart). One token streams the rows one at a time (reading
/// several side by side was measured slower: the prefetchers follow one sequential stream
/// best).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm(w: &[u8], row_bytes: usize, rows: std::ops::Range<usize>, xs: &[f32], k: usize, n: usize, out: SyncOut, out_rows: usize) {
    assert!(row_bytes >= 2 * k && w.len() >= rows.end * row_bytes && xs.len() >= n * k);
    if n == 1 {
        for r in rows {
            // SAFETY: row r is below rows.end (2k bytes) and token 0 below n, which the assert
            // above bounds; AVX2, FMA and F16C are enabled here.
            unsafe { stream_row(w, row_bytes, r, xs, k, out) };
        }
        return;
    }
    let k8 = k / 8 * 8;
    let passes = Passes::new(n, TILE_TOKENS, 1);
    let mut buf = take_batch_acts();
    let start = interleave(xs, k, k8, passes, &mut buf);
    let inter = &buf[start..];
    let mut r = rows.start;
    while r < rows.end {
        let nr = (rows.end - r).min(TILE_ROWS);
        // All passes over the rows run back to back, so the later ones find them in L1.
        for (t0, nt, _, at) in passes.iter() {
            let x = &inter[at * k8..(at + nt) * k8];
            // SAFETY: rows r..r+nr are below rows.end and tokens t0..t0+nt below n, which the
            // assert above bounds, and `x` holds the pass's nt·k8 values; AVX2, FMA and F16C are
            // enabled here.
            unsafe {
                match (nr, nt) {
                    (2, 4) => tile::<2, 4>(w, row_bytes, r, x, xs, k, t0, out, out_rows),
                    (2, 3) => tile::<2, 3>(w, row_bytes, r, x, xs, k, t0, out, out_rows),
                    (2, 2) => tile::<2, 2>(w, row_bytes, r, x, xs, k, t0, out, out_rows),
                    (2, 1) => tile::<2, 1>(w, row_bytes, r, x, xs, k, t0, out, out_rows),
                    (1, 4) => tile::<1, 4>(w, row_bytes, r, x, xs, k, t0, out, out_rows),
                    (1, 3) => tile::<1, 3>(w, row_bytes, r, x, xs, k, t0, out, out_rows),
                    (1, 2) => tile::<1, 2>(w, row_bytes, r, x, xs, k, t0, out, out_rows),
                    (1, 1) => tile::<1, 1>(w, row_bytes, r, x, xs, k, t0, out, out_rows),
                    _ => unreachable!("no {nr}x{nt} tile"),
                }
            }
        }
        r += nr;
    }
    put_batch_acts(buf);
}

/// Row `r` against the one token of `xs` (output `r`).
#[inline(always)]
unsafe fn stream_row(w: &[u8], row_bytes: usize, r: usize, xs: &[f32], k: usize, out: SyncOut) {
    let k8 = k / 8 * 8;
    let row = &w[r * row_bytes..r * row_bytes + 2 * k];
    // SAFETY: the caller runs with AVX2, FMA and F16C and bounds the row (2k bytes) and the
    // token (k values); prefetches of any address are harmless.
    let acc = unsafe {
        let mut acc = _mm256_setzero_ps();
        let (wp, xp) = (row.as_ptr(), xs.as_ptr());
        for s in 0..k8 / 8 {
            if s % 4 == 0 {
                _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(16 * s + 1024) as *const i8);
            }
            let wv = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(16 * s) as *const __m128i));
            acc = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xp.add(8 * s)), acc);
        }
        acc
    };
    // SAFETY: register-only folding; the caller runs with AVX2.
    out.set(r, super::with_tail(unsafe { hsum(acc) }, row, &xs[..k], k8));
}

/// Rows `r0..r0 + R` by tokens `t0..t0 + T`, the tokens' first `k8` values interleaved in `x`
/// (see [`interleave`]), all their values in `xs` (for the ragged tail).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tile<const R: usize, const T: usize>(w: &[u8], row_bytes: usize, r0: usize, x: &[f32], xs: &[f32], k: usize, t0: usize, out: SyncOut, out_rows: usize) {
    let k8 = k / 8 * 8;
    assert!(x.len() >= T * k8);
    // SAFETY: the caller runs with AVX2, FMA and F16C and bounds the rows (2k bytes each); `x`
    // holds T·k8 values (asserted); prefetches of any address are harmless.
    let acc = unsafe {
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        let wp: [*const u8; R] = std::array::from_fn(|r| w.as_ptr().add((r0 + r) * row_bytes));
        let mut xp = x.as_ptr();
        for s in 0..k8 / 8 {
            // Every row's weights converted first, then each token's activations loaded once
            // for all rows: R·T accumulators, R weight vectors and one activation.
            let mut wv = [_mm256_setzero_ps(); R];
            for r in 0..R {
                if s % 4 == 0 {
                    _mm_prefetch::<_MM_HINT_T0>(wp[r].wrapping_add(16 * s + 1024) as *const i8);
                }
                wv[r] = _mm256_cvtph_ps(_mm_loadu_si128(wp[r].add(16 * s) as *const __m128i));
            }
            for t in 0..T {
                let xv = _mm256_loadu_ps(xp.add(8 * t));
                for r in 0..R {
                    acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
                }
            }
            xp = xp.add(8 * T);
        }
        acc
    };
    for r in 0..R {
        let row = &w[(r0 + r) * row_bytes..(r0 + r) * row_bytes + 2 * k];
        for t in 0..T {
            // SAFETY: register-only folding; the caller runs with AVX2.
            let folded = unsafe { hsum(acc[r][t]) };
            out.set((t0 + t) * out_rows + r0 + r, super::with_tail(folded, row, &xs[(t0 + t) * k..(t0 + t + 1) * k], k8));
        }
    }
}

/// The lanes of `v` folded as [`crate::blockq::hsum_float_8`] folds them.
#[inline(always)]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    let mut lanes = [0f32; 8];
    // SAFETY: an unaligned store of 8 floats into an 8-float array; the caller runs with AVX.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
    crate::blockq::hsum_float_8(lanes)
}
