//! The forward pass shared by every architecture: a batch of consecutive tokens in, logits
//! out, the KV cache extended. Prefill runs a whole prompt as one batch (each weight row is
//! unpacked once for all tokens); decode is the same code with a batch of one.
//!
//! [`forward_batch`] runs several sequences in one step, each with its own KV cache: their
//! tokens are stacked into one activation matrix, so every linear layer is one matrix
//! product for all of them (what continuous batching in a server needs), while attention
//! runs per sequence over its own cache. Every row's arithmetic is independent of the other
//! rows, so a sequence's logits do not depend on what it is batched with.

use ternlm_kernels::ThreadPool;
use ternlm_kernels::attention::{AttnShape, attention};
use ternlm_kernels::ops::{relu2, rms_norm, rms_norm_inplace, rope, rope_cache, swiglu};

use crate::arch::FfnActivation;
use crate::backend::Logits;
use crate::config::Config;
use crate::error::{ModelError, Result};
use crate::kv_cache::KvCache;
use crate::linear::Prepared;
use crate::weights::Weights;

/// Reusable activation buffers, so decoding allocates nothing per token once warm.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    prep: Prepared,
    rope: Vec<(f32, f32)>,
}

fn sized(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    buf.resize(n, 0.0);
    &mut buf[..n]
}

/// One sequence's part of a batched step: its cache, the tokens to run after what the cache
/// holds, and which of their logits to return.
#[derive(Debug)]
pub(crate) struct Segment<'a> {
    pub(crate) cache: &'a mut KvCache,
    pub(crate) tokens: &'a [u32],
    pub(crate) logits: Logits,
}

/// Receives intermediate tensors of a step (see [`crate::Model::trace_forward`]): a name in
/// llama.cpp's graph naming (`attn_norm-3`) and the values, one row per token.
pub(crate) type TraceSink<'a> = Option<&'a mut dyn FnMut(&str, &[f32])>;

/// Hands `data` to the sink, if there is one; the name is only built when it is wanted.
fn emit(trace: &mut TraceSink<'_>, name: impl FnOnce() -> String, data: &[f32]) {
    if let Some(sink) = trace {
        sink(&name(), data);
    }
}

/// Runs every segment's tokens in one step and returns each segment's logits, in order.
/// Nothing is written to any cache unless every segment is valid.
pub(crate) fn forward_batch(cfg: &Config, w: &Weights, pool: &ThreadPool, segs: &mut [Segment<'_>], s: &mut Scratch, mut trace: TraceSink<'_>) -> Result<Vec<Vec<f32>>> {
    for seg in segs.iter() {
        crate::backend::check_segment(seg.tokens, seg.cache.len(), seg.cache.n_ctx(), cfg.n_vocab)?;
    }
    let (d, q_dim, kv_dim, ff, hd) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff, cfg.head_dim);
    // Row offset and first position of each segment.
    let mut starts = Vec::with_capacity(segs.len());
    let mut n = 0;
    for seg in segs.iter_mut() {
        starts.push((n, seg.cache.len()));
        n += seg.tokens.len();
        seg.cache.reserve_to(seg.cache.len() + seg.tokens.len());
    }
    if n == 0 {
        return Err(ModelError::EmptyPrompt);
    }

    sized(&mut s.x, n * d);
    for (seg, &(row0, _)) in segs.iter().zip(&starts) {
        for (i, &t) in seg.tokens.iter().enumerate() {
            w.embedding.lookup(t, &mut s.x[(row0 + i) * d..(row0 + i + 1) * d])?;
        }
    }
    emit(&mut trace, || "inp_embd".into(), &s.x);

    s.rope.clear();
    for (seg, &(_, pos0)) in segs.iter().zip(&starts) {
        for i in 0..seg.tokens.len() {
            rope_cache(pos0 + i, cfg.rope_dims, cfg.rope_base, w.rope_freqs.as_deref(), &mut s.rope);
        }
    }
    let half = cfg.rope_dims / 2;

    for (li, layer) in w.layers.iter().enumerate() {
        // Attention block.
        rms_norm(&s.x, &layer.attn_norm, cfg.rms_eps, sized(&mut s.h, n * d));
        emit(&mut trace, || format!("attn_norm-{li}"), &s.h);
        s.prep.invalidate();
        layer.wq.forward_shared(pool, &s.h, &mut s.prep, sized(&mut s.q, n * q_dim));
        layer.wk.forward_shared(pool, &s.h, &mut s.prep, sized(&mut s.k, n * kv_dim));
        layer.wv.forward_shared(pool, &s.h, &mut s.prep, sized(&mut s.v, n * kv_dim));
        for i in 0..n {
            let cs = &s.rope[i * half..(i + 1) * half];
            rope(&mut s.q[i * q_dim..(i + 1) * q_dim], hd, cfg.arch.rope, cs);
            rope(&mut s.k[i * kv_dim..(i + 1) * kv_dim], hd, cfg.arch.rope, cs);
        }
        emit(&mut trace, || format!("Qcur-{li}"), &s.q);
        emit(&mut trace, || format!("Kcur-{li}"), &s.k);
        emit(&mut trace, || format!("Vcur-{li}"), &s.v);
        sized(&mut s.attn, n * q_dim);
        for (seg, &(row0, pos0)) in segs.iter_mut().zip(&starts) {
            let m = seg.tokens.len();
            seg.cache.write(li, pos0, &s.k[row0 * kv_dim..(row0 + m) * kv_dim], &s.v[row0 * kv_dim..(row0 + m) * kv_dim]);
            let (kc, vc) = seg.cache.layer(li);
            let shape = AttnShape { n_heads: cfg.n_head, n_kv_heads: cfg.n_head_kv, head_dim: hd, pos0, n_tokens: m };
            attention(pool, shape, &s.q[row0 * q_dim..(row0 + m) * q_dim], kc, vc, &mut s.attn[row0 * q_dim..(row0 + m) * q_dim]);
        }
        emit(&mut trace, || format!("kqv_out-{li}"), &s.attn);
        if let Some(norm) = &layer.attn_sub_norm {
            rms_norm_inplace(&mut s.attn, norm, cfg.rms_eps);
        }
        layer.wo.forward(pool, &s.attn, &mut s.prep, sized(&mut s.proj, n * d));
        emit(&mut trace, || format!("attn_out-{li}"), &s.proj);
        for (x, p) in s.x.iter_mut().zip(&s.proj) {
            *x += p;
        }
        emit(&mut trace, || format!("ffn_inp-{li}"), &s.x);

        // Feed-forward block.
        rms_norm(&s.x, &layer.ffn_norm, cfg.rms_eps, sized(&mut s.h, n * d));
        emit(&mut trace, || format!("ffn_norm-{li}"), &s.h);
        s.prep.invalidate();
        layer.w_gate.forward_shared(pool, &s.h, &mut s.prep, sized(&mut s.gate, n * ff));
        layer.w_up.forward_shared(pool, &s.h, &mut s.prep, sized(&mut s.up, n * ff));
        // Elementwise, but `exp` per value adds up over a prefill batch: spread it.
        let (gate, up) = (&mut s.gate, &s.up);
        let chunk = if n > 1 { gate.len().div_ceil(pool.n_threads() * 4).max(1024) } else { gate.len().max(1) };
        let ffn = cfg.arch.ffn;
        pool.for_each_chunk_mut(gate, chunk, &|i, g| {
            let up = &up[i * chunk..];
            match ffn {
                FfnActivation::Silu => swiglu(g, up, ff, i * chunk),
                FfnActivation::Relu2 => {
                    for (g, u) in g.iter_mut().zip(up) {
                        *g = relu2(*g) * u;
                    }
                }
            }
        });
        emit(&mut trace, || format!("ffn_gate_par-{li}"), &s.gate);
        if let Some(norm) = &layer.ffn_sub_norm {
            rms_norm_inplace(&mut s.gate, norm, cfg.rms_eps);
        }
        layer.w_down.forward(pool, &s.gate, &mut s.prep, sized(&mut s.proj, n * d));
        emit(&mut trace, || format!("ffn_down-{li}"), &s.proj);
        for (x, p) in s.x.iter_mut().zip(&s.proj) {
            *x += p;
        }
        emit(&mut trace, || format!("l_out-{li}"), &s.x);
    }
    // The rows that need logits, gathered so the head is one matrix product too.
    let mut picked: Vec<(usize, usize)> = Vec::with_capacity(segs.len());
    let mut m = 0;
    for (seg, &(row0, pos0)) in segs.iter_mut().zip(&starts) {
        let k = seg.tokens.len();
        seg.cache.set_len(pos0 + k);
        let (first, count) = match seg.logits {
            Logits::Last => (row0 + k - 1, 1),
            Logits::All => (row0, k),
            Logits::None => (row0, 0),
        };
        picked.push((m, count));
        if m * d != first * d {
            s.x.copy_within(first * d..(first + count) * d, m * d);
        }
        m += count;
    }
    let mut logits = vec![0f32; m * cfg.n_vocab];
    if m > 0 {
        rms_norm(&s.x[..m * d], &w.output_norm, cfg.rms_eps, sized(&mut s.h, m * d));
        emit(&mut trace, || "result_norm".into(), &s.h);
        w.output.forward(pool, &s.h, &mut s.prep, &mut logits);
        emit(&mut trace, || "result_output".into(), &logits);
    }
    let v = cfg.n_vocab;
    if let [_] = picked.as_slice() {
        // One sequence (every session decode step): hand the logits over without a copy.
        return Ok(vec![logits]);
    }
    Ok(picked.iter().map(|&(at, count)| logits[at * v..(at + count) * v].to_vec()).collect())
}
