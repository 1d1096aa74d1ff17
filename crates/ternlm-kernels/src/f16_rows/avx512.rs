//! AVX-512 F16 rows for a batch: two tokens share each 512-bit vector, one in each 256-bit
//! half, against the row's 8 converted weights broadcast to both halves. Each lane does what
//! it does at AVX2 (lane `l` of a token adds `w[8s + l]·x[8s + l]` in order of `s` with a
//! fused multiply-add), so the results are the same bits; one instruction does the work of
//! two, and the 32 registers hold a tile of 4 rows by 8 tokens (16 accumulators, 4 weight
//! vectors, one activation pair): measured (one thread, 2B-4T head rows) at about 0.55x the
//! time of the AVX2 tiles at 8 and 16 tokens, and 0.85x that of the same 256-bit tiles with
//! 32 registers. One token runs the AVX2 kernel (it is bound by memory, not arithmetic).

// Register tiles are indexed by row and token pair on purpose: the index form is what maps
// onto the tile's registers.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::{Passes, interleave, put_batch_acts, take_batch_acts};
use crate::sync_out::SyncOut;

/// Rows of a batch tile.
const TILE_ROWS: usize = 4;
/// Token pairs of a batch tile.
const TILE_PAIRS: usize = 4;

/// [`super::avx2::gemm`] at AVX-512: `out.set(t·out_rows + r, dot_row(W[r], x[t]))` for
/// every row in `rows` and each of the `n` tokens of `xs` (`k` values apart).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
pub(crate) unsafe fn gemm(w: &[u8], row_bytes: usize, rows: std::ops::Range<usize>, xs: &[f32], k: usize, n: usize, out: SyncOut, out_rows: usize) {
    if n == 1 {
        // SAFETY: AVX2, FMA and F16C are enabled here; the kernel checks its own bounds.
        unsafe { super::avx2::gemm(w, row_bytes, rows, xs, k, n, out, out_rows) };
        return;
    }
    assert!(row_bytes >= 2 * k && w.len() >= rows.end * row_bytes && xs.len() >= n * k);
    let k8 = k / 8 * 8;
    // Passes padded to whole pairs with a zero token, whose results are not stored.
    let passes = Passes::new(n, 2 * TILE_PAIRS, 2);
    let mut buf = take_batch_acts();
    let start = interleave(xs, k, k8, passes, &mut buf);
    let inter = &buf[start..];
    let mut r = rows.start;
    while r < rows.end {
        let nr = (rows.end - r).min(TILE_ROWS);
        // All passes over the rows run back to back, so the later ones find them in L1.
        for (t0, nt, width, at) in passes.iter() {
            let x = &inter[at * k8..(at + width) * k8];
            // SAFETY: rows r..r+nr are below rows.end and tokens t0..t0+nt below n, which the
            // assert above bounds, and `x` holds the pass's width·k8 values; AVX2, FMA, F16C
            // and AVX-512 F/VL are enabled here.
            unsafe {
                match (nr, width / 2) {
                    (4, 4) => tile::<4, 4>(w, row_bytes, r, x, xs, k, t0, nt, out, out_rows),
                    (4, 3) => tile::<4, 3>(w, row_bytes, r, x, xs, k, t0, nt, out, out_rows),
                    (4, 2) => tile::<4, 2>(w, row_bytes, r, x, xs, k, t0, nt, out, out_rows),
                    (4, 1) => tile::<4, 1>(w, row_bytes, r, x, xs, k, t0, nt, out, out_rows),
                    (3, 4) => tile::<3, 4>(w, row_bytes, r, x, xs, k, t0, nt, out, out_rows),
                    (3, 3) => tile::<3, 3>(w, row_bytes, r, x, xs, k, t0, nt, out, out_rows),
                    (3, 2) => tile::<3, 2>(w, row_bytes, r, x, xs, k, t0, nt, out, out_rows),
                    (3, 1) => tile::<3, 1>(w, row_bytes, r, x, xs, k, t0, nt, out, out_rows),
                    (2, 4) => tile::<2, 4>(w, row_bytes, r, x, xs, k, t0, nt, out, out_rows),
                    (2, 3) => tile::<2, 3>(w, row_bytes, r, x, xs, k, t0, nt, out, out_rows),
                    (2, 2) => tile::<2, 2>(w, row_bytes, r, x, xs, k, t0, nt, out, out_rows),
                    (2, 1) => tile::<2, 1>(w, row_bytes, r, x, xs, k, t0, nt, out, out_rows),
                    (1, 4) => tile::<1, 4>(w, row_bytes, r, x, xs, k, t0, nt, out, out_rows),
                    (1, 3) => tile::<1, 3>(w, row_bytes, r, x, xs, k, t0, nt, out, out_rows),
                    (1, 2) => tile::<1, 2>(w, row_bytes, r, x, xs, k, t0, nt, out, out_rows),
                    (1, 1) => tile::<1, 1>(w, row_bytes, r, x, xs, k, t0, nt, out, out_rows),
                    _ => unreachable!("no {nr}x{width} tile"),
                }
            }
        }
        r += nr;
    }
    put_batch_acts(buf);
}

/// Rows `r0..r0 + R` by tokens `t0..t0 + nt` (`nt` is `2P` or `2P - 1`, a padding token
/// making up the last pair), the tokens' first `k8` values interleaved in `x` (see
/// [`interleave`]: a pair's two tokens are adjacent), all their values in `xs` (for the
/// ragged tail).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tile<const R: usize, const P: usize>(w: &[u8], row_bytes: usize, r0: usize, x: &[f32], xs: &[f32], k: usize, t0: usize, nt: usize, out: SyncOut, out_rows: usize) {
    let k8 = k / 8 * 8;
    assert!(x.len() >= 2 * P * k8 && nt <= 2 * P);
    // SAFETY: the caller runs with AVX2, FMA, F16C and AVX-512 F/VL and bounds the rows (2k
    // bytes each); `x` holds 2P·k8 values (asserted); prefetches of any address are harmless.
    let acc = unsafe {
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        let wp: [*const u8; R] = std::array::from_fn(|r| w.as_ptr().add((r0 + r) * row_bytes));
        let mut xp = x.as_ptr();
        for s in 0..k8 / 8 {
            // Every row's 8 weights converted into both halves first, then each pair's
            // activations loaded once for all rows.
            let mut wv = [_mm512_setzero_ps(); R];
            for r in 0..R {
                if s % 4 == 0 {
                    _mm_prefetch::<_MM_HINT_T0>(wp[r].wrapping_add(16 * s + 1024) as *const i8);
                }
                wv[r] = _mm512_cvtph_ps(_mm256_broadcastsi128_si256(_mm_loadu_si128(wp[r].add(16 * s) as *const __m128i)));
            }
            for p in 0..P {
                let xv = _mm512_loadu_ps(xp.add(16 * p));
                for r in 0..R {
                    acc[r][p] = _mm512_fmadd_ps(wv[r], xv, acc[r][p]);
                }
            }
            xp = xp.add(16 * P);
        }
        acc
    };
    for r in 0..R {
        let row = &w[(r0 + r) * row_bytes..(r0 + r) * row_bytes + 2 * k];
        for p in 0..P {
            // SAFETY: register-only splitting and folding; the caller runs with AVX-512 F.
            let halves = unsafe { [_mm512_castps512_ps256(acc[r][p]), _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc[r][p])))] };
            for (h, half) in halves.into_iter().enumerate() {
                let t = 2 * p + h;
                if t < nt {
                    // SAFETY: as above.
                    let folded = unsafe { super::avx2::hsum(half) };
                    out.set((t0 + t) * out_rows + r0 + r, super::with_tail(folded, row, &xs[(t0 + t) * k..(t0 + t + 1) * k], k8));
                }
            }
        }
    }
}
