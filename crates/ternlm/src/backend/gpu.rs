//! The GPU backend: weights uploaded once at load, KV caches as F16 device buffers, and a
//! whole forward step (every layer of every segment) recorded into one submission, so the
//! only traffic per step is the token embeddings and rope table going up and the asked-for
//! logits coming back. The step is [`crate::forward`]'s, op for op, on `ternlm-gpu`'s kernels.

use std::any::Any;

use ternlm_gpu::{AttnShape, GateActivation, Gpu, GpuActs, GpuBlockActs, GpuBlockKind, GpuBlockMatrix, GpuError, GpuHalf, GpuTernary, GpuVec, MAX_HEAD_DIM, Recorder, RopePairs};
use ternlm_kernels::blockq::BlockKind;
use ternlm_kernels::ops::{RopeStyle, rope_cache};

use super::{Backend, KvStore, Logits, Segment};
use crate::arch::FfnActivation;
use crate::config::Config;
use crate::error::{ModelError, Result};
use crate::linear::Linear;
use crate::weights::{Embedding, Weights};

/// Tokens one submission runs at most; longer steps run as several, in order, so that
/// activation buffers stay far below the adapter's binding limit.
const MAX_STEP_TOKENS: usize = 256;
/// Positions a new cache has room for before it first grows (it doubles as needed).
const FIRST_KV_CAPACITY: usize = 256;

fn gpu_err(e: GpuError) -> ModelError {
    ModelError::Gpu(e.to_string())
}

/// A linear layer's weights on the device.
enum GpuLinear {
    Ternary(GpuTernary),
    Block(GpuBlockMatrix),
}

/// How a linear layer's input is prepared; layers with equal keys share the preparation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum InputKey {
    PerToken,
    Block(GpuBlockKind),
}

enum Prepared {
    PerToken(GpuActs),
    Block(GpuBlockActs),
}

impl GpuLinear {
    fn upload(gpu: &Gpu, name: &str, lin: &Linear) -> Result<Self> {
        let fail = |e: GpuError| ModelError::Gpu(format!("uploading {name}: {e}"));
        match lin {
            Linear::Ternary(m) => {
                let (packed, block_len, scales) = m.parts().ok_or_else(|| ModelError::Gpu(format!("{name}: the GPU takes ternary weights in the 2-bit layout only")))?;
                gpu.upload_ternary(m.rows(), m.cols(), packed, block_len, scales).map(Self::Ternary).map_err(fail)
            }
            Linear::Block(m) => {
                let kind = match m.kind() {
                    BlockKind::Q8_0 => GpuBlockKind::Q8_0,
                    BlockKind::Q4_0 => GpuBlockKind::Q4_0,
                    BlockKind::Q4_1 => GpuBlockKind::Q4_1,
                    BlockKind::F16 => GpuBlockKind::F16,
                    BlockKind::Q6K => GpuBlockKind::Q6K,
                    BlockKind::Q4K => GpuBlockKind::Q4K,
                    BlockKind::F32 => GpuBlockKind::F32,
                    BlockKind::BF16 => GpuBlockKind::BF16,
                };
                gpu.upload_block(kind, m.rows(), m.cols(), m.data()).map(Self::Block).map_err(fail)
            }
            Linear::Int8(_) => Err(ModelError::Gpu(format!("{name}: the int8 head is a CPU layout; the GPU keeps the head as stored"))),
        }
    }

    fn key(&self) -> InputKey {
        match self {
            Self::Ternary(_) => InputKey::PerToken,
            Self::Block(m) => InputKey::Block(m.kind()),
        }
    }

    fn cols(&self) -> usize {
        match self {
            Self::Ternary(m) => m.cols(),
            Self::Block(m) => m.cols(),
        }
    }

    /// Records `x · Wᵀ` for `n` rows of `x`, preparing `x` unless `prep` already holds it in
    /// this layer's form.
    fn record(&self, r: &mut Recorder<'_>, x: &GpuVec, n: usize, prep: &mut Vec<(InputKey, Prepared)>) -> ternlm_gpu::Result<GpuVec> {
        let key = self.key();
        if !prep.iter().any(|(k, _)| *k == key) {
            let p = match key {
                InputKey::PerToken => Prepared::PerToken(r.quantize_per_token(x, self.cols())?),
                InputKey::Block(kind) => Prepared::Block(r.prepare_block_acts(kind, x, n)?),
            };
            prep.push((key, p));
        }
        let Some((_, p)) = prep.iter().find(|(k, _)| *k == key) else { unreachable!("prepared just above") };
        match (self, p) {
            (Self::Ternary(w), Prepared::PerToken(a)) => r.gemm(w, a),
            (Self::Block(w), Prepared::Block(a)) => r.gemm_block(w, a),
            _ => unreachable!("the key matches the preparation"),
        }
    }
}

struct GpuLayer {
    attn_norm: GpuVec,
    wq: GpuLinear,
    wk: GpuLinear,
    wv: GpuLinear,
    wo: GpuLinear,
    attn_sub_norm: Option<GpuVec>,
    ffn_norm: GpuVec,
    w_gate: GpuLinear,
    w_up: GpuLinear,
    w_down: GpuLinear,
    ffn_sub_norm: Option<GpuVec>,
}

pub(crate) struct GpuBackend {
    config: Config,
    gpu: Gpu,
    embedding: Embedding,
    layers: Vec<GpuLayer>,
    output_norm: GpuVec,
    output: GpuLinear,
    rope_freqs: Option<Vec<f32>>,
    weight_bytes: usize,
}

/// One sequence's keys and values on the device: per layer an F16 buffer each, grown by
/// doubling up to `n_ctx` positions.
struct GpuKv {
    n_ctx: usize,
    kv_dim: usize,
    len: usize,
    /// Positions the buffers hold room for.
    capacity: usize,
    layers: Vec<(GpuHalf, GpuHalf)>,
    n_layer: usize,
}

impl KvStore for GpuKv {
    fn len(&self) -> usize {
        self.len
    }

    fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    fn bytes(&self) -> usize {
        self.layers.iter().map(|(k, v)| (k.bytes() + v.bytes()) as usize).sum()
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl GpuKv {
    /// Makes room for `end` positions, copying what is held into larger buffers.
    fn reserve_to(&mut self, gpu: &Gpu, end: usize) -> ternlm_gpu::Result<()> {
        if end <= self.capacity && !self.layers.is_empty() {
            return Ok(());
        }
        let mut cap = self.capacity.max(FIRST_KV_CAPACITY.min(self.n_ctx)).max(1);
        while cap < end {
            cap *= 2;
        }
        let cap = cap.min(self.n_ctx);
        let mut fresh = Vec::with_capacity(self.n_layer);
        for _ in 0..self.n_layer {
            fresh.push((gpu.alloc_half(cap * self.kv_dim)?, gpu.alloc_half(cap * self.kv_dim)?));
        }
        if self.len > 0 {
            let mut r = gpu.begin()?;
            for ((ok, ov), (nk, nv)) in self.layers.iter().zip(&fresh) {
                r.copy_half(ok, nk, self.len * self.kv_dim)?;
                r.copy_half(ov, nv, self.len * self.kv_dim)?;
            }
            r.submit()?;
        }
        self.layers = fresh;
        self.capacity = cap;
        Ok(())
    }
}

impl GpuBackend {
    /// Uploads `weights` (loaded in the 2-bit ternary layout with the head as stored) to
    /// `gpu`; the host copies are dropped when this returns.
    pub(crate) fn new(config: Config, weights: Weights, gpu: Gpu) -> Result<Self> {
        if config.head_dim > MAX_HEAD_DIM {
            return Err(ModelError::Gpu(format!("heads of {} values; the GPU attention takes at most {MAX_HEAD_DIM}", config.head_dim)));
        }
        if !config.kv_dim().is_multiple_of(2) {
            return Err(ModelError::Gpu(format!("K/V rows of {} values; the GPU cache packs pairs", config.kv_dim())));
        }
        let weight_bytes = weights.bytes_per_token();
        let vec = |name: &str, v: &[f32]| gpu.upload(v).map_err(|e| ModelError::Gpu(format!("uploading {name}: {e}")));
        let mut layers = Vec::with_capacity(weights.layers.len());
        for (i, l) in weights.layers.iter().enumerate() {
            let lin = |s: &str, m: &Linear| GpuLinear::upload(&gpu, &format!("blk.{i}.{s}.weight"), m);
            let opt = |s: &str, v: &Option<Vec<f32>>| v.as_deref().map(|v| vec(&format!("blk.{i}.{s}.weight"), v)).transpose();
            layers.push(GpuLayer {
                attn_norm: vec("attn_norm", &l.attn_norm)?,
                wq: lin("attn_q", &l.wq)?,
                wk: lin("attn_k", &l.wk)?,
                wv: lin("attn_v", &l.wv)?,
                wo: lin("attn_output", &l.wo)?,
                attn_sub_norm: opt("attn_sub_norm", &l.attn_sub_norm)?,
                ffn_norm: vec("ffn_norm", &l.ffn_norm)?,
                w_gate: lin("ffn_gate", &l.w_gate)?,
                w_up: lin("ffn_up", &l.w_up)?,
                w_down: lin("ffn_down", &l.w_down)?,
                ffn_sub_norm: opt("ffn_sub_norm", &l.ffn_sub_norm)?,
            });
        }
        let output_norm = vec("output_norm", &weights.output_norm)?;
        let output = GpuLinear::upload(&gpu, "output.weight", &weights.output)?;
        let Weights { embedding, rope_freqs, .. } = weights;
        Ok(Self { config, gpu, embedding, layers, output_norm, output, rope_freqs, weight_bytes })
    }

    /// The adapter, as `ternlm info --devices` names it.
    pub(crate) fn adapter(&self) -> &ternlm_gpu::AdapterInfo {
        self.gpu.info()
    }

    /// One submission: every segment's tokens through every layer, then the head for the
    /// rows that want logits, read back.
    fn run(&self, segs: &mut [(&mut GpuKv, &[u32], Logits)]) -> Result<Vec<Vec<f32>>> {
        let cfg = &self.config;
        let (d, q_dim, kv_dim, hd) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.head_dim);
        let mut starts = Vec::with_capacity(segs.len());
        let mut n = 0;
        for (kv, tokens, _) in segs.iter_mut() {
            starts.push((n, kv.len));
            n += tokens.len();
            kv.reserve_to(&self.gpu, kv.len + tokens.len()).map_err(gpu_err)?;
        }
        let mut x_host = vec![0f32; n * d];
        let mut table = Vec::with_capacity(n * cfg.rope_dims / 2);
        for ((_, tokens, _), &(row0, pos0)) in segs.iter().zip(&starts) {
            for (i, &t) in tokens.iter().enumerate() {
                self.embedding.lookup(t, &mut x_host[(row0 + i) * d..(row0 + i + 1) * d])?;
                rope_cache(pos0 + i, cfg.rope_dims, cfg.rope_base, self.rope_freqs.as_deref(), &mut table);
            }
        }
        let table: Vec<f32> = table.iter().flat_map(|&(c, s)| [c, s]).collect();
        let pairs = match cfg.arch.rope {
            RopeStyle::Interleaved => RopePairs::Interleaved,
            RopeStyle::Neox => RopePairs::Neox,
        };
        let act = match cfg.arch.ffn {
            FfnActivation::Silu => GateActivation::Silu,
            FfnActivation::Relu2 => GateActivation::Relu2,
        };
        let g = &self.gpu;
        let x = g.upload(&x_host).map_err(gpu_err)?;
        let cs = g.upload(&table).map_err(gpu_err)?;
        let mut r = g.begin().map_err(gpu_err)?;
        let eps = cfg.rms_eps;
        let mut picked = Vec::with_capacity(segs.len());
        let logits = (|| -> ternlm_gpu::Result<Vec<GpuVec>> {
            for (li, layer) in self.layers.iter().enumerate() {
                let h = r.rms_norm(&x, &layer.attn_norm, eps)?;
                let mut prep = Vec::new();
                let q = layer.wq.record(&mut r, &h, n, &mut prep)?;
                let k = layer.wk.record(&mut r, &h, n, &mut prep)?;
                let v = layer.wv.record(&mut r, &h, n, &mut prep)?;
                r.rope(&q, &cs, n, hd, pairs)?;
                r.rope(&k, &cs, n, hd, pairs)?;
                let mut attn = g.alloc(n * q_dim)?;
                for ((kv, tokens, _), &(row0, pos0)) in segs.iter().zip(&starts) {
                    let m = tokens.len();
                    let (kc, vc) = &kv.layers[li];
                    r.kv_write(&k, row0 * kv_dim, kc, pos0 * kv_dim, m * kv_dim)?;
                    r.kv_write(&v, row0 * kv_dim, vc, pos0 * kv_dim, m * kv_dim)?;
                    let shape = AttnShape { n_heads: cfg.n_head, n_kv_heads: cfg.n_head_kv, head_dim: hd, pos0, n_tokens: m, row0 };
                    r.attention(&q, kc, vc, &attn, shape)?;
                }
                if let Some(norm) = &layer.attn_sub_norm {
                    attn = r.rms_norm(&attn, norm, eps)?;
                }
                let proj = layer.wo.record(&mut r, &attn, n, &mut Vec::new())?;
                r.add(&x, &proj)?;

                let h = r.rms_norm(&x, &layer.ffn_norm, eps)?;
                let mut prep = Vec::new();
                let mut gate = layer.w_gate.record(&mut r, &h, n, &mut prep)?;
                let up = layer.w_up.record(&mut r, &h, n, &mut prep)?;
                r.gate(&gate, &up, act)?;
                if let Some(norm) = &layer.ffn_sub_norm {
                    gate = r.rms_norm(&gate, norm, eps)?;
                }
                let down = layer.w_down.record(&mut r, &gate, n, &mut Vec::new())?;
                r.add(&x, &down)?;
            }
            // The rows that need logits, gathered so the head is one product.
            let mut m = 0;
            for ((_, tokens, want), &(row0, _)) in segs.iter().zip(&starts) {
                let k = tokens.len();
                let (first, count) = match want {
                    Logits::Last => (row0 + k - 1, 1),
                    Logits::All => (row0, k),
                    Logits::None => (row0, 0),
                };
                picked.push((m, first, count));
                m += count;
            }
            if m == 0 {
                return Ok(Vec::new());
            }
            let rows = g.alloc(m * d)?;
            for &(at, first, count) in &picked {
                r.copy_rows(&x, first, &rows, at, count, d)?;
            }
            let h = r.rms_norm(&rows, &self.output_norm, eps)?;
            // Logits in groups of rows that each fit one binding (a large vocabulary times
            // many positions would not).
            let per = (g.binding_limit() / (cfg.n_vocab as u64 * 4)).max(1) as usize;
            let mut parts = Vec::with_capacity(m.div_ceil(per));
            for start in (0..m).step_by(per) {
                let count = per.min(m - start);
                let part = if count == m {
                    h.clone()
                } else {
                    let p = g.alloc(count * d)?;
                    r.copy_rows(&h, start, &p, 0, count, d)?;
                    p
                };
                parts.push(self.output.record(&mut r, &part, count, &mut Vec::new())?);
            }
            Ok(parts)
        })()
        .map_err(gpu_err)?;
        r.submit().map_err(gpu_err)?;
        let mut all = Vec::new();
        for part in &logits {
            all.extend(g.read(part).map_err(gpu_err)?);
        }
        for ((kv, tokens, _), &(_, pos0)) in segs.iter_mut().zip(&starts) {
            kv.len = pos0 + tokens.len();
        }
        let v = cfg.n_vocab;
        if let [_] = picked.as_slice() {
            return Ok(vec![all]);
        }
        Ok(picked.iter().map(|&(at, _, count)| all[at * v..(at + count) * v].to_vec()).collect())
    }
}

impl Backend for GpuBackend {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn new_kv(&self, n_ctx: usize) -> Box<dyn KvStore> {
        Box::new(GpuKv { n_ctx, kv_dim: self.config.kv_dim(), len: 0, capacity: 0, layers: Vec::new(), n_layer: self.config.n_layer })
    }

    fn forward(&self, segs: &mut [Segment<'_>]) -> Result<Vec<Vec<f32>>> {
        let cfg = &self.config;
        for seg in segs.iter() {
            super::check_segment(seg.tokens, seg.kv.len(), seg.kv.n_ctx(), cfg.n_vocab)?;
        }
        let mut kvs = Vec::with_capacity(segs.len());
        for seg in segs.iter_mut() {
            let kv = seg.kv.as_any_mut().downcast_mut::<GpuKv>().ok_or(ModelError::ForeignKv { backend: "gpu" })?;
            kvs.push((kv, seg.tokens, seg.logits));
        }
        if kvs.is_empty() {
            return Err(ModelError::EmptyPrompt);
        }
        let total: usize = kvs.iter().map(|k| k.1.len()).sum();
        if total <= MAX_STEP_TOKENS {
            return self.run(&mut kvs);
        }
        // A long step: each segment on its own, in slices, its logits gathered.
        let mut out = Vec::with_capacity(kvs.len());
        for (kv, tokens, want) in kvs {
            let mut rows = Vec::new();
            let slices = tokens.chunks(MAX_STEP_TOKENS).count();
            for (i, slice) in tokens.chunks(MAX_STEP_TOKENS).enumerate() {
                let last = i + 1 == slices;
                let w = match want {
                    Logits::All => Logits::All,
                    Logits::Last if last => Logits::Last,
                    _ => Logits::None,
                };
                let mut one = [(&mut *kv, slice, w)];
                rows.extend(self.run(&mut one)?.into_iter().flatten());
            }
            out.push(rows);
        }
        Ok(out)
    }

    fn threads(&self) -> usize {
        1
    }

    fn weight_bytes_per_step(&self) -> usize {
        self.weight_bytes
    }
}
