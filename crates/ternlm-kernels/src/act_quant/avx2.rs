//! AVX2 quantization of activations, bit for bit the scalar code: BitLinear's per-token rows
//! (`quantize_per_token`), and ggml's Q8_0/Q8_1 blocks (`quantize_q8_0_block` and its f16
//! roundings). In both, the largest magnitude by a max tree (max is
//! exact in any order), the values by `vroundps` (ties to even, as `round_ties_even`), the
//! scales through F16C (round to nearest even, as `half`). Rows or blocks the vectors could
//! get wrong (a NaN, which the conversions treat differently from `as`, or a scale that
//! overflows) go to the scalar code.

use std::arch::x86_64::*;

use half::f16;

/// Quantizes `x` (whole blocks of 32) into `q`, one f16-rounded scale per block into `d`
/// and, for Q8_1, `f16(d · Σq)` into `s`.
///
/// # Safety
/// The CPU must have AVX2 and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn quantize_q8_blocks(x: &[f32], q: &mut [i8], d: &mut [f32], mut s: Option<&mut [f32]>) {
    assert!(x.len().is_multiple_of(32) && q.len() == x.len() && d.len() == x.len() / 32);
    assert!(s.as_ref().is_none_or(|s| s.len() == d.len()));
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (b, (xb, qb)) in x.chunks_exact(32).zip(q.chunks_exact_mut(32)).enumerate() {
        // SAFETY: `xb` holds 32 floats and `qb` 32 bytes; the CPU has AVX2 and F16C (the
        // caller's contract).
        unsafe {
            let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(xb.as_ptr().add(8 * i)));
            let nan = v.iter().fold(_mm256_setzero_ps(), |m, &vi| _mm256_or_ps(m, _mm256_cmp_ps(vi, vi, _CMP_UNORD_Q)));
            let m = v.iter().fold(_mm256_setzero_ps(), |m, &vi| _mm256_max_ps(m, _mm256_and_ps(vi, abs_mask)));
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            let (dv, sum) = if _mm256_movemask_ps(nan) != 0 || !id.is_finite() {
                super::quantize_q8_0_block(xb, qb)
            } else {
                let idv = _mm256_set1_ps(id);
                let r: [__m256i; 4] = std::array::from_fn(|i| _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[i], idv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
                let packed = _mm256_packs_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
                _mm256_storeu_si256(qb.as_mut_ptr() as *mut __m256i, _mm256_permutevar8x32_epi32(packed, order));
                let t = _mm256_add_epi32(_mm256_add_epi32(r[0], r[1]), _mm256_add_epi32(r[2], r[3]));
                let t = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
                let t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0b01_00_11_10));
                let t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0b10_11_00_01));
                (amax / 127.0, _mm_cvtsi128_si32(t))
            };
            d[b] = f16::from_f32(dv).to_f32();
            if let Some(s) = s.as_deref_mut() {
                s[b] = f16::from_f32(dv * sum as f32).to_f32();
            }
        }
    }
}

/// BitLinear's per-token quantization of one row (`s = 127 / max(max|x|, 1e-5)`, values
/// `clamp(round(x · s), -128, 127)`); returns `s`.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn quantize_per_token(x: &[f32], q: &mut [i8]) -> f32 {
    assert_eq!(x.len(), q.len());
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    let body = x.len() / 32 * 32;
    let (mut m, mut nan) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for c in x[..body].chunks_exact(8) {
        // SAFETY: `c` holds 8 floats.
        let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        m = _mm256_max_ps(_mm256_and_ps(v, abs_mask), m);
    }
    let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let amax = x[body..].iter().fold(_mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m))), |m, &v| m.max(v.abs()));
    if _mm256_movemask_ps(nan) != 0 || x[body..].iter().any(|v| v.is_nan()) || !amax.is_finite() {
        return super::quantize_per_token(x, q);
    }
    let s = 127.0 / amax.max(1e-5);
    let sv = _mm256_set1_ps(s);
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (xc, qc) in x[..body].chunks_exact(32).zip(q[..body].chunks_exact_mut(32)) {
        // SAFETY: `xc` holds 32 floats and `qc` 32 bytes. The products are finite (no NaN or
        // infinity in the row), and round to at most 127 in magnitude, so the conversions
        // and saturating packs give what `clamp` and `as i8` give.
        unsafe {
            let r: [__m256i; 4] =
                std::array::from_fn(|i| _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(xc.as_ptr().add(8 * i)), sv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
            let packed = _mm256_packs_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
            _mm256_storeu_si256(qc.as_mut_ptr() as *mut __m256i, _mm256_permutevar8x32_epi32(packed, order));
        }
    }
    for (o, &v) in q[body..].iter_mut().zip(&x[body..]) {
        *o = (v * s).round_ties_even().clamp(-128.0, 127.0) as i8;
    }
    s
}
