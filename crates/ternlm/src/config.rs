//! Hyperparameters read from GGUF metadata (`{arch}.*` keys) and checked for sanity before
//! anything is allocated from them, and written back as those keys for files ternlm makes.

use ternlm_format::{Metadata, MetadataValue as V};

use crate::arch::ArchSpec;
use crate::error::{ModelError, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub arch: ArchSpec,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub rope_dims: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
    pub n_ctx_train: usize,
}

fn bad(key: &str, reason: impl Into<String>) -> ModelError {
    ModelError::BadHyperparameter { key: key.to_string(), reason: reason.into() }
}

fn usize_key(md: &impl Metadata, key: &str, limit: u64) -> Result<Option<usize>> {
    match md.u64_of(key)? {
        None => Ok(None),
        Some(0) => Err(bad(key, "is zero")),
        Some(v) if v > limit => Err(bad(key, format!("{v} is implausibly large (limit {limit})"))),
        Some(v) => Ok(Some(v as usize)),
    }
}

impl Config {
    /// Reads the hyperparameters of the architecture named in `general.architecture`.
    /// `n_vocab_hint` is the tokenizer's size, used when the file has no `vocab_size`.
    pub fn from_metadata(md: &impl Metadata, n_vocab_hint: Option<usize>) -> Result<Self> {
        let arch_name = md.str_of("general.architecture")?.ok_or_else(|| ModelError::Format(ternlm_format::FormatError::MissingKey("general.architecture".into())))?;
        let arch = ArchSpec::for_name(arch_name)?;
        let k = |s: &str| format!("{arch_name}.{s}");
        let req = |key: String, limit: u64| -> Result<usize> { usize_key(md, &key, limit)?.ok_or_else(|| bad(&key, "is missing")) };
        let n_embd = req(k("embedding_length"), 1 << 16)?;
        let n_layer = req(k("block_count"), 1024)?;
        let n_ff = req(k("feed_forward_length"), 1 << 20)?;
        let n_head = req(k("attention.head_count"), 1024)?;
        let n_head_kv = usize_key(md, &k("attention.head_count_kv"), 1024)?.unwrap_or(n_head);
        if n_head % n_head_kv != 0 {
            return Err(bad(&k("attention.head_count_kv"), format!("{n_head_kv} does not divide {n_head} heads")));
        }
        let head_dim = match usize_key(md, &k("attention.key_length"), 1 << 12)? {
            Some(d) => d,
            None if n_embd % n_head == 0 => n_embd / n_head,
            None => return Err(bad(&k("attention.head_count"), format!("{n_head} heads do not divide width {n_embd}"))),
        };
        let rope_dims = usize_key(md, &k("rope.dimension_count"), 1 << 12)?.unwrap_or(head_dim);
        if rope_dims > head_dim || rope_dims % 2 != 0 {
            return Err(bad(&k("rope.dimension_count"), format!("{rope_dims} must be even and at most the head size {head_dim}")));
        }
        let rope_base = md.f64_of(&k("rope.freq_base"))?.unwrap_or(10000.0) as f32;
        if !(rope_base.is_finite() && rope_base > 0.0) {
            return Err(bad(&k("rope.freq_base"), format!("{rope_base} is not a positive number")));
        }
        let rms_eps = md.f64_of(&k("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5) as f32;
        if !(rms_eps.is_finite() && rms_eps > 0.0 && rms_eps < 1.0) {
            return Err(bad(&k("attention.layer_norm_rms_epsilon"), format!("{rms_eps} is out of range")));
        }
        let n_ctx_train = usize_key(md, &k("context_length"), 1 << 24)?.unwrap_or(4096);
        let n_vocab = match usize_key(md, &k("vocab_size"), 1 << 24)? {
            Some(v) => v,
            None => n_vocab_hint.ok_or_else(|| bad(&k("vocab_size"), "is missing and the file has no tokenizer"))?,
        };
        Ok(Self { arch, n_vocab, n_embd, n_layer, n_ff, n_head, n_head_kv, head_dim, rope_dims, rope_base, rms_eps, n_ctx_train })
    }

    /// The `{arch}.*` keys [`Self::from_metadata`] reads (the tokenizer's size included).
    pub fn to_metadata(&self) -> Vec<(String, V)> {
        let arch = &self.arch.name;
        let k = |key: &str| format!("{arch}.{key}");
        let u = |v: usize| V::U32(v as u32);
        vec![
            (k("context_length"), u(self.n_ctx_train)),
            (k("embedding_length"), u(self.n_embd)),
            (k("block_count"), u(self.n_layer)),
            (k("feed_forward_length"), u(self.n_ff)),
            (k("attention.head_count"), u(self.n_head)),
            (k("attention.head_count_kv"), u(self.n_head_kv)),
            (k("attention.key_length"), u(self.head_dim)),
            (k("attention.value_length"), u(self.head_dim)),
            (k("rope.dimension_count"), u(self.rope_dims)),
            (k("rope.freq_base"), V::F32(self.rope_base)),
            (k("attention.layer_norm_rms_epsilon"), V::F32(self.rms_eps)),
            (k("vocab_size"), u(self.n_vocab)),
        ]
    }

    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// Multiply-accumulates of one token at position `pos`: every linear layer, the output
    /// head, and attention's scores and value sums over the `pos + 1` positions it sees.
    pub fn macs_per_token(&self, pos: usize) -> u64 {
        let (d, q, kv, ff) = (self.n_embd as u64, self.q_dim() as u64, self.kv_dim() as u64, self.n_ff as u64);
        let linears = d * q + 2 * d * kv + q * d + 3 * d * ff;
        let attention = 2 * q * (pos as u64 + 1);
        self.n_layer as u64 * (linears + attention) + d * self.n_vocab as u64
    }

    /// Bytes of KV cache one position takes (keys and values of every layer, F16).
    pub fn kv_bytes_per_position(&self) -> u64 {
        2 * self.n_layer as u64 * self.kv_dim() as u64 * 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ArchSpec;

    #[test]
    fn metadata_round_trips() {
        let c = Config {
            arch: ArchSpec::for_name("bitnet-25").unwrap(),
            n_vocab: 300,
            n_embd: 256,
            n_layer: 2,
            n_ff: 512,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 64,
            rope_dims: 64,
            rope_base: 500000.0,
            rms_eps: 1e-5,
            n_ctx_train: 4096,
        };
        let mut md = c.to_metadata();
        md.push(("general.architecture".into(), V::String("bitnet-25".into())));
        let bytes = ternlm_format::gguf::writer::to_bytes(&md, &[]).unwrap();
        let view = ternlm_format::GgufView::parse(&bytes).unwrap();
        assert_eq!(Config::from_metadata(&view, None).unwrap(), c);
    }
}
