//! All of a model's weights, loaded from GGUF by the standard tensor names and checked
//! against the hyperparameters: token embedding, per-layer norms and linears, output norm
//! and head (its own `output.weight`, or tied to the embedding).

use std::sync::Arc;

use ternlm_format::dequant::dequantize_row;
use ternlm_format::{GgufFile, TensorInfo};
use ternlm_kernels::ThreadPool;

use crate::config::Config;
use crate::error::{Result, bad_tensor};
use crate::linear::Linear;

/// The token embedding table, read row by row in whatever type it is stored.
#[derive(Debug)]
pub struct Embedding {
    file: Arc<GgufFile>,
    info: TensorInfo,
}

impl Embedding {
    fn load(file: &Arc<GgufFile>, n_embd: usize, n_vocab: usize) -> Result<Self> {
        let info = file.view().require_tensor("token_embd.weight")?.clone();
        if info.dims != [n_embd as u64, n_vocab as u64] {
            return Err(bad_tensor(&info.name, format!("has shape {}, expected [{n_embd}, {n_vocab}]", info.shape_string())));
        }
        Ok(Self { file: file.clone(), info })
    }

    /// Writes the embedding of `token` (already checked to be in range) into `out`.
    pub fn lookup(&self, token: u32, out: &mut [f32]) -> Result<()> {
        let info = &self.info;
        dequantize_row(info.ty, self.file.data(info), info.row_len(), info.n_elements() as usize, token as usize, &info.name, out)?;
        Ok(())
    }

    pub fn info(&self) -> &TensorInfo {
        &self.info
    }
}

#[derive(Debug)]
pub struct Layer {
    pub attn_norm: Vec<f32>,
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Linear,
    pub wo: Linear,
    pub attn_sub_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Linear,
    pub w_up: Linear,
    pub w_down: Linear,
    pub ffn_sub_norm: Option<Vec<f32>>,
}

#[derive(Debug)]
pub struct Weights {
    pub embedding: Embedding,
    pub layers: Vec<Layer>,
    pub output_norm: Vec<f32>,
    pub output: Linear,
    /// LLaMA-3.1-style per-dimension rope frequency divisors, when the file has them.
    pub rope_freqs: Option<Vec<f32>>,
}

/// A 1-D f32 vector of length `n` (norm weights and the like), in any float-like type.
fn vector(file: &GgufFile, name: &str, n: usize) -> Result<Vec<f32>> {
    let info = file.view().require_tensor(name)?;
    vector_of(file, info, n)
}

fn vector_of(file: &GgufFile, info: &TensorInfo, n: usize) -> Result<Vec<f32>> {
    if info.dims != [n as u64] {
        return Err(bad_tensor(&info.name, format!("has shape {}, expected [{n}]", info.shape_string())));
    }
    let mut v = vec![0f32; n];
    dequantize_row(info.ty, file.data(info), n, n, 0, &info.name, &mut v)?;
    if v.iter().any(|x| !x.is_finite()) {
        return Err(bad_tensor(&info.name, "holds a non-finite value"));
    }
    Ok(v)
}

impl Weights {
    /// Bytes of weights one decode step reads: every linear layer, the output head, the
    /// norms and one embedding row. This is the traffic decode speed is bound by.
    pub fn bytes_per_token(&self) -> usize {
        let vec_bytes = |v: &Option<Vec<f32>>| v.as_ref().map_or(0, |v| v.len() * 4);
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down].iter().map(|m| m.bytes()).sum::<usize>()
                    + (l.attn_norm.len() + l.ffn_norm.len()) * 4
                    + vec_bytes(&l.attn_sub_norm)
                    + vec_bytes(&l.ffn_sub_norm)
            })
            .sum();
        let info = self.embedding.info();
        let embd_row = (info.size / info.dims.get(1).copied().unwrap_or(1).max(1)) as usize;
        layers + self.output.bytes() + self.output_norm.len() * 4 + embd_row
    }

    pub fn load(file: &Arc<GgufFile>, cfg: &Config, pool: &ThreadPool, opts: &crate::LoadOptions) -> Result<Self> {
        let (d, ff, q, kv) = (cfg.n_embd, cfg.n_ff, cfg.q_dim(), cfg.kv_dim());
        let embedding = Embedding::load(file, d, cfg.n_vocab)?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let t = |s: &str| format!("blk.{i}.{s}.weight");
            let lin = |s: &str, cols, rows| Linear::load(file, pool, &t(s), cols, rows);
            let sub = |s: &str, n| if cfg.arch.sub_norms { vector(file, &t(s), n).map(Some) } else { Ok(None) };
            layers.push(Layer {
                attn_norm: vector(file, &t("attn_norm"), d)?,
                wq: lin("attn_q", d, q)?,
                wk: lin("attn_k", d, kv)?,
                wv: lin("attn_v", d, kv)?,
                wo: lin("attn_output", q, d)?,
                attn_sub_norm: sub("attn_sub_norm", d)?,
                ffn_norm: vector(file, &t("ffn_norm"), d)?,
                w_gate: lin("ffn_gate", d, ff)?,
                w_up: lin("ffn_up", d, ff)?,
                w_down: lin("ffn_down", ff, d)?,
                ffn_sub_norm: sub("ffn_sub_norm", ff)?,
            });
        }
        let output_norm = vector(file, "output_norm.weight", d)?;
        let output = match file.view().tensor("output.weight") {
            Some(_) => Linear::load(file, pool, "output.weight", d, cfg.n_vocab)?,
            None => Linear::from_tensor(file, pool, embedding.info())?,
        };
        let mut layers = layers;
        let mut output = output;
        if opts.ternary_layout != crate::TernaryLayout::Bits2 {
            for l in &mut layers {
                for m in [&mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo, &mut l.w_gate, &mut l.w_up, &mut l.w_down] {
                    m.relayout(pool, opts.ternary_layout.into());
                }
            }
        }
        if opts.int8_head {
            output = output.to_int8(pool);
        }
        let rope_freqs = match file.view().tensor("rope_freqs.weight") {
            Some(info) => Some(vector_of(file, info, cfg.rope_dims / 2)?),
            None => None,
        };
        Ok(Self { embedding, layers, output_norm, output, rope_freqs })
    }
}
