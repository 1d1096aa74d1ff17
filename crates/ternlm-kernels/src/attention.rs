//! Causal attention of a batch of query tokens over an F16 KV cache, with grouped-query
//! heads: query head `h` reads KV head `h / (n_heads / n_kv_heads)`.
//!
//! The arithmetic follows llama.cpp's CPU flash attention, the reference engine our fixtures
//! come from: queries are rounded to F16 like the cache, each score is ggml's F16 dot product
//! (see [`crate::f16_ops`]), and values are accumulated in F16 with one FMA per update under an online softmax (running maximum,
//! rescaling the accumulator when it grows). Matching it keeps greedy outputs token for token
//! identical on real models whose top logits lie close together; an F16 cache also halves
//! the cache's memory.

use std::cell::RefCell;

use half::f16;

use crate::f16_ops::{dot_f16, f16_bytes, mad_f16, scale_f16};
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
    let level = crate::isa::active();
    let kb = f16_bytes(k);
    pool.for_each(n_tokens * n_heads, &|task| {
        let (i, h) = (task / n_heads, task % n_heads);
        let kvh = h / group;
        let base = (i * n_heads + h) * hd;
        SCRATCH.with_borrow_mut(|(qh, acc)| {
            qh.clear();
            qh.extend(q[base..base + hd].iter().map(|&x| f16::from_f32(x).to_f32()));
            acc.clear();
            acc.resize(hd, f16::ZERO);
            let mut max = f32::NEG_INFINITY;
            let mut sum = 0f32;
            for p in 0..=pos0 + i {
                let off = p * kv_stride + kvh * hd;
                let s = dot_f16(level, &kb[2 * off..2 * (off + hd)], qh) * scale;
                let (ms, vs) = if s > max {
                    let ms = (max - s).exp();
                    max = s;
                    scale_f16(level, acc, ms);
                    (ms, 1.0)
                } else {
                    (1.0, (s - max).exp())
                };
                mad_f16(level, acc, &v[off..off + hd], vs);
                sum = sum * ms + vs;
            }
            for (d, a) in acc.iter().enumerate() {
                out.set(base + d, a.to_f32() / sum);
            }
        });
    });
}

thread_local! {
    /// Per-thread query and accumulator rows, so attention allocates nothing per call.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f16>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &[f32]) -> Vec<f16> {
        v.iter().map(|&x| f16::from_f32(x)).collect()
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
