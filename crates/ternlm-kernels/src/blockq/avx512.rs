//! AVX-512 VNNI lanes for the 32-wide block kernels (Q4_0, Q4_1, Q8_0; the other block types
//! run at the AVX2 level). `vpdpbusd` on 256-bit vectors multiplies unsigned bytes by signed
//! ones and adds each group of four into an int32 lane: the lanes `maddubs` + `madd` give
//! (exact sums of the same products, with no int16 stage), in one instruction instead of two.
//! Everything around the lanes is the AVX2 level's code ([`super::avx2::q32_rows`]),
//! compiled here with AVX-512 VL, whose 32 vector registers hold the batch kernel's 16
//! accumulators and whose broadcast operands fold each token's scale into its FMA.

use std::arch::x86_64::*;

use super::avx2::{Q32, Q32Dot, Unpacked, q32_rows};
use crate::act_quant::QuantActs;
use crate::sync_out::SyncOut;

pub(crate) struct Vnni;

impl Q32Dot for Vnni {
    /// 32 vector registers: 16 accumulators and the block's operands.
    const GROUP: usize = 16;

    #[inline(always)]
    unsafe fn lanes<const K: u8>(w: Unpacked, x: *const i8) -> __m256i {
        // SAFETY: the caller bounds the 32 bytes at `x` and runs with AVX-512 VL and VNNI.
        // Signed weights carry their sign over to the activations (`|w|·sign(x, w)`), as at
        // the AVX2 level: offsetting them to unsigned instead costs a correction per token.
        unsafe {
            let xv = _mm256_loadu_si256(x as *const __m256i);
            let xv = if K == 1 { xv } else { _mm256_sign_epi8(xv, w[1]) };
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), w[0], xv)
        }
    }
}

/// [`q32_rows`] at the AVX-512 level.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn q32_rows_avx512(kind: Q32, w: &[u8], row_bytes: usize, rows: std::ops::Range<usize>, a: &QuantActs, out: SyncOut, out_rows: usize) {
    // SAFETY: this function runs with everything `Vnni` needs (AVX2, FMA, F16C, AVX-512 VL
    // and VNNI).
    unsafe { q32_rows::<Vnni>(kind, w, row_bytes, rows, a, out, out_rows) }
}
