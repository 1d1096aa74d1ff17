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

/// How many rows ahead the batch kernel prefetches the packed weights: tiles walk a task's
/// rows two at a time, so this is a few tiles ahead, far enough to cover memory latency.
const PREFETCH_ROWS: usize = 8;

/// Groups the decode kernel sums in int16 before widening.
const GEMV_FLUSH_GROUPS: usize = 16;
/// 32-column steps the prefill kernel sums in int16 before widening.
const GEMM_FLUSH_STEPS: usize = 64;

impl Kernels for Avx2 {
    fn unpack_codes(row: &[u8], cols: usize, codes: &mut [u8]) {
        // SAFETY: this level is only chosen on CPUs that have its features.
        unsafe { unpack_codes_avx2(row, cols, codes) }
    }

    fn gemv_raw(w: &[u8], row_bytes: usize, n_rows: usize, kc: usize, block: usize, x: &[i8], raw: &mut [i32]) {
        let nb = kc / block;
        super::check_gemv(w, row_bytes, n_rows, kc, block, x, raw);
        for r in 0..n_rows {
            // SAFETY: AVX2 is enabled (the dispatcher only picks this level on CPUs that have
            // it); the asserts above bound every pointer the kernel forms.
            unsafe { gemv_row(w.as_ptr().add(r * row_bytes), nb, block / GROUP, x.as_ptr(), &mut raw[r * nb..]) };
        }
    }

    /// Short batches take the packed prefill tile (2 rows by 4 tokens), which already reads
    /// each packed row once per 4 tokens and each token's activations once per 2 rows; a
    /// one-row kernel carrying up to 8 tokens was measured up to 40% slower (16 vector registers
    /// leave no room to reuse the activations across rows).
    fn gemv_batch_raw(w: &[u8], row_bytes: usize, n_rows: usize, xs: &[i8], ldx: usize, n_tok: usize, kc: usize, block: usize, raw: &mut [i32]) {
        Self::gemm_packed_raw(w, row_bytes, n_rows, xs, ldx, n_tok, kc, block, raw);
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

    const PACKED_GEMM: bool = true;

    fn gemm_packed_raw(w: &[u8], row_bytes: usize, n_rows: usize, xs: &[i8], ldx: usize, n_tok: usize, kc: usize, block: usize, raw: &mut [i32]) {
        let nb = kc / block;
        super::check_gemv(w, row_bytes, n_rows, kc, block, xs, raw);
        assert!(n_tok == 0 || xs.len() >= (n_tok - 1) * ldx + kc);
        assert!(raw.len() >= n_rows * n_tok * nb);
        super::for_each_tile(n_rows, n_tok, |r, t, nr, nt| {
            let p = w[r * row_bytes..].as_ptr();
            let x = xs[t * ldx..].as_ptr();
            let o = &mut raw[(t * n_rows + r) * nb..];
            let os = n_rows * nb;
            // SAFETY: AVX2 is enabled; the asserts above bound every pointer formed (rows
            // r..r+nr of kc/4 bytes, tokens t..t+nt of kc values), and the tile writes
            // (ti·os + ri·nb + b) < raw's length for ti < nt, ri < nr.
            unsafe { dispatch_tile!(gemm_packed_tile, nr, nt, p, row_bytes, x, ldx, nb, block / GROUP, o, os) }
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
                    let p01 = _mm256_add_epi16(_mm256_maddubs_epi16(c0, _mm256_loadu_si256(xp)), _mm256_maddubs_epi16(c1, _mm256_loadu_si256(xp.add(1))));
                    let p23 = _mm256_add_epi16(_mm256_maddubs_epi16(c2, _mm256_loadu_si256(xp.add(2))), _mm256_maddubs_epi16(c3, _mm256_loadu_si256(xp.add(3))));
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
                    let d = _mm256_add_epi8(_mm256_min_epu8(_mm256_subs_epu8(m, c85), one), _mm256_min_epu8(_mm256_subs_epu8(m, c170), one));
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

/// One 32-column slice `S` (bit shift `2S`) of a group for a register tile: the codes of each
/// row come from its packed group `p[r]` with one shift and one mask, then meet every token.
#[inline(always)]
unsafe fn packed_slice<const R: usize, const T: usize, const SHIFT: i32>(p: &[__m256i; R], mask: __m256i, x: *const i8, ldx: usize, acc16: &mut [[__m256i; T]; R]) {
    // SAFETY: the caller runs with AVX2 enabled and bounds `x` (T tokens, ldx apart, 32
    // values each from here).
    unsafe {
        let mut c = [_mm256_setzero_si256(); R];
        for r in 0..R {
            c[r] = _mm256_and_si256(_mm256_srli_epi16::<SHIFT>(p[r]), mask);
        }
        for t in 0..T {
            let xv = _mm256_loadu_si256(x.add(t * ldx) as *const __m256i);
            for r in 0..R {
                acc16[r][t] = _mm256_add_epi16(acc16[r][t], _mm256_maddubs_epi16(c[r], xv));
            }
        }
    }
}

/// `R` packed rows times `T` tokens, unpacking each group in registers once for all `T`
/// tokens (no codes round trip through memory, which is what makes a batch of a few decoding
/// sequences cheap); the sum of row `r`, token `t`, block `b` goes to `out[t·os + r·nb + b]`.
/// Each group adds 4 `maddubs` per lane, so the int16 flush every [`GEMV_FLUSH_GROUPS`]
/// groups keeps the same bound as decode.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2")]
unsafe fn gemm_packed_tile<const R: usize, const T: usize>(w: *const u8, rb: usize, x: *const i8, ldx: usize, nb: usize, gpb: usize, out: &mut [i32], os: usize) {
    // SAFETY: the caller bounds `w` (R rows of nb·gpb·32 bytes, rb apart) and `x` (T tokens of
    // nb·gpb·128 values, ldx apart).
    unsafe {
        let mask = _mm256_set1_epi8(3);
        let ones = _mm256_set1_epi16(1);
        for b in 0..nb {
            // Widened sums are reduced to scalars at each flush, so the 16 vector registers
            // hold only the int16 tile, the packed groups and one token's slice.
            let mut sums = [[0i32; T]; R];
            let mut g = b * gpb;
            let end = (b + 1) * gpb;
            while g < end {
                let stop = (g + GEMV_FLUSH_GROUPS).min(end);
                let mut acc16 = [[_mm256_setzero_si256(); T]; R];
                if R == 2 && T == 4 {
                    let mut flat = [_mm256_setzero_si256(); 8];
                    packed_2x4_groups(w.add(g * 32), rb, x.add(g * GROUP), ldx, stop - g, &mut flat);
                    for r in 0..R {
                        for t in 0..T {
                            acc16[r][t] = flat[r * 4 + t];
                        }
                    }
                    g = stop;
                }
                while g < stop {
                    let mut p = [_mm256_setzero_si256(); R];
                    for r in 0..R {
                        // The next tile's rows (R further on) are what this task reads next.
                        _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add((r + PREFETCH_ROWS) * rb + g * 32) as *const i8);
                        p[r] = _mm256_loadu_si256(w.add(r * rb + g * 32) as *const __m256i);
                    }
                    let xg = x.add(g * GROUP);
                    packed_slice::<R, T, 0>(&p, mask, xg, ldx, &mut acc16);
                    packed_slice::<R, T, 2>(&p, mask, xg.add(32), ldx, &mut acc16);
                    packed_slice::<R, T, 4>(&p, mask, xg.add(64), ldx, &mut acc16);
                    packed_slice::<R, T, 6>(&p, mask, xg.add(96), ldx, &mut acc16);
                    g += 1;
                }
                for r in 0..R {
                    for t in 0..T {
                        sums[r][t] += hsum(_mm256_madd_epi16(acc16[r][t], ones));
                    }
                }
            }
            for r in 0..R {
                for t in 0..T {
                    out[t * os + r * nb + b] = sums[r][t];
                }
            }
        }
    }
}

/// The hot prefill/batch tile (2 rows by 4 tokens) over `groups` (1 to [`GEMV_FLUSH_GROUPS`])
/// groups, adding into int16 accumulators `acc[r·4 + t]`. Written in assembly because the
/// compiler's schedule of the intrinsics version spilled half the accumulators to the stack
/// (16 vector registers: 8 accumulators, the two packed groups, two code vectors, one token
/// slice, two products and the mask); this one keeps everything in registers.
#[target_feature(enable = "avx2")]
unsafe fn packed_2x4_groups(w: *const u8, rb: usize, x: *const i8, ldx: usize, groups: usize, acc: &mut [__m256i; 8]) {
    debug_assert!((1..=GEMV_FLUSH_GROUPS).contains(&groups));
    // SAFETY: the caller bounds `w` (2 rows, rb apart, of groups·32 bytes) and `x` (4 tokens,
    // ldx apart, of groups·128 values); prefetches of any address are harmless. The assembly
    // touches only the registers named here and no memory other than those loads.
    unsafe {
        let mask = _mm256_set1_epi8(3);
        let [mut a0, mut a1, mut a2, mut a3, mut a4, mut a5, mut a6, mut a7] = *acc;
        std::arch::asm!(
            "2:",
            "prefetcht0 [{pf}]",
            "prefetcht0 [{pf} + {rb}]",
            "vmovdqu ymm8, [{w}]",
            "vmovdqu ymm9, [{w} + {rb}]",
            "vpand ymm10, ymm8, ymm15",
            "vpand ymm11, ymm9, ymm15",
            "vmovdqu ymm12, [{x} + 0]",
            "vpmaddubsw ymm13, ymm10, ymm12",
            "vpaddw ymm0, ymm0, ymm13",
            "vpmaddubsw ymm14, ymm11, ymm12",
            "vpaddw ymm4, ymm4, ymm14",
            "vmovdqu ymm12, [{x} + {ldx} + 0]",
            "vpmaddubsw ymm13, ymm10, ymm12",
            "vpaddw ymm1, ymm1, ymm13",
            "vpmaddubsw ymm14, ymm11, ymm12",
            "vpaddw ymm5, ymm5, ymm14",
            "vmovdqu ymm12, [{x} + {ldx}*2 + 0]",
            "vpmaddubsw ymm13, ymm10, ymm12",
            "vpaddw ymm2, ymm2, ymm13",
            "vpmaddubsw ymm14, ymm11, ymm12",
            "vpaddw ymm6, ymm6, ymm14",
            "vmovdqu ymm12, [{x3} + 0]",
            "vpmaddubsw ymm13, ymm10, ymm12",
            "vpaddw ymm3, ymm3, ymm13",
            "vpmaddubsw ymm14, ymm11, ymm12",
            "vpaddw ymm7, ymm7, ymm14",
            "vpsrlw ymm10, ymm8, 2",
            "vpsrlw ymm11, ymm9, 2",
            "vpand ymm10, ymm10, ymm15",
            "vpand ymm11, ymm11, ymm15",
            "vmovdqu ymm12, [{x} + 32]",
            "vpmaddubsw ymm13, ymm10, ymm12",
            "vpaddw ymm0, ymm0, ymm13",
            "vpmaddubsw ymm14, ymm11, ymm12",
            "vpaddw ymm4, ymm4, ymm14",
            "vmovdqu ymm12, [{x} + {ldx} + 32]",
            "vpmaddubsw ymm13, ymm10, ymm12",
            "vpaddw ymm1, ymm1, ymm13",
            "vpmaddubsw ymm14, ymm11, ymm12",
            "vpaddw ymm5, ymm5, ymm14",
            "vmovdqu ymm12, [{x} + {ldx}*2 + 32]",
            "vpmaddubsw ymm13, ymm10, ymm12",
            "vpaddw ymm2, ymm2, ymm13",
            "vpmaddubsw ymm14, ymm11, ymm12",
            "vpaddw ymm6, ymm6, ymm14",
            "vmovdqu ymm12, [{x3} + 32]",
            "vpmaddubsw ymm13, ymm10, ymm12",
            "vpaddw ymm3, ymm3, ymm13",
            "vpmaddubsw ymm14, ymm11, ymm12",
            "vpaddw ymm7, ymm7, ymm14",
            "vpsrlw ymm10, ymm8, 4",
            "vpsrlw ymm11, ymm9, 4",
            "vpand ymm10, ymm10, ymm15",
            "vpand ymm11, ymm11, ymm15",
            "vmovdqu ymm12, [{x} + 64]",
            "vpmaddubsw ymm13, ymm10, ymm12",
            "vpaddw ymm0, ymm0, ymm13",
            "vpmaddubsw ymm14, ymm11, ymm12",
            "vpaddw ymm4, ymm4, ymm14",
            "vmovdqu ymm12, [{x} + {ldx} + 64]",
            "vpmaddubsw ymm13, ymm10, ymm12",
            "vpaddw ymm1, ymm1, ymm13",
            "vpmaddubsw ymm14, ymm11, ymm12",
            "vpaddw ymm5, ymm5, ymm14",
            "vmovdqu ymm12, [{x} + {ldx}*2 + 64]",
            "vpmaddubsw ymm13, ymm10, ymm12",
            "vpaddw ymm2, ymm2, ymm13",
            "vpmaddubsw ymm14, ymm11, ymm12",
            "vpaddw ymm6, ymm6, ymm14",
            "vmovdqu ymm12, [{x3} + 64]",
            "vpmaddubsw ymm13, ymm10, ymm12",
            "vpaddw ymm3, ymm3, ymm13",
            "vpmaddubsw ymm14, ymm11, ymm12",
            "vpaddw ymm7, ymm7, ymm14",
            "vpsrlw ymm10, ymm8, 6",
            "vpsrlw ymm11, ymm9, 6",
            "vpand ymm10, ymm10, ymm15",
            "vpand ymm11, ymm11, ymm15",
            "vmovdqu ymm12, [{x} + 96]",
            "vpmaddubsw ymm13, ymm10, ymm12",
            "vpaddw ymm0, ymm0, ymm13",
            "vpmaddubsw ymm14, ymm11, ymm12",
            "vpaddw ymm4, ymm4, ymm14",
            "vmovdqu ymm12, [{x} + {ldx} + 96]",
            "vpmaddubsw ymm13, ymm10, ymm12",
            "vpaddw ymm1, ymm1, ymm13",
            "vpmaddubsw ymm14, ymm11, ymm12",
            "vpaddw ymm5, ymm5, ymm14",
            "vmovdqu ymm12, [{x} + {ldx}*2 + 96]",
            "vpmaddubsw ymm13, ymm10, ymm12",
            "vpaddw ymm2, ymm2, ymm13",
            "vpmaddubsw ymm14, ymm11, ymm12",
            "vpaddw ymm6, ymm6, ymm14",
            "vmovdqu ymm12, [{x3} + 96]",
            "vpmaddubsw ymm13, ymm10, ymm12",
            "vpaddw ymm3, ymm3, ymm13",
            "vpmaddubsw ymm14, ymm11, ymm12",
            "vpaddw ymm7, ymm7, ymm14",
            "add {w}, 32",
            "add {pf}, 32",
            "add {x}, 128",
            "add {x3}, 128",
            "dec {n}",
            "jnz 2b",
            w = inout(reg) w => _,
            pf = inout(reg) w.wrapping_add(PREFETCH_ROWS * rb) => _,
            rb = in(reg) rb,
            x = inout(reg) x => _,
            x3 = inout(reg) x.wrapping_add(3 * ldx) => _,
            ldx = in(reg) ldx,
            n = inout(reg) groups => _,
            inout("ymm0") a0, inout("ymm1") a1, inout("ymm2") a2, inout("ymm3") a3,
            inout("ymm4") a4, inout("ymm5") a5, inout("ymm6") a6, inout("ymm7") a7,
            out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
            out("ymm12") _, out("ymm13") _, out("ymm14") _, in("ymm15") mask,
            options(nostack, readonly),
        );
        *acc = [a0, a1, a2, a3, a4, a5, a6, a7];
    }
}

/// [`super::TernaryMatrix::unpack_codes`] compiled with this level's vectors.
#[target_feature(enable = "avx2")]
unsafe fn unpack_codes_avx2(row: &[u8], cols: usize, codes: &mut [u8]) {
    super::TernaryMatrix::unpack_codes(row, cols, codes);
}
