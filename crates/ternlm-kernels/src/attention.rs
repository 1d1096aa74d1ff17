//! Causal attention of a batch of query tokens over a KV cache, with grouped-query heads:
//! query head `h` reads KV head `h / (n_heads / n_kv_heads)`.

use crate::ops::softmax;
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
pub fn attention(pool: &ThreadPool, shape: AttnShape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
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
    pool.for_each(n_tokens * n_heads, &|task| {
        let (i, h) = (task / n_heads, task % n_heads);
        let kvh = h / group;
        let qh = &q[(i * n_heads + h) * hd..][..hd];
        let len = pos0 + i + 1;
        let mut scores: Vec<f32> = (0..len)
            .map(|p| {
                let kr = &k[p * kv_stride + kvh * hd..][..hd];
                qh.iter().zip(kr).map(|(a, b)| a * b).sum::<f32>() * scale
            })
            .collect();
        softmax(&mut scores);
        let mut acc = vec![0f32; hd];
        for (p, &w) in scores.iter().enumerate() {
            let vr = &v[p * kv_stride + kvh * hd..][..hd];
            for (a, &x) in acc.iter_mut().zip(vr) {
                *a += w * x;
            }
        }
        let base = (i * n_heads + h) * hd;
        for (d, a) in acc.into_iter().enumerate() {
            out.set(base + d, a);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_position_returns_its_value() {
        let shape = AttnShape { n_heads: 2, n_kv_heads: 1, head_dim: 2, pos0: 0, n_tokens: 1 };
        let q = [1.0, 0.0, 0.0, 1.0];
        let k = [0.3, 0.7];
        let v = [5.0, -1.0];
        let mut out = [0f32; 4];
        attention(&ThreadPool::new(1), shape, &q, &k, &v, &mut out);
        assert_eq!(out, [5.0, -1.0, 5.0, -1.0]);
    }

    #[test]
    fn causal_mask_hides_the_future() {
        // Two tokens at once; token 0 must not see position 1's value.
        let shape = AttnShape { n_heads: 1, n_kv_heads: 1, head_dim: 1, pos0: 0, n_tokens: 2 };
        let q = [1.0, 1.0];
        let k = [0.0, 0.0];
        let v = [2.0, 4.0];
        let mut out = [0f32; 2];
        attention(&ThreadPool::new(2), shape, &q, &k, &v, &mut out);
        assert_eq!(out, [2.0, 3.0]);
    }
}
