//! AVX2 quantization of activations into ggml's Q8_0/Q8_1 blocks, bit for bit the scalar
//! `quantize_q8_0_block` and its f16 roundings: the largest magnitude by a max tree (max is
//! exact in any order), the values by `vroundps` (ties to even, as `round_ties_even`), the
//! scales through F16C (round to nearest even, as `half`). Blocks the tree could get wrong
//! (a NaN, which `vmaxps` and `f32::max` drop differently, or a scale that overflows) go
//! to the scalar code.

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
