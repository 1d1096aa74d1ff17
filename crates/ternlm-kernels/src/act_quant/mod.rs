//! Int8 quantization of f32 activation rows, in the four forms the weight kernels consume:
//! - per token (BitNet's BitLinear: one scale per row, `s = 127 / max|x|`, ties to even);
//! - ggml's Q8_0 (per 32, f16 scale) and Q8_1 (Q8_0 plus the block sum times the scale);
//! - ggml's Q8_K (per 256, f32 scale, sums of every 16 values).
//!
//! Matching ggml's activation formats for ggml weight types keeps ternlm's logits within
//! rounding of llama.cpp's; BitNet's per-token form is the one its models were trained with.

#[cfg(target_arch = "x86_64")]
mod avx2;

use crate::aligned::AlignedI8;
use half::f16;

/// Values per partial sum kept for per-token activations (see [`QuantActs::bsums`]).
pub const PER_TOKEN_GROUP: usize = 128;

/// Which activation format a weight kernel wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActFormat {
    PerToken,
    Q8_0,
    Q8_1,
    Q8K,
}

impl ActFormat {
    pub fn block_len(self, k: usize) -> usize {
        match self {
            Self::PerToken => k,
            Self::Q8_0 | Self::Q8_1 => 32,
            Self::Q8K => 256,
        }
    }
}

/// Quantized activations for `n` rows of length `k`.
#[derive(Clone, Debug, Default)]
pub struct QuantActs {
    pub k: usize,
    pub n: usize,
    pub block_len: usize,
    /// `n * k` values, row-major.
    pub q: AlignedI8,
    /// One scale per block: `x ≈ q * d`.
    pub d: Vec<f32>,
    /// Q8_1 only: per block, `d * Σq` rounded through f16.
    pub s: Vec<f32>,
    /// Q8_K: per 16 values, `Σq`. Per token: per 128 values (the last group may be
    /// shorter), which ternary kernels subtract because they multiply by `t + 1`.
    pub bsums: Vec<i32>,
    /// Per token only: the multiplier `s = 127 / max|x|` itself (BitLinear divides by it).
    pub inv: Vec<f32>,
    /// Per token only: `Σq` over the whole row.
    pub tsum: Vec<i32>,
}

impl QuantActs {
    /// Quantizes `x` (`n` rows of `k`) into `self`, reusing its buffers.
    pub fn quantize(&mut self, format: ActFormat, x: &[f32], k: usize) {
        self.quantize_at(crate::isa::active(), format, x, k);
    }

    /// [`Self::quantize`] compiled for a given ISA level (all levels give identical results:
    /// the arithmetic is elementwise, and the level only lets the compiler use wider vectors
    /// and `vroundps` instead of a libm call per value).
    pub fn quantize_at(&mut self, level: crate::isa::Isa, format: ActFormat, x: &[f32], k: usize) {
        assert!(level <= crate::isa::Isa::detect(), "ISA level {level:?} is beyond this CPU");
        match level {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the level is at most the detected one (asserted above).
            crate::isa::Isa::Avx2 | crate::isa::Isa::Avx512 | crate::isa::Isa::Amx => unsafe { self.quantize_avx2(format, x, k) },
            _ => self.quantize_body(format, x, k),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn quantize_avx2(&mut self, format: ActFormat, x: &[f32], k: usize) {
        if matches!(format, ActFormat::Q8_0 | ActFormat::Q8_1) {
            self.shape(format, x, k);
            let s = if format == ActFormat::Q8_1 { Some(&mut self.s[..]) } else { None };
            // SAFETY: this function runs with AVX2 and F16C.
            unsafe { avx2::quantize_q8_blocks(x, &mut self.q, &mut self.d, s) };
            return;
        }
        if format == ActFormat::PerToken {
            self.shape(format, x, k);
            // SAFETY: this function runs with AVX2.
            self.per_token_rows(x, k, |xr, qr| unsafe { avx2::quantize_per_token(xr, qr) });
            return;
        }
        self.quantize_body(format, x, k);
    }

    /// The per-token form's rows, each quantized by `quantize_row` (which returns the
    /// multiplier), with their sums.
    #[inline(always)]
    fn per_token_rows(&mut self, x: &[f32], k: usize, quantize_row: impl Fn(&[f32], &mut [i8]) -> f32) {
        let n = self.n;
        self.inv.resize(n, 0.0);
        let groups = k.div_ceil(PER_TOKEN_GROUP);
        self.bsums.resize(n * groups, 0);
        self.tsum.resize(n, 0);
        for (r, (xr, qr)) in x.chunks_exact(k).zip(self.q.chunks_exact_mut(k)).enumerate() {
            let s = quantize_row(xr, qr);
            self.tsum[r] = qr.iter().map(|&v| i32::from(v)).sum();
            self.inv[r] = s;
            self.d[r] = 1.0 / s;
            for (g, c) in qr.chunks(PER_TOKEN_GROUP).enumerate() {
                self.bsums[r * groups + g] = c.iter().map(|&v| i32::from(v)).sum();
            }
        }
    }

    /// Sizes the buffers for `x` (`n` rows of `k`) in `format` and records the shape.
    #[inline(always)]
    fn shape(&mut self, format: ActFormat, x: &[f32], k: usize) {
        assert!(k > 0 && x.len().is_multiple_of(k), "activation length {} is not a multiple of {k}", x.len());
        let bl = format.block_len(k);
        assert!(k.is_multiple_of(bl), "row length {k} is not a multiple of block {bl}");
        self.k = k;
        self.n = x.len() / k;
        self.block_len = bl;
        self.q.resize(x.len());
        self.d.resize(x.len() / bl, 0.0);
        self.s.clear();
        self.bsums.clear();
        self.inv.clear();
        if format == ActFormat::Q8_1 {
            self.s.resize(x.len() / bl, 0.0);
        }
    }

    #[inline(always)]
    fn quantize_body(&mut self, format: ActFormat, x: &[f32], k: usize) {
        self.shape(format, x, k);
        match format {
            ActFormat::PerToken => self.per_token_rows(x, k, quantize_per_token),
            ActFormat::Q8_0 | ActFormat::Q8_1 => {
                for (b, (xb, qb)) in x.chunks_exact(32).zip(self.q.chunks_exact_mut(32)).enumerate() {
                    let (d, sum) = quantize_q8_0_block(xb, qb);
                    self.d[b] = f16::from_f32(d).to_f32();
                    if format == ActFormat::Q8_1 {
                        self.s[b] = f16::from_f32(d * sum as f32).to_f32();
                    }
                }
            }
            ActFormat::Q8K => {
                self.bsums.resize(x.len() / 16, 0);
                for (b, (xb, qb)) in x.chunks_exact(256).zip(self.q.chunks_exact_mut(256)).enumerate() {
                    self.d[b] = quantize_q8k_block(xb, qb);
                    for (j, c) in qb.chunks_exact(16).enumerate() {
                        self.bsums[b * 16 + j] = c.iter().map(|&v| i32::from(v)).sum();
                    }
                }
            }
        }
    }

    pub fn row(&self, t: usize) -> &[i8] {
        &self.q[t * self.k..(t + 1) * self.k]
    }

    /// The scales of row `t`'s blocks.
    pub fn row_d(&self, t: usize) -> &[f32] {
        let per = self.k / self.block_len;
        &self.d[t * per..(t + 1) * per]
    }
}

/// BitLinear's per-token quantization; returns the multiplier `s`.
#[inline(always)]
pub fn quantize_per_token(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0f32, |m, &v| m.max(v.abs()));
    let s = 127.0 / amax.max(1e-5);
    for (o, &v) in q.iter_mut().zip(x) {
        *o = (v * s).round_ties_even().clamp(-128.0, 127.0) as i8;
    }
    s
}

/// One Q8_0 block: returns the unrounded scale and the sum of the quantized values.
#[inline(always)]
pub(crate) fn quantize_q8_0_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    let amax = x.iter().fold(0f32, |m, &v| m.max(v.abs()));
    let d = amax / 127.0;
    // ggml's x86 quantizer multiplies by 127/max, not by 1/d: the two round differently.
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (o, &v) in q.iter_mut().zip(x) {
        *o = (v * id).round_ties_even() as i8;
        sum += i32::from(*o);
    }
    (d, sum)
}

/// One Q8_K block (ggml's reference): the scale is set by the signed value of largest
/// magnitude so that it maps to -127 exactly.
#[inline(always)]
fn quantize_q8k_block(x: &[f32], q: &mut [i8]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        q.fill(0);
        return 0.0;
    }
    let iscale = -127.0 / max;
    for (o, &v) in q.iter_mut().zip(x) {
        *o = (iscale * v).round_ties_even().min(127.0) as i8;
    }
    1.0 / iscale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_token_matches_bitlinear() {
        let x = [0.5f32, -1.0, 0.25, 0.0039370];
        let mut q = [0i8; 4];
        let s = quantize_per_token(&x, &mut q);
        assert_eq!(s, 127.0);
        assert_eq!(q, [64, -127, 32, 0]); // 63.5 -> 64 (even), 31.75 -> 32, 0.49999 -> 0
    }

    #[test]
    fn every_isa_level_quantizes_identically() {
        let x: Vec<f32> = (0..3 * 512).map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 37.0).collect();
        for f in [ActFormat::PerToken, ActFormat::Q8_0, ActFormat::Q8_1, ActFormat::Q8K] {
            let mut want = QuantActs::default();
            want.quantize_at(crate::isa::Isa::Scalar, f, &x, 512);
            for level in [crate::isa::Isa::Avx2, crate::isa::Isa::Avx512] {
                if level <= crate::isa::Isa::detect() {
                    let mut got = QuantActs::default();
                    got.quantize_at(level, f, &x, 512);
                    assert_eq!((&got.q, &got.d, &got.s, &got.bsums, &got.inv, &got.tsum), (&want.q, &want.d, &want.s, &want.bsums, &want.inv, &want.tsum), "{f:?} at {level:?}");
                }
            }
        }
    }

    proptest::proptest! {
        /// Q8_0/Q8_1 blocks and per-token rows from any bit patterns (NaN, infinities,
        /// subnormals, zeros among ordinary values) come out of every level identical to the
        /// scalar code.
        #[test]
        fn q8_blocks_agree_on_any_floats(
            bits in proptest::collection::vec(proptest::prelude::any::<u32>(), 32..=256),
            ordinary in proptest::prelude::any::<bool>(),
            k_blocks in 1usize..=2,
        ) {
            let k = 32 * k_blocks;
            let n = bits.len() / k;
            proptest::prop_assume!(n > 0);
            let x: Vec<f32> = bits[..n * k].iter().map(|&b| if ordinary && b % 7 != 0 { (b % 20001) as f32 / 1000.0 - 10.0 } else { f32::from_bits(b) }).collect();
            // Per-token rows take any length: the whole input as one ragged row, or rows of k.
            let all: Vec<f32> = bits.iter().map(|&b| if ordinary && b % 7 != 0 { (b % 20001) as f32 / 1000.0 - 10.0 } else { f32::from_bits(b) }).collect();
            for (f, x, k) in [(ActFormat::Q8_0, &x, k), (ActFormat::Q8_1, &x, k), (ActFormat::PerToken, &x, k), (ActFormat::PerToken, &all, all.len())] {
                let mut want = QuantActs::default();
                want.quantize_at(crate::isa::Isa::Scalar, f, x, k);
                for level in crate::isa::Isa::available() {
                    let mut got = QuantActs::default();
                    got.quantize_at(level, f, x, k);
                    let fb = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    proptest::prop_assert_eq!(&got.q, &want.q, "{:?} at {:?}", f, level);
                    proptest::prop_assert_eq!(fb(&got.d), fb(&want.d));
                    proptest::prop_assert_eq!(fb(&got.s), fb(&want.s));
                    proptest::prop_assert_eq!(fb(&got.inv), fb(&want.inv));
                    proptest::prop_assert_eq!((&got.bsums, &got.tsum), (&want.bsums, &want.tsum));
                }
            }
        }
    }

    #[test]
    fn q8k_maps_signed_max_to_minus_127() {
        let mut x = [0f32; 256];
        x[3] = 2.0;
        x[9] = -1.0;
        let mut a = QuantActs::default();
        a.quantize(ActFormat::Q8K, &x, 256);
        assert_eq!(a.q[3], -127);
        assert_eq!(a.q[9], 64); // 63.5 ties to even
        assert!((a.d[0] * -127.0 - 2.0).abs() < 1e-6);
        assert_eq!(a.bsums[0], -127 + 64);
    }

    #[test]
    fn q8_1_sum_is_scale_times_sum() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) / 7.0).collect();
        let mut a = QuantActs::default();
        a.quantize(ActFormat::Q8_1, &x, 64);
        for b in 0..2 {
            let sum: i32 = a.q[b * 32..b * 32 + 32].iter().map(|&v| i32::from(v)).sum();
            let d = x[b * 32..b * 32 + 32].iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            assert_eq!(a.s[b], f16::from_f32(d * sum as f32).to_f32());
        }
    }
}
