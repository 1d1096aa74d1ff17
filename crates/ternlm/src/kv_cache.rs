//! The KV cache: per layer, keys and values of every position so far, rows of
//! `n_head_kv * head_dim` F16 values (as llama.cpp keeps them). It grows as positions are
//! written (so a short run does not pay for the whole context) and is truncated to reuse a
//! shared prompt prefix.

use half::f16;

#[derive(Debug, Clone)]
pub struct KvCache {
    n_ctx: usize,
    row: usize,
    len: usize,
    k: Vec<Vec<f16>>,
    v: Vec<Vec<f16>>,
}

impl KvCache {
    pub fn new(n_layer: usize, n_ctx: usize, kv_dim: usize) -> Self {
        Self { n_ctx, row: kv_dim, len: 0, k: vec![Vec::new(); n_layer], v: vec![Vec::new(); n_layer] }
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Positions currently held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Forgets every position from `len` on.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Makes room for positions up to `end` in every layer.
    pub(crate) fn reserve_to(&mut self, end: usize) {
        debug_assert!(end <= self.n_ctx);
        let need = end * self.row;
        for buf in self.k.iter_mut().chain(self.v.iter_mut()) {
            if buf.len() < need {
                buf.resize(need, f16::ZERO);
            }
        }
    }

    /// Writes keys and values of `n` consecutive positions starting at `pos` for `layer`.
    pub(crate) fn write(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let start = pos * self.row;
        for (d, &s) in self.k[layer][start..start + k.len()].iter_mut().zip(k) {
            *d = f16::from_f32(s);
        }
        for (d, &s) in self.v[layer][start..start + v.len()].iter_mut().zip(v) {
            *d = f16::from_f32(s);
        }
    }

    pub(crate) fn layer(&self, layer: usize) -> (&[f16], &[f16]) {
        (&self.k[layer], &self.v[layer])
    }

    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len;
    }

    /// Bytes the cache holds now.
    pub fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|b| b.len() * 2).sum()
    }
}
