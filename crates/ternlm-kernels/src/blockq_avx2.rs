//! Hand-written AVX2 dot products for the block types that carry real models' weight:
//! Q6_K (output heads), Q8_0, Q4_0 and Q4_1 (SmolLM2); F16 lives in [`crate::f16_ops`]. Each
//! returns exactly what its portable twin in [`crate::blockq`] returns: integer block sums are
//! exact, and the float accumulation follows ggml's AVX2 lane order (see `blockq::lanes8`).

// Register tiles are indexed by row and token on purpose: the index form is what maps onto
// the tile's registers.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use crate::act_quant::QuantActs;
use crate::sync_out::SyncOut;

/// How far ahead of the current block the decode kernels prefetch, in bytes: the hardware
/// prefetcher alone left single-thread decode at a third of the core's read bandwidth.
const PREFETCH: usize = 1024;

/// The f16 at byte `i` of `b`, converted with F16C in line (`half`'s conversion checks the
/// CPU at run time and is not inlined: per block that costs more than the block's math).
#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    let bits = u16::from_le_bytes([b[i], b[i + 1]]);
    // SAFETY: every caller is a function compiled with F16C enabled.
    unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits)))) }
}

/// `Σ w·x` over 32 unsigned-or-signed pairs: `maddubs` needs an unsigned left operand, so the
/// sign of `w` moves onto `x`.
#[inline(always)]
unsafe fn dot32_i8(w: __m256i, x: __m256i) -> __m256i {
    // SAFETY: register-only intrinsics; callers run with AVX2 enabled.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
        _mm256_madd_epi16(p, ones)
    }
}

#[inline(always)]
unsafe fn hsum_float_8(v: __m256) -> f32 {
    // SAFETY: register-only intrinsics. The same adds in the same order as
    // `blockq::hsum_float_8` (upper + lower half, then pairs, then the last two).
    unsafe {
        let r = _mm_add_ps(_mm256_extractf128_ps::<1>(v), _mm256_castps256_ps128(v));
        let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
        _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)))
    }
}

/// Decode: `out.set(t·out_rows + r, W[r] · x[t])` for every row in `rows` of a 32-wide block
/// matrix (`K`: 0 = Q4_0, 1 = Q4_1, 2 = Q8_0), one row at a time (rows stream through memory
/// in order, which the hardware prefetcher follows best), each block's FMA in sequence. The
/// whole row range runs inside one call so per-row costs (bounds checks, calls, constants)
/// stay out of the loop: SmolLM2's rows are only 18 blocks long.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemv_q32<const K: u8>(w: &[u8], row_bytes: usize, rows: std::ops::Range<usize>, a: &QuantActs, t: usize, out: SyncOut, out_rows: usize) {
    let bytes = match K {
        0 => 18,
        1 => 20,
        _ => 34,
    };
    let nb = a.k / 32;
    assert!(row_bytes >= nb * bytes && w.len() >= rows.end * row_bytes && t < a.n);
    assert!(a.q.len() >= (t + 1) * a.k && a.d.len() >= (t + 1) * nb && (K != 1 || a.s.len() >= (t + 1) * nb));
    // SAFETY: every row in `rows` and token `t` lie inside `w` and `a` (asserted above); block
    // b of a row reads `bytes` bytes at b·bytes, and x/d8/s8 at token t's block b.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let m4 = _mm256_set1_epi8(0x0F);
        let x = a.q.as_ptr().add(t * a.k);
        let d8 = a.d.as_ptr().add(t * nb);
        let s8 = if K == 1 { a.s.as_ptr().add(t * nb) } else { d8 };
        for r in rows {
            let row = w.as_ptr().add(r * row_bytes);
            let mut acc = _mm256_setzero_ps();
            let mut summs = 0f32;
            for b in 0..nb {
                let blk = row.add(b * bytes);
                _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH) as *const i8);
                let xv = _mm256_loadu_si256(x.add(b * 32) as *const __m256i);
                let dw = f16_ptr(blk);
                let lanes = match K {
                    0 => {
                        let v = _mm_loadu_si128(blk.add(2) as *const __m128i);
                        let n = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(v), v), m4);
                        dot32_i8(_mm256_sub_epi8(n, _mm256_set1_epi8(8)), xv)
                    }
                    1 => {
                        summs += f16_ptr(blk.add(2)) * *s8.add(b);
                        let v = _mm_loadu_si128(blk.add(4) as *const __m128i);
                        let n = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(v), v), m4);
                        _mm256_madd_epi16(_mm256_maddubs_epi16(n, xv), ones)
                    }
                    _ => dot32_i8(_mm256_loadu_si256(blk.add(2) as *const __m256i), xv),
                };
                acc = _mm256_fmadd_ps(_mm256_set1_ps(dw * *d8.add(b)), _mm256_cvtepi32_ps(lanes), acc);
            }
            out.set(t * out_rows + r, hsum_float_8(acc) + summs);
        }
    }
}

/// The f16 at `p`, converted with F16C in line.
#[inline(always)]
unsafe fn f16_ptr(p: *const u8) -> f32 {
    // SAFETY: the caller bounds the two bytes at `p`; the function runs with F16C enabled.
    unsafe {
        let bits = u16::from_le_bytes([*p, *p.add(1)]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    }
}

/// The 32-wide block types the tiled kernel handles.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Q32 {
    Q4_0,
    Q4_1,
    Q8_0,
}

impl Q32 {
    const fn bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
        }
    }
}

/// Prefill: `out(r, t, W[r] · x[t])` for rows `r0..r0 + n_rows` of a 32-wide block matrix,
/// in tiles of two rows by four tokens: each block of a row is unpacked once per tile and
/// used for every token in it. Each
/// output's float arithmetic is exactly the portable kernel's (per-lane FMA across blocks in
/// order, [`hsum_float_8`] at the end).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_q32(kind: Q32, w: &[u8], row_bytes: usize, r0: usize, n_rows: usize, a: &QuantActs, out: &mut dyn FnMut(usize, usize, f32)) {
    // One copy of the loop per type, so the type's branches fold away inside the tiles.
    // SAFETY: this function runs with AVX2/FMA/F16C, which the inlined copies need.
    unsafe {
        match kind {
            Q32::Q4_0 => gemm_q32_k::<0>(w, row_bytes, r0, n_rows, a, out),
            Q32::Q4_1 => gemm_q32_k::<1>(w, row_bytes, r0, n_rows, a, out),
            Q32::Q8_0 => gemm_q32_k::<2>(w, row_bytes, r0, n_rows, a, out),
        }
    }
}

#[inline(always)]
unsafe fn gemm_q32_k<const K: u8>(w: &[u8], row_bytes: usize, r0: usize, n_rows: usize, a: &QuantActs, out: &mut dyn FnMut(usize, usize, f32)) {
    let kind = match K {
        0 => Q32::Q4_0,
        1 => Q32::Q4_1,
        _ => Q32::Q8_0,
    };
    let nb = a.k / 32;
    assert!(row_bytes >= nb * kind.bytes() && w.len() >= (r0 + n_rows) * row_bytes);
    assert!(a.q.len() >= a.n * a.k && a.d.len() >= a.n * nb && (kind != Q32::Q4_1 || a.s.len() >= a.n * nb));
    let n = a.n;
    let mut r = 0;
    while r < n_rows {
        // Two rows by four tokens, so each unpacked block serves four tokens.
        let rows = if n_rows - r >= 2 { 2 } else { 1 };
        let mut t = 0;
        while t < n {
            let four = n - t >= 4;
            // SAFETY: AVX2/FMA/F16C are enabled here; rows r0+r..+rows and tokens t..+4 (or
            // +1) are in bounds (asserted above; the tile sizes never exceed what is left).
            t += unsafe {
                match (rows, four) {
                    (2, true) => tile::<2, 4>(kind, w, row_bytes, r0 + r, t, nb, a, out),
                    (2, false) => tile::<2, 1>(kind, w, row_bytes, r0 + r, t, nb, a, out),
                    (_, true) => tile::<1, 4>(kind, w, row_bytes, r0 + r, t, nb, a, out),
                    _ => tile::<1, 1>(kind, w, row_bytes, r0 + r, t, nb, a, out),
                }
            };
        }
        r += rows;
    }
}

/// One `R`-row, `T`-token tile; returns `T`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tile<const R: usize, const T: usize>(kind: Q32, w: &[u8], row_bytes: usize, r0: usize, t0: usize, nb: usize, a: &QuantActs, out: &mut dyn FnMut(usize, usize, f32)) -> usize {
    // SAFETY: the caller checked rows r0..r0+R and tokens t0..t0+T lie inside `w` and `a`;
    // every load below is within one block of one of those rows or tokens.
    unsafe {
        let bytes = kind.bytes();
        let ones = _mm256_set1_epi16(1);
        let m4 = _mm256_set1_epi8(0x0F);
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        let mut summs = [[0f32; T]; R];
        for b in 0..nb {
            let mut wv = [_mm256_setzero_si256(); R];
            let mut dw = [0f32; R];
            let mut mw = [0f32; R];
            for r in 0..R {
                let blk = w.as_ptr().add((r0 + r) * row_bytes + b * bytes);
                dw[r] = f16_at(std::slice::from_raw_parts(blk, 2), 0);
                wv[r] = match kind {
                    Q32::Q8_0 => _mm256_loadu_si256(blk.add(2) as *const __m256i),
                    Q32::Q4_0 => {
                        let v = _mm_loadu_si128(blk.add(2) as *const __m128i);
                        let n = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(v), v), m4);
                        _mm256_sub_epi8(n, _mm256_set1_epi8(8))
                    }
                    Q32::Q4_1 => {
                        mw[r] = f16_at(std::slice::from_raw_parts(blk, 4), 2);
                        let v = _mm_loadu_si128(blk.add(4) as *const __m128i);
                        _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(v), v), m4)
                    }
                };
            }
            for t in 0..T {
                let tok = t0 + t;
                let xv = _mm256_loadu_si256(a.q.as_ptr().add(tok * a.k + b * 32) as *const __m256i);
                let d8 = *a.d.get_unchecked(tok * nb + b);
                let s8 = if kind == Q32::Q4_1 { *a.s.get_unchecked(tok * nb + b) } else { 0.0 };
                for r in 0..R {
                    let lanes = match kind {
                        Q32::Q4_1 => _mm256_madd_epi16(_mm256_maddubs_epi16(wv[r], xv), ones),
                        _ => dot32_i8(wv[r], xv),
                    };
                    if kind == Q32::Q4_1 {
                        summs[r][t] += mw[r] * s8;
                    }
                    acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(dw[r] * d8), _mm256_cvtepi32_ps(lanes), acc[r][t]);
                }
            }
        }
        for r in 0..R {
            for t in 0..T {
                out(r0 + r, t0 + t, hsum_float_8(acc[r][t]) + summs[r][t]);
            }
        }
        T
    }
}

/// Byte shuffles that spread Q6_K scales `2v` and `2v + 1` over 8 lanes each.
const Q6K_SCALE_SHUFFLE: [[u8; 16]; 8] = {
    let mut m = [[0u8; 16]; 8];
    let mut v = 0;
    while v < 8 {
        let mut i = 0;
        while i < 16 {
            m[v][i] = (2 * v + i / 8) as u8;
            i += 1;
        }
        v += 1;
    }
    m
};

/// The 6-bit values (0..63) of Q6_K half-block `half` of the block at `blk`, as four
/// vectors of 32 in column order.
#[inline(always)]
unsafe fn q6k_half(blk: *const u8, half: usize) -> [__m256i; 4] {
    // SAFETY: the caller bounds the block (210 bytes at `blk`) and runs with AVX2 enabled.
    unsafe {
        let (m4, m2) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x03));
        let ql = blk.add(half * 64);
        let ql_lo = _mm256_loadu_si256(ql as *const __m256i);
        let ql_hi = _mm256_loadu_si256(ql.add(32) as *const __m256i);
        let qh = _mm256_loadu_si256(blk.add(128 + half * 32) as *const __m256i);
        [
            _mm256_or_si256(_mm256_and_si256(ql_lo, m4), _mm256_slli_epi16::<4>(_mm256_and_si256(qh, m2))),
            _mm256_or_si256(_mm256_and_si256(ql_hi, m4), _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<2>(qh), m2))),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql_lo), m4), _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<4>(qh), m2))),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql_hi), m4), _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<6>(qh), m2))),
        ]
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemv_q6k(w: &[u8], row_bytes: usize, rows: std::ops::Range<usize>, a: &QuantActs, t: usize, out: SyncOut, out_rows: usize) {
    let (q8, d8) = (a.row(t), a.row_d(t));
    let nb = a.k / 256;
    assert!(row_bytes >= nb * 210 && w.len() >= rows.end * row_bytes && q8.len() >= nb * 256 && d8.len() >= nb);
    // SAFETY: block b of row r reads 210 bytes of w at r·row_bytes + b·210 and 256 values of
    // q8 at b·256 (b < nb, r < rows.end: asserted above).
    unsafe {
        let m32 = _mm256_set1_epi8(32);
        for r in rows {
            let w = std::slice::from_raw_parts(w.as_ptr().add(r * row_bytes), nb * 210);
            let mut acc = _mm256_setzero_ps();
            for b in 0..nb {
                let blk = w.as_ptr().add(b * 210);
                _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH) as *const i8);
                let sc = _mm_loadu_si128(blk.add(192) as *const __m128i);
                let x = q8.as_ptr().add(b * 256);
                let mut sumi = _mm256_setzero_si256();
                for half in 0..2 {
                    let q = q6k_half(blk, half);
                    for (part, qv) in q.into_iter().enumerate() {
                        let v = half * 4 + part;
                        let xv = _mm256_loadu_si256(x.add(v * 32) as *const __m256i);
                        // (q - 32)·x in int16 pairs: both products fit (≤ 16002 and ≤ 8128).
                        let p = _mm256_sub_epi16(_mm256_maddubs_epi16(qv, xv), _mm256_maddubs_epi16(m32, xv));
                        let shuf = _mm_loadu_si128(Q6K_SCALE_SHUFFLE[v].as_ptr() as *const __m128i);
                        let s16 = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, shuf));
                        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s16));
                    }
                }
                let d = _mm256_set1_ps(d8[b] * f16_at(w, b * 210 + 208));
                acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
            }
            out.set(t * out_rows + r, hsum_float_8(acc));
        }
    }
}

/// How far ahead [`gemm_q6k`] prefetches, in bytes: it spends longer on each block than
/// decode does, and a row is walked once per 4 tokens, so it looks a few rows ahead.
const BATCH_PREFETCH: usize = 4096;

thread_local! {
    /// A batch's activations moved to unsigned (`x + 128`) for [`gemm_q6k`].
    static UNSIGNED_ACTS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Several tokens (a batch of decoding sequences): `out.set(t·out_rows + r, W[r] · x[t])` for
/// every row in `rows` and every token, each row's blocks unpacked once per 4 tokens rather
/// than once per token.
///
/// The weights become signed (`q - 32`) and the activations unsigned (`x + 128`), so one
/// `maddubs` gives `Σ (x + 128)(q - 32)` per pair; the `128·Σ (q - 32)` it adds depends only on
/// the row and is taken off once per block. Every int32 lane then holds exactly what
/// [`gemv_q6k`] computes for that token (both are exact integer sums of the same terms, with
/// no int16 saturation: pairs stay within 2·255·32), and the float steps are the same, so a
/// sequence's logits do not depend on what it is batched with.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_q6k(w: &[u8], row_bytes: usize, rows: std::ops::Range<usize>, a: &QuantActs, out: SyncOut, out_rows: usize) {
    let (n, k) = (a.n, a.k);
    let nb = k / 256;
    assert!(row_bytes >= nb * 210 && w.len() >= rows.end * row_bytes && a.q.len() >= n * k && a.d.len() >= n * nb && k == nb * 256);
    UNSIGNED_ACTS.with_borrow_mut(|xu| {
        xu.clear();
        xu.extend(a.q[..n * k].iter().map(|&v| v as u8 ^ 0x80));
        for r in rows {
            let row = w[r * row_bytes..].as_ptr();
            let mut t0 = 0;
            while t0 < n {
                let nt = (n - t0).min(8);
                // SAFETY: AVX2, FMA and F16C are enabled here; row r holds nb blocks of 210
                // bytes and tokens t0..t0+nt hold nb·256 values each in `xu` and nb scales in
                // `a.d` (asserted above).
                unsafe {
                    match nt {
                        8 => q6k_tile::<8>(row, nb, xu[t0 * k..].as_ptr(), k, &a.d[t0 * nb..], t0, r, out, out_rows),
                        7 => q6k_tile::<7>(row, nb, xu[t0 * k..].as_ptr(), k, &a.d[t0 * nb..], t0, r, out, out_rows),
                        6 => q6k_tile::<6>(row, nb, xu[t0 * k..].as_ptr(), k, &a.d[t0 * nb..], t0, r, out, out_rows),
                        5 => q6k_tile::<5>(row, nb, xu[t0 * k..].as_ptr(), k, &a.d[t0 * nb..], t0, r, out, out_rows),
                        4 => q6k_tile::<4>(row, nb, xu[t0 * k..].as_ptr(), k, &a.d[t0 * nb..], t0, r, out, out_rows),
                        3 => q6k_tile::<3>(row, nb, xu[t0 * k..].as_ptr(), k, &a.d[t0 * nb..], t0, r, out, out_rows),
                        2 => q6k_tile::<2>(row, nb, xu[t0 * k..].as_ptr(), k, &a.d[t0 * nb..], t0, r, out, out_rows),
                        _ => q6k_tile::<1>(row, nb, xu[t0 * k..].as_ptr(), k, &a.d[t0 * nb..], t0, r, out, out_rows),
                    }
                }
                t0 += nt;
            }
        }
    });
}

/// One Q6_K row against `T` tokens (see [`gemm_q6k`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn q6k_tile<const T: usize>(row: *const u8, nb: usize, xu: *const u8, ldx: usize, d8: &[f32], t0: usize, r: usize, out: SyncOut, out_rows: usize) {
    // SAFETY: the caller runs with AVX2, FMA and F16C and bounds `row` (nb blocks), `xu`
    // (T tokens of nb·256 values, ldx apart) and `d8` (T·nb scales).
    unsafe {
        let m32 = _mm256_set1_epi8(32);
        let k128 = _mm256_set1_epi8(0x80u8 as i8);
        let mut accf = [_mm256_setzero_ps(); T];
        for b in 0..nb {
            let blk = row.add(b * 210);
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(BATCH_PREFETCH) as *const i8);
            let sc = _mm_loadu_si128(blk.add(192) as *const __m128i);
            let mut acc = [_mm256_setzero_si256(); T];
            let mut corr = _mm256_setzero_si256();
            for half in 0..2 {
                let q = q6k_half(blk, half);
                for (part, qv) in q.into_iter().enumerate() {
                    let v = half * 4 + part;
                    let wv = _mm256_sub_epi8(qv, m32);
                    let shuf = _mm_loadu_si128(Q6K_SCALE_SHUFFLE[v].as_ptr() as *const __m128i);
                    let s16 = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, shuf));
                    corr = _mm256_add_epi32(corr, _mm256_madd_epi16(_mm256_maddubs_epi16(k128, wv), s16));
                    for t in 0..T {
                        let xv = _mm256_loadu_si256(xu.add(t * ldx + b * 256 + v * 32) as *const __m256i);
                        acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(_mm256_maddubs_epi16(xv, wv), s16));
                    }
                }
            }
            let dw = f16_ptr(blk.add(208));
            for t in 0..T {
                let d = _mm256_set1_ps(d8[t * nb + b] * dw);
                accf[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[t], corr)), accf[t]);
            }
        }
        for t in 0..T {
            out.set((t0 + t) * out_rows + r, hsum_float_8(accf[t]));
        }
    }
}
