//! AVX-512 VNNI ternary kernels: `vpdpbusd` multiplies unsigned codes by int8 activations
//! and adds groups of four straight into int32, so there is no int16 stage to flush. Decode
//! uses the 256-bit form on the same layout as AVX2 (it is bound by memory, not arithmetic);
//! short batches unpack each packed group into two 512-bit code vectors once for all their
//! tokens; prefill uses 512-bit vectors over unpacked codes.

// Register tiles are indexed by row and token on purpose: the index form is what maps onto
// the tile's registers.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::{GROUP, Kernels};

pub(crate) struct Avx512;

/// How far ahead of the current group the decode kernel prefetches, in bytes.
const PREFETCH: usize = 1024;

/// Rows a batch register tile reads side by side: each token's activations, loaded once,
/// meet both, which halves the activation traffic (a few tokens of a wide row do not fit
/// L1, and one load of them per `vpdpbusd` was measured to bound the kernel).
const BATCH_ROWS: usize = 2;

impl Kernels for Avx512 {
    fn unpack_codes(row: &[u8], cols: usize, codes: &mut [u8]) {
        // SAFETY: this level is only chosen on CPUs that have its features.
        unsafe { unpack_codes_avx512(row, cols, codes) }
    }

    fn gemv_raw(w: &[u8], row_bytes: usize, n_rows: usize, kc: usize, block: usize, x: &[i8], raw: &mut [i32]) {
        let nb = kc / block;
        super::check_gemv(w, row_bytes, n_rows, kc, block, x, raw);
        for r in 0..n_rows {
            // SAFETY: AVX-512 F/BW/VL/VNNI are enabled (the dispatcher only picks this level on
            // CPUs that have them); the asserts above bound every pointer the kernel forms.
            unsafe { gemv_row(w.as_ptr().add(r * row_bytes), nb, block / GROUP, x.as_ptr(), &mut raw[r * nb..]) };
        }
    }

    fn gemv_batch_raw(w: &[u8], row_bytes: usize, n_rows: usize, xs: &[i8], ldx: usize, n_tok: usize, kc: usize, block: usize, raw: &mut [i32]) {
        let nb = kc / block;
        super::check_batch(w, row_bytes, n_rows, xs, ldx, n_tok, kc, block, raw);
        let os = n_rows * nb;
        for r in (0..n_rows).step_by(BATCH_ROWS) {
            let nr = (n_rows - r).min(BATCH_ROWS);
            // All passes over the rows run back to back, so the later ones find them in L1.
            super::for_each_pass(n_tok, |t, nt| {
                let (p, x) = (w[r * row_bytes..].as_ptr(), xs[t * ldx..].as_ptr());
                let o = &mut raw[(t * n_rows + r) * nb..];
                // SAFETY: AVX-512 F/BW/VL/VNNI are enabled (the dispatcher only picks this level
                // on CPUs that have them); the asserts above bound every pointer formed (rows
                // r..r+nr of kc/4 bytes, row_bytes apart, tokens t..t+nt of kc values), and the
                // pass writes (ti·os + ri·nb + b) < o's length for ti < nt, ri < nr, b < nb.
                unsafe {
                    match nr {
                        2 => dispatch_tokens!(batch_tile, 2, nt, p, row_bytes, nb, block / GROUP, x, ldx, o, os),
                        _ => dispatch_tokens!(batch_tile, 1, nt, p, row_bytes, nb, block / GROUP, x, ldx, o, os),
                    }
                }
            });
        }
    }

    /// The 1.6-bit decode is the AVX2 kernel (its digit extraction has no VNNI form).
    fn gemv16_raw(w: &[u8], row_bytes: usize, n_rows: usize, kc16: usize, x: &[i8], raw: &mut [i32]) {
        super::avx2::Avx2::gemv16_raw(w, row_bytes, n_rows, kc16, x, raw);
    }

    fn gemm_raw(codes: &[u8], ld: usize, n_rows: usize, xs: &[i8], ldx: usize, n_tok: usize, kc: usize, block: usize, raw: &mut [i32]) {
        let nb = kc / block;
        super::check_gemm(codes, ld, n_rows, xs, ldx, n_tok, kc, block, raw, 64);
        super::for_each_tile(n_rows, n_tok, |r, t, nr, nt| {
            let c = codes[r * ld..].as_ptr();
            let x = xs[t * ldx..].as_ptr();
            let o = &mut raw[(t * n_rows + r) * nb..];
            let os = n_rows * nb;
            // SAFETY: AVX-512 is enabled; the asserts above bound every pointer formed, and the
            // tile writes (ti·os + ri·nb + b) < raw's length for ti < nt, ri < nr.
            unsafe { dispatch_tile!(gemm_tile, nr, nt, c, ld, x, ldx, nb, block, o, os) }
        });
    }
}

/// Decode: as AVX2's (one row streamed at a time, prefetching ahead), with `vpdpbusd` in
/// place of `maddubs` + widening. Each of a group's four slices adds into its own accumulator:
/// chained through one, the `vpdpbusd` latency (not memory) bounded the kernel.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn gemv_row(w: *const u8, nb: usize, gpb: usize, x: *const i8, raw: &mut [i32]) {
    // SAFETY: the caller bounds `w` (nb·gpb·32 bytes) and `x` (nb·gpb·128 values); loads are
    // unaligned, and a prefetch of any address is harmless.
    unsafe {
        let mask = _mm256_set1_epi8(3);
        for b in 0..nb {
            let mut acc = [_mm256_setzero_si256(); 4];
            for g in b * gpb..(b + 1) * gpb {
                _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(g * 32 + PREFETCH) as *const i8);
                let xp = x.add(g * GROUP) as *const __m256i;
                let v = _mm256_loadu_si256(w.add(g * 32) as *const __m256i);
                let c0 = _mm256_and_si256(v, mask);
                let c1 = _mm256_and_si256(_mm256_srli_epi16::<2>(v), mask);
                let c2 = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
                let c3 = _mm256_and_si256(_mm256_srli_epi16::<6>(v), mask);
                acc[0] = _mm256_dpbusd_epi32(acc[0], c0, _mm256_loadu_si256(xp));
                acc[1] = _mm256_dpbusd_epi32(acc[1], c1, _mm256_loadu_si256(xp.add(1)));
                acc[2] = _mm256_dpbusd_epi32(acc[2], c2, _mm256_loadu_si256(xp.add(2)));
                acc[3] = _mm256_dpbusd_epi32(acc[3], c3, _mm256_loadu_si256(xp.add(3)));
            }
            let sum = _mm256_add_epi32(_mm256_add_epi32(acc[0], acc[1]), _mm256_add_epi32(acc[2], acc[3]));
            raw[b] = super::avx2::hsum(sum);
        }
    }
}

/// Short batches: `R` packed rows (`rb` apart) against `T` tokens; the sum of row `r`, token
/// `t`, block `b` goes to `out[t·os + r·nb + b]`. A group's 32 bytes are loaded into both
/// halves of a 512-bit vector; shifting the halves by 0 and 2 bits (then 4 and 6) and masking
/// gives its 128 codes as two vectors in activation order, each meeting every token with one
/// `vpdpbusd`. The unpacking is paid once per group for all `T` tokens, and the rows are read
/// once, as in decode.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn batch_tile<const R: usize, const T: usize>(w: *const u8, rb: usize, nb: usize, gpb: usize, x: *const i8, ldx: usize, out: &mut [i32], os: usize) {
    // SAFETY: the caller bounds `w` (R rows, rb apart, of nb·gpb·32 bytes) and `x` (T tokens,
    // ldx apart, of nb·gpb·128 values); loads are unaligned, and a prefetch of any address is
    // harmless.
    unsafe {
        let mask = _mm512_set1_epi8(3);
        let shift01 = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(2));
        let shift23 = _mm512_inserti64x4::<1>(_mm512_set1_epi16(4), _mm256_set1_epi16(6));
        for b in 0..nb {
            let mut acc = [[_mm512_setzero_si512(); T]; R];
            for g in b * gpb..(b + 1) * gpb {
                let mut c01 = [_mm512_setzero_si512(); R];
                let mut c23 = [_mm512_setzero_si512(); R];
                for r in 0..R {
                    let p = w.wrapping_add(r * rb + g * 32);
                    // The next tile's rows, which this task reads next: a whole tile ahead
                    // covers memory latency better than a fixed distance (measured).
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(R * rb) as *const i8);
                    let v = _mm512_broadcast_i64x4(_mm256_loadu_si256(p as *const __m256i));
                    c01[r] = _mm512_and_si512(_mm512_srlv_epi16(v, shift01), mask);
                    c23[r] = _mm512_and_si512(_mm512_srlv_epi16(v, shift23), mask);
                }
                let xg = x.add(g * GROUP);
                for t in 0..T {
                    let xp = xg.add(t * ldx);
                    let x01 = _mm512_loadu_si512(xp as *const __m512i);
                    let x23 = _mm512_loadu_si512(xp.add(64) as *const __m512i);
                    for r in 0..R {
                        acc[r][t] = _mm512_dpbusd_epi32(acc[r][t], c01[r], x01);
                        acc[r][t] = _mm512_dpbusd_epi32(acc[r][t], c23[r], x23);
                    }
                }
            }
            for r in 0..R {
                for t in 0..T {
                    out[t * os + r * nb + b] = _mm512_reduce_add_epi32(acc[r][t]);
                }
            }
        }
    }
}

/// Prefill: `R` rows of codes times `T` tokens, 64 columns per step; the sum of row `r`,
/// token `t`, block `b` goes to `out[t·os + r·nb + b]`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn gemm_tile<const R: usize, const T: usize>(c: *const u8, ld: usize, x: *const i8, ldx: usize, nb: usize, block: usize, out: &mut [i32], os: usize) {
    // SAFETY: the caller bounds `c` (R rows of nb·block codes, ld apart) and `x` (T tokens of
    // nb·block values, ldx apart).
    unsafe {
        for b in 0..nb {
            let mut acc = [[_mm512_setzero_si512(); T]; R];
            let mut k = b * block;
            while k < (b + 1) * block {
                let mut wv = [_mm512_setzero_si512(); R];
                for (r, v) in wv.iter_mut().enumerate() {
                    *v = _mm512_loadu_si512(c.add(r * ld + k) as *const __m512i);
                }
                for t in 0..T {
                    let xv = _mm512_loadu_si512(x.add(t * ldx + k) as *const __m512i);
                    for r in 0..R {
                        acc[r][t] = _mm512_dpbusd_epi32(acc[r][t], wv[r], xv);
                    }
                }
                k += 64;
            }
            for r in 0..R {
                for t in 0..T {
                    out[t * os + r * nb + b] = _mm512_reduce_add_epi32(acc[r][t]);
                }
            }
        }
    }
}

/// [`super::TernaryMatrix::unpack_codes`] compiled with this level's vectors.
#[target_feature(enable = "avx2,avx512f,avx512bw")]
unsafe fn unpack_codes_avx512(row: &[u8], cols: usize, codes: &mut [u8]) {
    super::TernaryMatrix::unpack_codes(row, cols, codes);
}
