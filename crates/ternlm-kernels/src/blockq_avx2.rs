//! Hand-written AVX2 dot products for the block types that carry real models' weight:
//! Q6_K (output heads), Q8_0, Q4_0 and Q4_1 (SmolLM2); F16 lives in [`crate::f16_ops`]. Each
//! returns exactly what its portable twin in [`crate::blockq`] returns: integer block sums are
//! exact, and the float accumulation follows ggml's AVX2 lane order (see `blockq::lanes8`).

use std::arch::x86_64::*;

use crate::act_quant::QuantActs;

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

#[inline(always)]
unsafe fn hsum_float_8(v: __m256) -> f32 {
    // SAFETY: register-only; stores into a local array.
    unsafe {
        let mut a = [0f32; 8];
        _mm256_storeu_ps(a.as_mut_ptr(), v);
        crate::blockq::hsum_float_8(a)
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q8_0(w: &[u8], a: &QuantActs, t: usize) -> f32 {
    let (q8, d8) = (a.row(t), a.row_d(t));
    let nb = q8.len() / 32;
    assert!(w.len() >= nb * 34 && d8.len() >= nb);
    // SAFETY: block b reads 34 bytes of w at b·34 and 32 values of q8 at b·32 (b < nb).
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let blk = w.as_ptr().add(b * 34);
            let d = _mm256_set1_ps(f16_at(w, b * 34) * d8[b]);
            let wv = _mm256_loadu_si256(blk.add(2) as *const __m256i);
            let xv = _mm256_loadu_si256(q8.as_ptr().add(b * 32) as *const __m256i);
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot32_i8(wv, xv)), acc);
        }
        hsum_float_8(acc)
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_0(w: &[u8], a: &QuantActs, t: usize) -> f32 {
    let (q8, d8) = (a.row(t), a.row_d(t));
    let nb = q8.len() / 32;
    assert!(w.len() >= nb * 18 && d8.len() >= nb);
    // SAFETY: block b reads 18 bytes of w at b·18 and 32 values of q8 at b·32 (b < nb).
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let blk = w.as_ptr().add(b * 18);
            let d = _mm256_set1_ps(f16_at(w, b * 18) * d8[b]);
            let wv = _mm256_sub_epi8(nibbles(blk.add(2)), _mm256_set1_epi8(8));
            let xv = _mm256_loadu_si256(q8.as_ptr().add(b * 32) as *const __m256i);
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot32_i8(wv, xv)), acc);
        }
        hsum_float_8(acc)
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_1(w: &[u8], a: &QuantActs, t: usize) -> f32 {
    let (q8, d8) = (a.row(t), a.row_d(t));
    let nb = a.k / 32;
    let s8 = &a.s[t * nb..(t + 1) * nb];
    assert!(w.len() >= nb * 20 && q8.len() >= nb * 32 && d8.len() >= nb);
    // SAFETY: block b reads 20 bytes of w at b·20 and 32 values of q8 at b·32 (b < nb).
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        let mut summs = 0f32;
        for b in 0..nb {
            let blk = w.as_ptr().add(b * 20);
            summs += f16_at(w, b * 20 + 2) * s8[b];
            let d = _mm256_set1_ps(f16_at(w, b * 20) * d8[b]);
            let wv = nibbles(blk.add(4));
            let xv = _mm256_loadu_si256(q8.as_ptr().add(b * 32) as *const __m256i);
            let lanes = _mm256_madd_epi16(_mm256_maddubs_epi16(wv, xv), ones);
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lanes), acc);
        }
        hsum_float_8(acc) + summs
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

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q6k(w: &[u8], a: &QuantActs, t: usize) -> f32 {
    let (q8, d8) = (a.row(t), a.row_d(t));
    let nb = a.k / 256;
    assert!(w.len() >= nb * 210 && q8.len() >= nb * 256 && d8.len() >= nb);
    // SAFETY: block b reads 210 bytes of w at b·210 and 256 values of q8 at b·256 (b < nb).
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        let m2 = _mm256_set1_epi8(0x03);
        let m32 = _mm256_set1_epi8(32);
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let blk = w.as_ptr().add(b * 210);
            let sc = _mm_loadu_si128(blk.add(192) as *const __m128i);
            let x = q8.as_ptr().add(b * 256);
            let mut sumi = _mm256_setzero_si256();
            for half in 0..2 {
                let ql = blk.add(half * 64);
                let ql_lo = _mm256_loadu_si256(ql as *const __m256i);
                let ql_hi = _mm256_loadu_si256(ql.add(32) as *const __m256i);
                let qh = _mm256_loadu_si256(blk.add(128 + half * 32) as *const __m256i);
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
        hsum_float_8(acc)
    }
}
