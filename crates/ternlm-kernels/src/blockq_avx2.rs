//! Hand-written AVX2 dot products for the block types that carry real models' weight:
//! Q6_K (output heads), Q8_0, Q4_0, Q4_1 (SmolLM2) and F16 (heads). Each returns exactly
//! what its portable twin in [`crate::blockq`] returns: integer block sums are exact, and the
//! float accumulation happens in the same order (per block, in sequence; or, for F16, in the
//! 4x8-lane FMA order both implement).

use std::arch::x86_64::*;

use crate::act_quant::QuantActs;

#[inline(always)]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    // SAFETY: register-only intrinsics; callers run with AVX2 enabled.
    unsafe {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }
}

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
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

/// 32 nibbles of a Q4 block (`qs[j]` low = weight j, high = weight j + 16) as bytes 0..15.
#[inline(always)]
unsafe fn nibbles(qs: *const u8) -> __m256i {
    // SAFETY: reads 16 bytes the caller bounds; register-only otherwise.
    unsafe {
        let v = _mm_loadu_si128(qs as *const __m128i);
        let both = _mm256_set_m128i(_mm_srli_epi16::<4>(v), v);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q8_0(w: &[u8], a: &QuantActs, t: usize) -> f32 {
    let (q8, d8) = (a.row(t), a.row_d(t));
    assert!(w.len() >= q8.len() / 32 * 34);
    let mut sum = 0f32;
    for (b, blk) in w.chunks_exact(34).enumerate().take(q8.len() / 32) {
        // SAFETY: blk holds 34 bytes and q8 32 values at b·32 (bounded by the take above).
        let isum = unsafe {
            let wv = _mm256_loadu_si256(blk.as_ptr().add(2) as *const __m256i);
            let xv = _mm256_loadu_si256(q8.as_ptr().add(b * 32) as *const __m256i);
            hsum_i32(dot32_i8(wv, xv))
        };
        sum += isum as f32 * (f16_at(blk, 0) * d8[b]);
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_0(w: &[u8], a: &QuantActs, t: usize) -> f32 {
    let (q8, d8) = (a.row(t), a.row_d(t));
    assert!(w.len() >= q8.len() / 32 * 18);
    let mut sum = 0f32;
    for (b, blk) in w.chunks_exact(18).enumerate().take(q8.len() / 32) {
        // SAFETY: blk holds 18 bytes and q8 32 values at b·32.
        let isum = unsafe {
            let wv = _mm256_sub_epi8(nibbles(blk.as_ptr().add(2)), _mm256_set1_epi8(8));
            let xv = _mm256_loadu_si256(q8.as_ptr().add(b * 32) as *const __m256i);
            hsum_i32(dot32_i8(wv, xv))
        };
        sum += isum as f32 * (f16_at(blk, 0) * d8[b]);
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_1(w: &[u8], a: &QuantActs, t: usize) -> f32 {
    let (q8, d8) = (a.row(t), a.row_d(t));
    let per = a.k / 32;
    let s8 = &a.s[t * per..(t + 1) * per];
    assert!(w.len() >= per * 20 && q8.len() >= per * 32);
    let mut sum = 0f32;
    for (b, blk) in w.chunks_exact(20).enumerate().take(per) {
        // SAFETY: blk holds 20 bytes and q8 32 values at b·32.
        let isum = unsafe {
            let wv = nibbles(blk.as_ptr().add(4));
            let xv = _mm256_loadu_si256(q8.as_ptr().add(b * 32) as *const __m256i);
            hsum_i32(_mm256_madd_epi16(_mm256_maddubs_epi16(wv, xv), _mm256_set1_epi16(1)))
        };
        sum += (f16_at(blk, 0) * d8[b]) * isum as f32 + f16_at(blk, 2) * s8[b];
    }
    sum
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

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q6k(w: &[u8], a: &QuantActs, t: usize) -> f32 {
    let (q8, d8) = (a.row(t), a.row_d(t));
    let per = a.k / 256;
    let bsums = &a.bsums[t * per * 16..(t + 1) * per * 16];
    assert!(w.len() >= per * 210 && q8.len() >= per * 256);
    let mut sum = 0f32;
    for (b, blk) in w.chunks_exact(210).enumerate().take(per) {
        // SAFETY: blk holds 210 bytes, q8 256 values at b·256, bsums 16 at b·16.
        let acc = unsafe {
            let m4 = _mm256_set1_epi8(0x0F);
            let m2 = _mm256_set1_epi8(0x03);
            let sc = _mm_loadu_si128(blk.as_ptr().add(192) as *const __m128i);
            let x = q8.as_ptr().add(b * 256);
            let mut acc = _mm256_setzero_si256();
            for half in 0..2 {
                let ql = blk.as_ptr().add(half * 64);
                let ql_lo = _mm256_loadu_si256(ql as *const __m256i);
                let ql_hi = _mm256_loadu_si256(ql.add(32) as *const __m256i);
                let qh = _mm256_loadu_si256(blk.as_ptr().add(128 + half * 32) as *const __m256i);
                let q = [
                    _mm256_or_si256(_mm256_and_si256(ql_lo, m4), _mm256_slli_epi16::<4>(_mm256_and_si256(qh, m2))),
                    _mm256_or_si256(
                        _mm256_and_si256(ql_hi, m4),
                        _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<2>(qh), m2)),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql_lo), m4),
                        _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<4>(qh), m2)),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql_hi), m4),
                        _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<6>(qh), m2)),
                    ),
                ];
                for (part, qv) in q.into_iter().enumerate() {
                    let v = half * 4 + part;
                    let xv = _mm256_loadu_si256(x.add(v * 32) as *const __m256i);
                    let p = _mm256_maddubs_epi16(qv, xv);
                    let shuf = _mm_loadu_si128(Q6K_SCALE_SHUFFLE[v].as_ptr() as *const __m128i);
                    let s16 = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, shuf));
                    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, s16));
                }
            }
            // The stored values are q + 32: take 32·Σ scale_j·Σx_j back out.
            let bs = bsums.as_ptr().add(b * 16) as *const __m256i;
            let s_lo = _mm256_cvtepi8_epi32(sc);
            let s_hi = _mm256_cvtepi8_epi32(_mm_srli_si128::<8>(sc));
            let bias = _mm256_add_epi32(
                _mm256_mullo_epi32(s_lo, _mm256_loadu_si256(bs)),
                _mm256_mullo_epi32(s_hi, _mm256_loadu_si256(bs.add(1))),
            );
            hsum_i32(_mm256_sub_epi32(acc, _mm256_slli_epi32::<5>(bias)))
        };
        sum += f16_at(blk, 208) * d8[b] * acc as f32;
    }
    sum
}

/// F16 weights against f32 activations: four 8-lane FMA accumulators over 32 columns per
/// step, reduced as [`crate::blockq::reduce_4x8`] does; the ragged tail is summed in f64.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
    let steps = x.len() / 32;
    assert!(w.len() >= x.len() * 2);
    // SAFETY: step s reads 64 bytes of w and 32 floats of x at s·32 (< len by `steps`).
    let lanes = unsafe {
        let mut acc = [_mm256_setzero_ps(); 4];
        for s in 0..steps {
            for (j, a) in acc.iter_mut().enumerate() {
                let wv = _mm256_cvtph_ps(_mm_loadu_si128(w.as_ptr().add((s * 32 + j * 8) * 2) as *const __m128i));
                let xv = _mm256_loadu_ps(x.as_ptr().add(s * 32 + j * 8));
                *a = _mm256_fmadd_ps(wv, xv, *a);
            }
        }
        let mut out = [[0f32; 8]; 4];
        for (o, a) in out.iter_mut().zip(acc) {
            _mm256_storeu_ps(o.as_mut_ptr(), a);
        }
        out
    };
    crate::blockq::reduce_4x8(&lanes, w, x, steps * 32)
}
