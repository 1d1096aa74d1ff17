//! AVX2 ternary kernels. Codes (0..2, unsigned) times int8 activations with `vpmaddubsw`
//! into int16 pairs, summed in int16 for as long as that cannot overflow, then widened with
//! `vpmaddwd` into int32.
//!
//! Overflow bounds: one `maddubs` lane is `c0·x0 + c1·x1` with codes ≤ 2 and `|x| ≤ 128`, so
//! at most 512 in magnitude. The decode kernel adds 4 per group and flushes every 16 groups
//! (16·4·512 = 32768: the only way to reach it is -32768, which fits); the prefill kernel adds
//! one per 32 columns and flushes every 64 steps (64·512 = 32768, likewise).

// Register tiles are indexed by row and token on purpose: the index form is what maps onto
// the tile's registers.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::{GROUP, GROUP16, Kernels};

pub(crate) struct Avx2;

/// How far ahead of the current group the decode kernel prefetches, in bytes.
const PREFETCH: usize = 1024;

/// Groups the decode kernel sums in int16 before widening.
const GEMV_FLUSH_GROUPS: usize = 16;
/// 32-column steps the prefill kernel sums in int16 before widening.
const GEMM_FLUSH_STEPS: usize = 64;

impl Kernels for Avx2 {
    fn gemv_raw(w: &[u8], row_bytes: usize, n_rows: usize, kc: usize, block: usize, x: &[i8], raw: &mut [i32]) {
        let nb = kc / block;
        super::check_gemv(w, row_bytes, n_rows, kc, block, x, raw);
        for r in 0..n_rows {
            // SAFETY: AVX2 is enabled (the dispatcher only picks this level on CPUs that have
            // it); the asserts above bound every pointer the kernel forms.
            unsafe { gemv_row(w.as_ptr().add(r * row_bytes), nb, block / GROUP, x.as_ptr(), &mut raw[r * nb..]) };
        }
    }

    fn gemv16_raw(w: &[u8], row_bytes: usize, n_rows: usize, kc16: usize, x: &[i8], raw: &mut [i32]) {
        assert!(w.len() >= n_rows.saturating_sub(1) * row_bytes + kc16 / 5 && x.len() >= kc16 && raw.len() >= n_rows);
        assert!(row_bytes >= kc16 / 5 && kc16.is_multiple_of(GROUP16));
        for (r, out) in raw.iter_mut().enumerate().take(n_rows) {
            // SAFETY: AVX2 is enabled (the dispatcher only picks this level on CPUs that have
            // it); the asserts above bound every pointer the kernel forms.
            *out = unsafe { gemv16_row(w.as_ptr().add(r * row_bytes), kc16 / GROUP16, x.as_ptr()) };
        }
    }

    fn gemm_raw(codes: &[u8], ld: usize, n_rows: usize, xs: &[i8], ldx: usize, n_tok: usize, kc: usize, block: usize, raw: &mut [i32]) {
        let nb = kc / block;
        super::check_gemm(codes, ld, n_rows, xs, ldx, n_tok, kc, block, raw, 32);
        super::for_each_tile(n_rows, n_tok, |r, t, nr, nt| {
            let c = codes[r * ld..].as_ptr();
            let x = xs[t * ldx..].as_ptr();
            let o = &mut raw[(t * n_rows + r) * nb..];
            let os = n_rows * nb;
            // SAFETY: AVX2 is enabled; the asserts above bound every pointer formed, and the
            // tile writes (ti·os + ri·nb + b) < raw's length for ti < nt, ri < nr.
            unsafe { dispatch_tile!(gemm_tile, nr, nt, c, ld, x, ldx, nb, block, o, os) }
        });
    }
}

#[inline(always)]
pub(super) unsafe fn hsum(v: __m256i) -> i32 {
    // SAFETY: register-only intrinsics; the caller runs with AVX2 enabled.
    unsafe {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }
}

/// One packed row against one token: each group is one load, three shifts and four masks,
/// then four `maddubs` against the activations. Rows are streamed one at a time: reading
/// several rows side by side was measured slower (the hardware prefetcher follows one
/// sequential stream best), and a software prefetch [`PREFETCH`] bytes ahead helps it more.
#[target_feature(enable = "avx2")]
unsafe fn gemv_row(w: *const u8, nb: usize, gpb: usize, x: *const i8, raw: &mut [i32]) {
    // SAFETY: the caller bounds `w` (nb·gpb·32 bytes) and `x` (nb·gpb·128 values); loads are
    // unaligned, and a prefetch of any address is harmless.
    unsafe {
        let mask = _mm256_set1_epi8(3);
        let ones = _mm256_set1_epi16(1);
        for b in 0..nb {
            let mut acc32 = _mm256_setzero_si256();
            let mut g = b * gpb;
            let end = (b + 1) * gpb;
            while g < end {
                let stop = (g + GEMV_FLUSH_GROUPS).min(end);
                let mut acc16 = _mm256_setzero_si256();
                while g < stop {
                    _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(g * 32 + PREFETCH) as *const i8);
                    let xp = x.add(g * GROUP) as *const __m256i;
                    let v = _mm256_loadu_si256(w.add(g * 32) as *const __m256i);
                    let c0 = _mm256_and_si256(v, mask);
                    let c1 = _mm256_and_si256(_mm256_srli_epi16::<2>(v), mask);
                    let c2 = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
                    let c3 = _mm256_and_si256(_mm256_srli_epi16::<6>(v), mask);
                    let p01 = _mm256_add_epi16(
                        _mm256_maddubs_epi16(c0, _mm256_loadu_si256(xp)),
                        _mm256_maddubs_epi16(c1, _mm256_loadu_si256(xp.add(1))),
                    );
                    let p23 = _mm256_add_epi16(
                        _mm256_maddubs_epi16(c2, _mm256_loadu_si256(xp.add(2))),
                        _mm256_maddubs_epi16(c3, _mm256_loadu_si256(xp.add(3))),
                    );
                    acc16 = _mm256_add_epi16(acc16, _mm256_add_epi16(p01, p23));
                    g += 1;
                }
                acc32 = _mm256_add_epi32(acc32, _mm256_madd_epi16(acc16, ones));
            }
            raw[b] = hsum(acc32);
        }
    }
}

/// Groups the 1.6-bit decode kernel sums in int16 before widening (5 `maddubs` per group,
/// each at most 512 in magnitude: 12·5·512 = 30720).
const GEMV16_FLUSH_GROUPS: usize = 12;

/// One 1.6-bit row against one token. Digit `n` of a byte `m` is `(3m) >> 8`, which is
/// `[m ≥ 86] + [m ≥ 171]` (two saturating subtractions clamped to 1), and the next digit's
/// byte is `3m mod 256` (two byte adds).
#[target_feature(enable = "avx2")]
unsafe fn gemv16_row(w: *const u8, groups: usize, x: *const i8) -> i32 {
    // SAFETY: the caller bounds `w` (groups·32 bytes) and `x` (groups·160 values).
    unsafe {
        let (c85, c170, one) = (_mm256_set1_epi8(85), _mm256_set1_epi8(170u8 as i8), _mm256_set1_epi8(1));
        let ones = _mm256_set1_epi16(1);
        let mut acc32 = _mm256_setzero_si256();
        let mut g = 0;
        while g < groups {
            let stop = (g + GEMV16_FLUSH_GROUPS).min(groups);
            let mut acc16 = _mm256_setzero_si256();
            while g < stop {
                _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(g * 32 + PREFETCH) as *const i8);
                let mut m = _mm256_loadu_si256(w.add(g * 32) as *const __m256i);
                let xp = x.add(g * GROUP16) as *const __m256i;
                for n in 0..5 {
                    let d = _mm256_add_epi8(
                        _mm256_min_epu8(_mm256_subs_epu8(m, c85), one),
                        _mm256_min_epu8(_mm256_subs_epu8(m, c170), one),
                    );
                    acc16 = _mm256_add_epi16(acc16, _mm256_maddubs_epi16(d, _mm256_loadu_si256(xp.add(n))));
                    if n < 4 {
                        m = _mm256_add_epi8(_mm256_add_epi8(m, m), m);
                    }
                }
                g += 1;
            }
            acc32 = _mm256_add_epi32(acc32, _mm256_madd_epi16(acc16, ones));
        }
        hsum(acc32)
    }
}

/// `R` rows of codes times `T` tokens, 32 columns per step; the sum of row `r`, token `t`,
/// block `b` goes to `out[t·os + r·nb + b]`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2")]
unsafe fn gemm_tile<const R: usize, const T: usize>(c: *const u8, ld: usize, x: *const i8, ldx: usize, nb: usize, block: usize, out: &mut [i32], os: usize) {
    // SAFETY: the caller bounds `c` (R rows of nb·block codes, ld apart) and `x` (T tokens of
    // nb·block values, ldx apart).
    unsafe {
        let ones = _mm256_set1_epi16(1);
        for b in 0..nb {
            let mut acc32 = [[_mm256_setzero_si256(); T]; R];
            let mut k = b * block;
            let end = (b + 1) * block;
            while k < end {
                let stop = (k + GEMM_FLUSH_STEPS * 32).min(end);
                let mut acc16 = [[_mm256_setzero_si256(); T]; R];
                while k < stop {
                    let mut wv = [_mm256_setzero_si256(); R];
                    for (r, v) in wv.iter_mut().enumerate() {
                        *v = _mm256_loadu_si256(c.add(r * ld + k) as *const __m256i);
                    }
                    for t in 0..T {
                        let xv = _mm256_loadu_si256(x.add(t * ldx + k) as *const __m256i);
                        for r in 0..R {
                            acc16[r][t] = _mm256_add_epi16(acc16[r][t], _mm256_maddubs_epi16(wv[r], xv));
                        }
                    }
                    k += 32;
                }
                for r in 0..R {
                    for t in 0..T {
                        acc32[r][t] = _mm256_add_epi32(acc32[r][t], _mm256_madd_epi16(acc16[r][t], ones));
                    }
                }
            }
            for r in 0..R {
                for t in 0..T {
                    out[t * os + r * nb + b] = hsum(acc32[r][t]);
                }
            }
        }
    }
}
