//! F16 vector operations in ggml's arithmetic: the dot product of F16 values with f32 values
//! (four 16-lane FMA accumulators, 64 values per step, then the fixed reduction ggml's
//! AVX-512 build performs, tail in f64: the build our llama.cpp fixtures come from),
//! and the F16 "multiply-add into" and "scale in place" updates that flash attention applies
//! to its value accumulator (each computed in f32 with one FMA, rounded back to F16).
//!
//! Each has a portable body (the scalar reference) and, on x86-64, an AVX2+F16C twin that
//! returns identical bits; `level` picks one.

use half::f16;

use crate::isa::Isa;

/// `Σ w[i]·x[i]` with `w` given as little-endian F16 bytes.
pub fn dot_f16(level: Isa, w: &[u8], x: &[f32]) -> f32 {
    assert!(w.len() >= 2 * x.len(), "F16 row shorter than its activations");
    #[cfg(target_arch = "x86_64")]
    if level >= Isa::Avx2 {
        // SAFETY: the level is at most the detected one, which has AVX2, FMA and F16C.
        return unsafe { avx2::dot_f16(w, x) };
    }
    let _ = level;
    dot_f16_portable(w, x)
}

/// `acc[i] = f16(fma(v[i], s, acc[i]))`.
pub fn mad_f16(level: Isa, acc: &mut [f16], v: &[f16], s: f32) {
    assert!(v.len() >= acc.len());
    #[cfg(target_arch = "x86_64")]
    if level >= Isa::Avx2 {
        // SAFETY: as in `dot_f16`.
        return unsafe { avx2::mad_f16(acc, v, s) };
    }
    for (a, x) in acc.iter_mut().zip(v) {
        *a = f16::from_f32(x.to_f32().mul_add(s, a.to_f32()));
    }
}

/// `acc[i] = f16(acc[i]·s)`.
pub fn scale_f16(level: Isa, acc: &mut [f16], s: f32) {
    #[cfg(target_arch = "x86_64")]
    if level >= Isa::Avx2 {
        // SAFETY: as in `dot_f16`.
        return unsafe { avx2::scale_f16(acc, s) };
    }
    for a in acc.iter_mut() {
        *a = f16::from_f32(a.to_f32() * s);
    }
}

/// F16 values as raw little-endian bytes (for [`dot_f16`] over an F16 cache).
pub fn f16_bytes(v: &[f16]) -> &[u8] {
    // SAFETY: f16 is a 2-byte plain value with no padding; u8 has alignment 1.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// Values per step of the F16 dot product: 4 accumulators of 16 lanes.
pub(crate) const STEP: usize = 64;

fn dot_f16_portable(w: &[u8], x: &[f32]) -> f32 {
    let steps = x.len() / STEP;
    let mut lanes = [[0f32; 16]; 4];
    for s in 0..steps {
        for (j, lane) in lanes.iter_mut().enumerate() {
            for (l, acc) in lane.iter_mut().enumerate() {
                let i = s * STEP + j * 16 + l;
                *acc = f16::from_le_bytes([w[2 * i], w[2 * i + 1]]).to_f32().mul_add(x[i], *acc);
            }
        }
    }
    reduce_4x16(&lanes, w, x, steps * STEP)
}

/// Folds four 16-lane accumulators as ggml does (`a0 + a2`, `a1 + a3`, then those two, then
/// `_mm512_reduce_add_ps`: halves, quarters, pairs), then adds the columns from `from` on in
/// f64.
fn reduce_4x16(lanes: &[[f32; 16]; 4], w: &[u8], x: &[f32], from: usize) -> f32 {
    let mut v = [0f32; 16];
    for (l, o) in v.iter_mut().enumerate() {
        *o = (lanes[0][l] + lanes[2][l]) + (lanes[1][l] + lanes[3][l]);
    }
    let t3: [f32; 8] = std::array::from_fn(|i| v[i + 8] + v[i]);
    let t6: [f32; 4] = std::array::from_fn(|i| t3[i + 4] + t3[i]);
    with_tail((t6[0] + t6[2]) + (t6[1] + t6[3]), w, x, from)
}

/// The folded sum plus the columns from `from` on, added in f64.
fn with_tail(folded: f32, w: &[u8], x: &[f32], from: usize) -> f32 {
    let mut sum = f64::from(folded);
    for i in from..x.len() {
        sum += f64::from(f16::from_le_bytes([w[2 * i], w[2 * i + 1]]).to_f32() * x[i]);
    }
    sum as f32
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use half::f16;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
        let steps = x.len() / super::STEP;
        // SAFETY: the steps read 128 bytes of w and 64 floats of x each, inside both (the
        // caller checked w holds 2·len(x) bytes); AVX2, FMA and F16C are enabled here.
        let folded = unsafe { dot_steps(w.as_ptr(), x.as_ptr(), steps) };
        super::with_tail(folded, w, x, steps * super::STEP)
    }

    /// The portable form's `steps` steps of 64 values (each 16-lane accumulator a pair of
    /// 8-lane registers), folded in registers in [`super::reduce_4x16`]'s order, so the
    /// bits are the same.
    ///
    /// # Safety
    /// `w` holds `64·steps` F16 values and `x` as many floats; the caller runs with AVX2, FMA
    /// and F16C.
    #[inline(always)]
    pub(crate) unsafe fn dot_steps(w: *const u8, x: *const f32, steps: usize) -> f32 {
        // SAFETY: as the caller guarantees.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; 4];
            for s in 0..steps {
                for (j, pair) in acc.iter_mut().enumerate() {
                    for (h, a) in pair.iter_mut().enumerate() {
                        let i = s * super::STEP + j * 16 + h * 8;
                        let wv = _mm256_cvtph_ps(_mm_loadu_si128(w.add(2 * i) as *const __m128i));
                        *a = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x.add(i)), *a);
                    }
                }
            }
            let lo = _mm256_add_ps(_mm256_add_ps(acc[0][0], acc[2][0]), _mm256_add_ps(acc[1][0], acc[3][0]));
            let hi = _mm256_add_ps(_mm256_add_ps(acc[0][1], acc[2][1]), _mm256_add_ps(acc[1][1], acc[3][1]));
            let t3 = _mm256_add_ps(hi, lo);
            let t6 = _mm_add_ps(_mm256_extractf128_ps::<1>(t3), _mm256_castps256_ps128(t3));
            let u = _mm_add_ps(t6, _mm_movehl_ps(t6, t6));
            _mm_cvtss_f32(_mm_add_ss(u, _mm_shuffle_ps::<1>(u, u)))
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn mad_f16(acc: &mut [f16], v: &[f16], s: f32) {
        let n = acc.len() / 8 * 8;
        // SAFETY: 8 values at i < n from both slices (v is at least as long as acc).
        unsafe {
            let sv = _mm256_set1_ps(s);
            for i in (0..n).step_by(8) {
                let a = _mm256_cvtph_ps(_mm_loadu_si128(acc.as_ptr().add(i) as *const __m128i));
                let x = _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().add(i) as *const __m128i));
                let r = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_fmadd_ps(x, sv, a));
                _mm_storeu_si128(acc.as_mut_ptr().add(i) as *mut __m128i, r);
            }
        }
        for (a, x) in acc[n..].iter_mut().zip(&v[n..]) {
            *a = f16::from_f32(x.to_f32().mul_add(s, a.to_f32()));
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn scale_f16(acc: &mut [f16], s: f32) {
        let n = acc.len() / 8 * 8;
        // SAFETY: 8 values at i < n.
        unsafe {
            let sv = _mm256_set1_ps(s);
            for i in (0..n).step_by(8) {
                let a = _mm256_cvtph_ps(_mm_loadu_si128(acc.as_ptr().add(i) as *const __m128i));
                let r = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_mul_ps(a, sv));
                _mm_storeu_si128(acc.as_mut_ptr().add(i) as *mut __m128i, r);
            }
        }
        for a in acc[n..].iter_mut() {
            *a = f16::from_f32(a.to_f32() * s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Every level returns the scalar reference's exact bits, on lengths with ragged
        /// tails; the dot product also stays close to f64 math.
        #[test]
        fn levels_agree_bit_for_bit(
            w in prop::collection::vec(-4.0f32..4.0, 1..150),
            s in -3.0f32..3.0,
        ) {
            let n = w.len();
            let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
            let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 19) as f32 - 9.0) / 4.0).collect();
            let want = dot_f16(Isa::Scalar, f16_bytes(&wh), &x);
            let exact: f64 = wh.iter().zip(&x).map(|(a, b)| f64::from(a.to_f32()) * f64::from(*b)).sum();
            prop_assert!((f64::from(want) - exact).abs() < 1e-3 * exact.abs().max(1.0));
            let mut acc_ref: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
            mad_f16(Isa::Scalar, &mut acc_ref, &wh, s);
            scale_f16(Isa::Scalar, &mut acc_ref, s * 0.5);
            for level in Isa::available() {
                prop_assert_eq!(dot_f16(level, f16_bytes(&wh), &x).to_bits(), want.to_bits());
                let mut acc: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
                mad_f16(level, &mut acc, &wh, s);
                scale_f16(level, &mut acc, s * 0.5);
                prop_assert_eq!(&acc, &acc_ref);
            }
        }
    }
}
