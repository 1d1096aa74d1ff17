//! The CPU backend: weights in kernel layout in host memory, KV caches as F16 rows
//! ([`KvCache`]), the forward pass of [`crate::forward`] on the model's thread pool.

use std::any::Any;
use std::sync::{Arc, Mutex};

use ternlm_kernels::ThreadPool;

use super::{Backend, KvStore, Segment};
use crate::config::Config;
use crate::error::{ModelError, Result};
use crate::forward::{self, Scratch};
use crate::kv_cache::KvCache;
use crate::weights::Weights;

pub(crate) struct CpuBackend {
    config: Config,
    weights: Weights,
    pool: Arc<ThreadPool>,
    /// Activation buffers of finished steps, so a warm step allocates nothing; one per
    /// concurrent caller (a session and a server can share a model).
    scratch: Mutex<Vec<Scratch>>,
}

impl CpuBackend {
    pub(crate) fn new(config: Config, weights: Weights, pool: Arc<ThreadPool>) -> Self {
        Self { config, weights, pool, scratch: Mutex::new(Vec::new()) }
    }
}

impl KvStore for KvCache {
    fn len(&self) -> usize {
        KvCache::len(self)
    }

    fn n_ctx(&self) -> usize {
        KvCache::n_ctx(self)
    }

    fn truncate(&mut self, len: usize) {
        KvCache::truncate(self, len);
    }

    fn bytes(&self) -> usize {
        KvCache::bytes(self)
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn new_kv(&self, n_ctx: usize) -> Box<dyn KvStore> {
        Box::new(KvCache::new(self.config.n_layer, n_ctx, self.config.kv_dim()))
    }

    fn forward(&self, segs: &mut [Segment<'_>]) -> Result<Vec<Vec<f32>>> {
        let mut cpu = Vec::with_capacity(segs.len());
        for seg in segs.iter_mut() {
            let cache = seg.kv.as_any_mut().downcast_mut::<KvCache>().ok_or(ModelError::ForeignKv { backend: "cpu" })?;
            cpu.push(forward::Segment { cache, tokens: seg.tokens, logits: seg.logits });
        }
        let mut scratch = self.scratch.lock().ok().and_then(|mut s| s.pop()).unwrap_or_default();
        let out = forward::forward_batch(&self.config, &self.weights, &self.pool, &mut cpu, &mut scratch, None);
        if let Ok(mut s) = self.scratch.lock() {
            s.push(scratch);
        }
        out
    }

    fn kernel_levels(&self) -> Vec<(&'static str, &'static str)> {
        let level = ternlm_kernels::isa::active();
        let w = &self.weights;
        let linears = w.layers.iter().flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]).chain([&w.output]);
        let mut out: Vec<(&'static str, &'static str)> = Vec::new();
        for (name, at) in linears.map(|m| m.kernel(level)) {
            if !out.iter().any(|&(n, _)| n == name) {
                out.push((name, at));
            }
        }
        out
    }

    fn forward_traced(&self, tokens: &[u32], sink: &mut dyn FnMut(&str, &[f32])) -> Result<Vec<f32>> {
        let mut cache = KvCache::new(self.config.n_layer, tokens.len().max(1), self.config.kv_dim());
        let mut segs = [forward::Segment { cache: &mut cache, tokens, logits: crate::backend::Logits::All }];
        let mut out = forward::forward_batch(&self.config, &self.weights, &self.pool, &mut segs, &mut Scratch::default(), Some(sink))?;
        Ok(out.pop().unwrap_or_default())
    }

    fn threads(&self) -> usize {
        self.pool.n_threads()
    }

    fn weight_bytes_per_step(&self) -> usize {
        self.weights.bytes_per_token()
    }
}
