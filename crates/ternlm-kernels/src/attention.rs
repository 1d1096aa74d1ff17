//! Causal attention of a batch of query tokens over an F16 KV cache, with grouped-query
//! heads: query head `h` reads KV head `h / (n_heads / n_kv_heads)`.
//!
//! The arithmetic follows llama.cpp's CPU flash attention, the reference engine our fixtures
//! come from: queries are rounded to F16 like the cache, each score is ggml's F16 dot product
//! (see [`crate::f16_ops`]), and values are accumulated in F16 with one FMA per update under
//! an online softmax (running maximum, rescaling the accumulator when it grows; the sum
//! updated with one FMA, as GCC compiles ggml's), and the result is scaled by `1/sum`. Every
//! rounding matters: a one-ULP difference here moves an int8 activation of the next matrix
//! product by a whole step (README, "Numerics"). An F16 cache also halves the cache's memory.

use std::cell::RefCell;

use half::f16;

use crate::f16_ops::{dot_f16, f16_bytes, mad_f16, scale_f16};
use crate::isa::Isa;
use crate::pool::ThreadPool;
use crate::sync_out::SyncOut;

/// Shapes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Position of the first query token; query `i` attends to cache rows `0..=pos0 + i`.
    pub pos0: usize,
    pub n_tokens: usize,
}

/// `q`: `n_tokens x n_heads x head_dim`; `k`, `v`: cache rows `(pos, kv_head, head_dim)`
/// holding at least `pos0 + n_tokens` positions; `out`: like `q`.
pub fn attention(pool: &ThreadPool, shape: AttnShape, q: &[f32], k: &[f16], v: &[f16], out: &mut [f32]) {
    attention_at(crate::isa::active(), pool, shape, q, k, v, out);
}

/// [`attention`] at a given ISA level, which must not exceed [`Isa::detect`] (tests compare
/// the levels, which return the same bits).
pub fn attention_at(level: Isa, pool: &ThreadPool, shape: AttnShape, q: &[f32], k: &[f16], v: &[f16], out: &mut [f32]) {
    assert!(level <= Isa::detect(), "{} is not available on this CPU", level.name());
    let AttnShape { n_heads, n_kv_heads, head_dim: hd, pos0, n_tokens } = shape;
    assert!(n_kv_heads > 0 && n_heads % n_kv_heads == 0);
    let kv_stride = n_kv_heads * hd;
    let n_pos = pos0 + n_tokens;
    assert!(k.len() >= n_pos * kv_stride && v.len() >= n_pos * kv_stride);
    assert_eq!(q.len(), n_tokens * n_heads * hd);
    assert_eq!(out.len(), q.len());
    let group = n_heads / n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let out = SyncOut::new(out);
    let kb = f16_bytes(k);
    pool.for_each(n_tokens * n_heads, &|task| {
        let (i, h) = (task / n_heads, task % n_heads);
        let base = (i * n_heads + h) * hd;
        let head = Head { k: kb, v, kv_stride, col0: (h / group) * hd, hd, n_pos: pos0 + i + 1, scale };
        SCRATCH.with_borrow_mut(|sc| {
            sc.q.clear();
            sc.q.extend(q[base..base + hd].iter().map(|&x| f16::from_f32(x).to_f32()));
            #[cfg(target_arch = "x86_64")]
            if level >= Isa::Avx2 && hd % avx2::DIMS == 0 {
                // SAFETY: the level is at most the detected one, which has AVX2, FMA and F16C;
                // the asserts above bound every cache row the head reads.
                unsafe { avx2::head(&head, sc, out, base) };
                return;
            }
            head_portable(level, &head, sc, out, base);
        });
    });
}

/// One query head's view of the cache: rows `0..n_pos`, columns `col0..col0 + hd` of each.
struct Head<'a> {
    /// The key cache as raw F16 bytes.
    k: &'a [u8],
    v: &'a [f16],
    kv_stride: usize,
    col0: usize,
    hd: usize,
    n_pos: usize,
    scale: f32,
}

/// The reference: per position, a score, the online-softmax update, one F16 FMA pass.
fn head_portable(level: Isa, head: &Head<'_>, sc: &mut Scratch, out: SyncOut, base: usize) {
    let hd = head.hd;
    sc.acc.clear();
    sc.acc.resize(hd, f16::ZERO);
    let mut softmax = OnlineSoftmax::new();
    for p in 0..head.n_pos {
        let off = p * head.kv_stride + head.col0;
        let s = dot_f16(level, &head.k[2 * off..2 * (off + hd)], &sc.q) * head.scale;
        let (ms, vs) = softmax.push(s);
        if ms != 1.0 {
            scale_f16(level, &mut sc.acc, ms);
        }
        mad_f16(level, &mut sc.acc, &head.v[off..off + hd], vs);
    }
    // ggml scales by the reciprocal rather than dividing: the two round differently.
    let inv = 1.0 / softmax.sum;
    for (d, a) in sc.acc.iter().enumerate() {
        out.set(base + d, a.to_f32() * inv);
    }
}

/// The online softmax's running maximum and normalizer, one score at a time.
struct OnlineSoftmax {
    max: f32,
    sum: f32,
}

impl OnlineSoftmax {
    fn new() -> Self {
        Self { max: f32::NEG_INFINITY, sum: 0.0 }
    }

    /// Takes score `s`; returns the factor the accumulator is rescaled by first (1 when the
    /// maximum holds: scaling F16 values by 1 leaves them as they are, so it is skipped) and
    /// the weight of this position's value.
    #[inline(always)]
    fn push(&mut self, s: f32) -> (f32, f32) {
        let (ms, vs) = if s > self.max {
            let ms = (self.max - s).exp();
            self.max = s;
            (ms, 1.0)
        } else {
            (1.0, (s - self.max).exp())
        };
        // Fused, as GCC contracts ggml's `S = S*ms + vs`.
        self.sum = self.sum.mul_add(ms, vs);
        (ms, vs)
    }
}

/// Per-thread rows, so attention allocates nothing per call once they have grown.
#[derive(Default)]
struct Scratch {
    /// The query rounded to F16 values.
    q: Vec<f32>,
    /// The portable path's F16 value accumulator.
    acc: Vec<f16>,
    /// The SIMD path's per-position scores, then value weights.
    weight: Vec<f32>,
    /// The SIMD path's per-position accumulator rescale (1 where the maximum held).
    rescale: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// The same arithmetic as [`head_portable`] in three passes: every score (ggml's F16 dot
/// product with its reduction done in registers), then the online softmax's scalar
/// recurrence in position order, then the value accumulation with 64 dimensions of the F16
/// accumulator held in registers across all positions (rounded to F16 after every update,
/// as when it lives in memory). Each dimension sees the same updates in the same order, so
/// the result is bit for bit the reference's.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Head, OnlineSoftmax, Scratch};
    use crate::f16_ops::avx2::dot_steps;
    use crate::sync_out::SyncOut;

    /// Head dimensions per register block: one step of ggml's F16 dot product.
    pub(super) const DIMS: usize = crate::f16_ops::STEP;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn head(head: &Head<'_>, sc: &mut Scratch, out: SyncOut, base: usize) {
        let (hd, n) = (head.hd, head.n_pos);
        debug_assert!(hd % DIMS == 0 && sc.q.len() == hd);
        debug_assert!(head.k.len() >= 2 * ((n - 1) * head.kv_stride + head.col0 + hd));
        debug_assert!(head.v.len() >= (n - 1) * head.kv_stride + head.col0 + hd);
        sc.weight.clear();
        sc.rescale.clear();
        // SAFETY: (all blocks below) AVX2, FMA and F16C are enabled; position p < n_pos reads
        // hd values from column col0 of its row, inside both caches (the caller asserted
        // they hold n_pos rows of kv_stride values, and col0 + hd <= kv_stride).
        for p in 0..n {
            let kp = unsafe { head.k.as_ptr().add(2 * (p * head.kv_stride + head.col0)) };
            let s = unsafe { dot_steps(kp, sc.q.as_ptr(), hd / DIMS) } * head.scale;
            sc.weight.push(s);
        }
        let mut softmax = OnlineSoftmax::new();
        for w in sc.weight.iter_mut() {
            let (ms, vs) = softmax.push(*w);
            sc.rescale.push(ms);
            *w = vs;
        }
        let inv = _mm256_set1_ps(1.0 / softmax.sum);
        for b in (0..hd).step_by(DIMS) {
            let mut lanes = [0f32; DIMS];
            unsafe {
                let mut acc = [_mm256_setzero_ps(); DIMS / 8];
                for p in 0..n {
                    let ms = *sc.rescale.get_unchecked(p);
                    if ms != 1.0 {
                        let m = _mm256_set1_ps(ms);
                        for a in acc.iter_mut() {
                            *a = round_f16(_mm256_mul_ps(*a, m));
                        }
                    }
                    let vs = _mm256_set1_ps(*sc.weight.get_unchecked(p));
                    let vp = head.v.as_ptr().add(p * head.kv_stride + head.col0 + b) as *const __m128i;
                    for (j, a) in acc.iter_mut().enumerate() {
                        let x = _mm256_cvtph_ps(_mm_loadu_si128(vp.add(j)));
                        *a = round_f16(_mm256_fmadd_ps(x, vs, *a));
                    }
                }
                for (j, a) in acc.iter().enumerate() {
                    _mm256_storeu_ps(lanes.as_mut_ptr().add(8 * j), _mm256_mul_ps(*a, inv));
                }
            }
            for (d, y) in lanes.iter().enumerate() {
                out.set(base + b + d, *y);
            }
        }
    }

    /// The nearest F16 value, as f32 (what storing to and loading from an F16 row gives).
    #[inline(always)]
    unsafe fn round_f16(x: __m256) -> __m256 {
        // SAFETY: the callers run with F16C enabled.
        unsafe { _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &[f32]) -> Vec<f16> {
        v.iter().map(|&x| f16::from_f32(x)).collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Every level returns the reference's bits: head sizes that the SIMD path takes
        /// (multiples of 64) and ones it leaves to the reference, grouped-query heads, several
        /// query tokens at an offset, and scores spread wide enough that the running maximum
        /// moves and the F16 accumulator is rescaled often.
        #[test]
        fn levels_agree_bit_for_bit(
            hd in proptest::prop_oneof![proptest::strategy::Just(64usize), proptest::strategy::Just(128), 1usize..80],
            kv_heads in 1usize..3,
            group in 1usize..4,
            pos0 in 0usize..70,
            n_tokens in 1usize..4,
            spread in 0.1f32..6.0,
            seed in 0u32..1000,
        ) {
            let heads = kv_heads * group;
            let n_pos = pos0 + n_tokens;
            let wave = |n: usize, f: f32| -> Vec<f32> { (0..n).map(|i| ((i as f32 + seed as f32) * f).sin() * spread).collect() };
            let q = wave(n_tokens * heads * hd, 0.37);
            let k = h(&wave(n_pos * kv_heads * hd, 0.113));
            let v = h(&wave(n_pos * kv_heads * hd, 0.071));
            let shape = AttnShape { n_heads: heads, n_kv_heads: kv_heads, head_dim: hd, pos0, n_tokens };
            let pool = ThreadPool::new(2);
            let mut want = vec![0f32; q.len()];
            attention_at(Isa::Scalar, &pool, shape, &q, &k, &v, &mut want);
            for level in Isa::available() {
                let mut got = vec![0f32; q.len()];
                attention_at(level, &pool, shape, &q, &k, &v, &mut got);
                let bits = |x: &[f32]| x.iter().map(|y| y.to_bits()).collect::<Vec<_>>();
                proptest::prop_assert_eq!(bits(&got), bits(&want), "{}", level.name());
            }
        }
    }

    #[test]
    fn single_position_returns_its_value() {
        let shape = AttnShape { n_heads: 2, n_kv_heads: 1, head_dim: 2, pos0: 0, n_tokens: 1 };
        let q = [1.0, 0.0, 0.0, 1.0];
        let mut out = [0f32; 4];
        attention(&ThreadPool::new(1), shape, &q, &h(&[0.3, 0.7]), &h(&[5.0, -1.0]), &mut out);
        assert_eq!(out, [5.0, -1.0, 5.0, -1.0]);
    }

    #[test]
    fn causal_mask_hides_the_future() {
        // Two tokens at once; token 0 must not see position 1's value.
        let shape = AttnShape { n_heads: 1, n_kv_heads: 1, head_dim: 1, pos0: 0, n_tokens: 2 };
        let mut out = [0f32; 2];
        attention(&ThreadPool::new(2), shape, &[1.0, 1.0], &h(&[0.0, 0.0]), &h(&[2.0, 4.0]), &mut out);
        assert_eq!(out, [2.0, 3.0]);
    }

    #[test]
    fn online_softmax_matches_the_two_pass_form() {
        let (hd, n) = (8, 37);
        let q: Vec<f32> = (0..hd).map(|i| (i as f32 * 0.7).sin()).collect();
        let k: Vec<f32> = (0..n * hd).map(|i| (i as f32 * 0.31).cos()).collect();
        let v: Vec<f32> = (0..n * hd).map(|i| (i as f32 * 0.13).sin() * 3.0).collect();
        let shape = AttnShape { n_heads: 1, n_kv_heads: 1, head_dim: hd, pos0: n - 1, n_tokens: 1 };
        let mut out = vec![0f32; hd];
        attention(&ThreadPool::new(1), shape, &q, &h(&k), &h(&v), &mut out);
        let s: Vec<f32> = (0..n).map(|p| (0..hd).map(|d| q[d] * k[p * hd + d]).sum::<f32>() / (hd as f32).sqrt()).collect();
        let m = s.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let w: Vec<f32> = s.iter().map(|x| (x - m).exp()).collect();
        let z: f32 = w.iter().sum();
        for d in 0..hd {
            let want: f32 = (0..n).map(|p| w[p] * v[p * hd + d]).sum::<f32>() / z;
            assert!((out[d] - want).abs() < 2e-2, "dim {d}: {} vs {want}", out[d]);
        }
    }
}
