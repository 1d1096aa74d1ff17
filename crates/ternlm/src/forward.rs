//! The forward pass shared by every architecture: a batch of consecutive tokens in, logits
//! out, the KV cache extended. Prefill runs a whole prompt as one batch (each weight row is
//! unpacked once for all tokens); decode is the same code with a batch of one.

use ternlm_kernels::ThreadPool;
use ternlm_kernels::attention::{AttnShape, attention};
use ternlm_kernels::ops::{relu2, rms_norm, rms_norm_inplace, rope, rope_cache, silu};

use crate::arch::FfnActivation;
use crate::config::Config;
use crate::error::{ModelError, Result};
use crate::kv_cache::KvCache;
use crate::linear::Prepared;
use crate::weights::Weights;

/// Which positions of the batch need logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    Last,
    All,
}

/// Reusable activation buffers, so decoding allocates nothing per token once warm.
#[derive(Debug, Default)]
pub struct Scratch {
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

/// Runs `tokens` at positions `cache.len()..` and returns logits (`n_vocab` per row asked).
pub fn forward(
    cfg: &Config,
    w: &Weights,
    pool: &ThreadPool,
    cache: &mut KvCache,
    tokens: &[u32],
    which: Logits,
    s: &mut Scratch,
) -> Result<Vec<f32>> {
    let n = tokens.len();
    if n == 0 {
        return Err(ModelError::EmptyPrompt);
    }
    let pos0 = cache.len();
    if pos0 + n > cache.n_ctx() {
        return Err(ModelError::ContextFull { ctx: cache.n_ctx() });
    }
    for &t in tokens {
        if t as usize >= cfg.n_vocab {
            return Err(ModelError::BadToken { id: t, n_vocab: cfg.n_vocab });
        }
    }
    let (d, q_dim, kv_dim, ff, hd) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff, cfg.head_dim);
    cache.reserve_to(pos0 + n);

    sized(&mut s.x, n * d);
    for (i, &t) in tokens.iter().enumerate() {
        w.embedding.lookup(t, &mut s.x[i * d..(i + 1) * d])?;
    }

    s.rope.clear();
    for i in 0..n {
        rope_cache(pos0 + i, cfg.rope_dims, cfg.rope_base, w.rope_freqs.as_deref(), &mut s.rope);
    }
    let half = cfg.rope_dims / 2;

    for (li, layer) in w.layers.iter().enumerate() {
        // Attention block.
        rms_norm(&s.x, &layer.attn_norm, cfg.rms_eps, sized(&mut s.h, n * d));
        s.prep.invalidate();
        layer.wq.forward_shared(pool, &s.h, &mut s.prep, sized(&mut s.q, n * q_dim));
        layer.wk.forward_shared(pool, &s.h, &mut s.prep, sized(&mut s.k, n * kv_dim));
        layer.wv.forward_shared(pool, &s.h, &mut s.prep, sized(&mut s.v, n * kv_dim));
        for i in 0..n {
            let cs = &s.rope[i * half..(i + 1) * half];
            rope(&mut s.q[i * q_dim..(i + 1) * q_dim], hd, cfg.arch.rope, cs);
            rope(&mut s.k[i * kv_dim..(i + 1) * kv_dim], hd, cfg.arch.rope, cs);
        }
        cache.write(li, pos0, &s.k, &s.v);
        let (kc, vc) = cache.layer(li);
        let shape = AttnShape { n_heads: cfg.n_head, n_kv_heads: cfg.n_head_kv, head_dim: hd, pos0, n_tokens: n };
        attention(pool, shape, &s.q, kc, vc, sized(&mut s.attn, n * q_dim));
        if let Some(norm) = &layer.attn_sub_norm {
            rms_norm_inplace(&mut s.attn, norm, cfg.rms_eps);
        }
        layer.wo.forward(pool, &s.attn, &mut s.prep, sized(&mut s.proj, n * d));
        for (x, p) in s.x.iter_mut().zip(&s.proj) {
            *x += p;
        }

        // Feed-forward block.
        rms_norm(&s.x, &layer.ffn_norm, cfg.rms_eps, sized(&mut s.h, n * d));
        s.prep.invalidate();
        layer.w_gate.forward_shared(pool, &s.h, &mut s.prep, sized(&mut s.gate, n * ff));
        layer.w_up.forward_shared(pool, &s.h, &mut s.prep, sized(&mut s.up, n * ff));
        let act: fn(f32) -> f32 = match cfg.arch.ffn {
            FfnActivation::Silu => silu,
            FfnActivation::Relu2 => relu2,
        };
        // Elementwise, but `exp` per value adds up over a prefill batch: spread it.
        let (gate, up) = (&mut s.gate, &s.up);
        let chunk = if n > 1 { gate.len().div_ceil(pool.n_threads() * 4).max(1024) } else { gate.len().max(1) };
        pool.for_each_chunk_mut(gate, chunk, &|i, g| {
            for (g, u) in g.iter_mut().zip(&up[i * chunk..]) {
                *g = act(*g) * u;
            }
        });
        if let Some(norm) = &layer.ffn_sub_norm {
            rms_norm_inplace(&mut s.gate, norm, cfg.rms_eps);
        }
        layer.w_down.forward(pool, &s.gate, &mut s.prep, sized(&mut s.proj, n * d));
        for (x, p) in s.x.iter_mut().zip(&s.proj) {
            *x += p;
        }
    }
    cache.set_len(pos0 + n);

    let rows = match which {
        Logits::Last => &s.x[(n - 1) * d..],
        Logits::All => &s.x[..],
    };
    let m = rows.len() / d;
    rms_norm(rows, &w.output_norm, cfg.rms_eps, sized(&mut s.h, m * d));
    let mut logits = vec![0f32; m * cfg.n_vocab];
    w.output.forward(pool, &s.h, &mut s.prep, &mut logits);
    Ok(logits)
}
