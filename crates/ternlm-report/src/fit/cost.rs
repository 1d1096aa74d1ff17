//! What one token of a model costs, from the file's header alone (no weights are loaded, so
//! costing a 10 GB model is instant): the bytes a decode step reads, the multiply-accumulates
//! it does, the KV cache it adds, and the memory the run needs.
//!
//! The header gives the hyperparameters, the parameter count and the bytes per tensor type,
//! not which tensor is which. Whether the output head is tied to the embedding is therefore
//! told from the parameter count: the layers' linear weights are known from the shapes, and
//! what is left is one embedding-sized matrix (tied) or two (untied).

use std::path::Path;

use ternlm::{Config, ModelFileInfo, WeightType};

use super::error::FitError;

/// Memory the runtime needs besides weights, KV cache and activations: the binary, the
/// tokenizer, thread stacks and allocator slack. A round figure above what was measured:
/// the peak resident set of `ternlm bench -p 16 -n 16 -t 2` exceeded the model file by
/// 30 MB on SmolLM2-135M Q4_1 (128 MB against 98 MB) and by 1.5 MB on the 2B-4T-shaped
/// dummy (1184 MB against 1182 MB). An estimate, not a bound.
pub const RUNTIME_BASE_BYTES: u64 = 64 << 20;

/// One model's cost per token.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelCost {
    /// `general.name`, or the file name.
    pub name: String,
    pub n_layer: usize,
    pub n_vocab: usize,
    pub n_embd: usize,
    /// The training context, the default context of a prediction (capped).
    pub n_ctx_train: usize,
    /// Bytes of all tensors (the mapped weights).
    pub weight_bytes: u64,
    /// Weight bytes one decode step reads: every layer's linear weights and norms, the head
    /// (a tied head reads the whole embedding), one embedding row.
    pub bytes_per_token: u64,
    /// Multiply-accumulates of one decode step apart from attention: the layers' linear
    /// weights (q, k, v, o, gate, up, down) and the head (n_embd x n_vocab).
    pub macs_per_token: u64,
    /// Attention MACs per position attended to: 2 x n_head x head_dim per layer (scores and
    /// the weighted sum of values).
    pub attn_macs_per_position: u64,
    /// KV cache bytes per position: keys and values of every layer, F16.
    pub kv_bytes_per_position: u64,
    /// Whether the head is the embedding (told from the parameter count).
    pub tied_head: bool,
    /// Whether any weights are ternary: their kernels reach a different share of the int8
    /// rate ([`super::calibration::Efficiency::compute`]).
    pub ternary: bool,
    /// Bytes of each tensor type holding at least 5% of the file, largest first: the
    /// kernels decode spends its time in (`fit --hardware this` times each).
    pub main_types: Vec<(WeightType, u64)>,
    /// Activation bytes of one decode step, apart from attention scores (which grow with
    /// the context: [`Self::activation_bytes`]).
    pub activation_bytes_base: u64,
    /// Query heads: one row of attention scores each.
    pub n_head: usize,
}

impl ModelCost {
    /// Reads `path`'s header (a checkpoint folder is converted in memory on `threads`
    /// threads first, as loading it would).
    pub fn from_file(path: &Path, threads: usize) -> Result<Self, FitError> {
        let info = ModelFileInfo::open(path, threads)?;
        let name = match info.name()? {
            Some(n) if !n.trim().is_empty() => n.trim().to_string(),
            _ => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        // The tokenizer's size stands in for a vocabulary the hyperparameters do not state.
        let cfg = match info.config(None) {
            Ok(c) => c,
            Err(first) => match info.tokenizer() {
                Ok(tok) => info.config(Some(tok.n_vocab()))?,
                Err(_) => return Err(first.into()),
            },
        };
        let types = info.tensor_types();
        let tensor_bytes: u64 = types.iter().map(|t| t.bytes).sum();
        let mut main_types: Vec<(WeightType, u64)> = types.iter().filter(|t| t.bytes * 20 >= tensor_bytes).map(|t| (t.ty, t.bytes)).collect();
        main_types.sort_by_key(|&(_, b)| std::cmp::Reverse(b));
        Ok(Self { ternary: info.has_ternary_tensors(), main_types, ..Self::from_parts(name, &cfg, info.param_count(), tensor_bytes)? })
    }

    /// The cost of a model of shape `cfg` with `params` elements in `tensor_bytes` bytes of
    /// tensors, taken to be all ternary I2_S (set [`Self::ternary`] and
    /// [`Self::main_types`] otherwise).
    pub fn from_parts(name: String, cfg: &Config, params: u64, tensor_bytes: u64) -> Result<Self, FitError> {
        let d = cfg.n_embd as u64;
        // The model crate's count: attention grows by one position's worth from `pos` to
        // `pos + 1`, and position 0 attends to one position.
        let attn_macs_per_position = cfg.macs_per_token(1) - cfg.macs_per_token(0);
        let embd = cfg.n_vocab as u64 * d;
        let linear = cfg.macs_per_token(0) - attn_macs_per_position - embd;
        if params < linear + embd || tensor_bytes == 0 {
            return Err(FitError::BadModel(format!("{name}: {params} parameters are fewer than its shapes need ({})", linear + embd)));
        }
        // Norms are a few thousand elements a layer; an untied head adds a second
        // embedding-sized matrix, so half an embedding is a safe dividing line.
        let tied_head = params - linear < embd + embd / 2;
        let bytes_per_token = if tied_head {
            tensor_bytes
        } else {
            // The embedding's own type is not in the header's summary: its bytes are
            // estimated at the file's mean bytes per element. Only one row of it is read.
            let embd_bytes = (embd as f64 * tensor_bytes as f64 / params as f64) as u64;
            tensor_bytes.saturating_sub(embd_bytes) + embd_bytes / cfg.n_vocab as u64
        };
        let activation_bytes_base = 4 * (4 * d + cfg.q_dim() as u64 + 2 * cfg.kv_dim() as u64 + 2 * cfg.n_ff as u64 + cfg.n_vocab as u64);
        Ok(Self {
            name,
            n_layer: cfg.n_layer,
            n_vocab: cfg.n_vocab,
            n_embd: cfg.n_embd,
            n_ctx_train: cfg.n_ctx_train,
            weight_bytes: tensor_bytes,
            bytes_per_token,
            macs_per_token: linear + embd,
            attn_macs_per_position,
            kv_bytes_per_position: cfg.kv_bytes_per_position(),
            tied_head,
            ternary: true,
            main_types: vec![(WeightType::I2S, tensor_bytes)],
            activation_bytes_base,
            n_head: cfg.n_head,
        })
    }

    /// Bytes a decode step at position `pos` reads: the weights and the KV cache so far.
    pub fn decode_bytes_at(&self, pos: usize) -> f64 {
        self.bytes_per_token as f64 + self.kv_bytes_per_position as f64 * pos as f64
    }

    /// MACs of a decode step at position `pos`.
    pub fn decode_macs_at(&self, pos: usize) -> f64 {
        self.macs_per_token as f64 + self.attn_macs_per_position as f64 * pos as f64
    }

    /// KV cache bytes for `ctx` positions.
    pub fn kv_bytes(&self, ctx: usize) -> u64 {
        // Saturating: an absurd --ctx must read as "does not fit", not wrap around.
        self.kv_bytes_per_position.saturating_mul(ctx as u64)
    }

    /// Activation bytes of a decode step with `ctx` positions: the per-layer scratch, the
    /// logits and one head's attention scores per query head.
    pub fn activation_bytes(&self, ctx: usize) -> u64 {
        self.activation_bytes_base.saturating_add((4 * self.n_head as u64).saturating_mul(ctx as u64))
    }

    /// Everything besides weights and KV cache: [`RUNTIME_BASE_BYTES`] and activations.
    pub fn runtime_bytes(&self, ctx: usize) -> u64 {
        RUNTIME_BASE_BYTES.saturating_add(self.activation_bytes(ctx))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// BitNet b1.58 2B-4T's shape.
    pub(crate) fn cfg_2b4t() -> Config {
        Config {
            arch: ternlm::arch::ArchSpec::for_name("bitnet-25").unwrap(),
            n_vocab: 128256,
            n_embd: 2560,
            n_layer: 30,
            n_ff: 6912,
            n_head: 20,
            n_head_kv: 5,
            head_dim: 128,
            rope_dims: 128,
            rope_base: 500000.0,
            rms_eps: 1e-5,
            n_ctx_train: 4096,
        }
    }

    #[test]
    fn shapes_give_macs_kv_and_a_tied_or_untied_head() {
        let cfg = cfg_2b4t();
        let linear: u64 = 30 * (2560 * 2560 * 2 + 2 * 2560 * 640 + 3 * 2560 * 6912);
        let embd: u64 = 128256 * 2560;
        let tied = ModelCost::from_parts("m".into(), &cfg, linear + embd + 30 * 20000, 1_200_000_000).unwrap();
        assert!(tied.tied_head);
        assert_eq!(tied.macs_per_token, linear + embd);
        assert_eq!(tied.bytes_per_token, 1_200_000_000);
        assert_eq!(tied.kv_bytes_per_position, 2 * 30 * 640 * 2);
        assert_eq!(tied.attn_macs_per_position, 2 * 30 * 2560);
        assert_eq!(tied.decode_bytes_at(10), 1.2e9 + 10.0 * (2 * 30 * 640 * 2) as f64);
        let untied = ModelCost::from_parts("m".into(), &cfg, linear + 2 * embd, 2_000_000_000).unwrap();
        assert!(!untied.tied_head);
        assert!(untied.bytes_per_token < 2_000_000_000 && untied.bytes_per_token > 1_000_000_000);
        assert!(ModelCost::from_parts("m".into(), &cfg, 1000, 1000).is_err());
    }
}
