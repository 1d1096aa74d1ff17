//! `config.json` of a Hugging Face checkpoint: which family it is (BitNet b1.58 2B-4T,
//! 1bitLLM bitnet, LLaMA with or without BitNet quantization), its hyperparameters, and how
//! its ternary linears are to be read. Everything the GGUF side needs is decided here, so
//! the tensor conversion only follows instructions.

use std::path::Path;

use serde_json::Value;

use super::hf_err;
use crate::error::{ModelError, Result};

/// The checkpoint families ternlm reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `BitNetForCausalLM`: microsoft/bitnet-b1.58-2B-4T (packed) and its bf16 master.
    BitNetB158,
    /// `BitnetForCausalLM`: 1bitLLM bitnet_b1_58 (fp16 latent weights).
    Bitnet1bitLlm,
    /// `LlamaForCausalLM`; ternary when `quantization_config.quant_method` is `bitnet`.
    Llama,
}

/// How stored ternary scales relate to the output (transformers' two BitLinear classes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearClass {
    /// `autobitlinear`: `y = (xq·w)/s * weight_scale`.
    AutoBitLinear,
    /// `bitlinear` (the default): `y = (xq·w)/s / weight_scale`.
    BitLinear,
}

/// The LLaMA-3 rope frequency correction (`rope_scaling.rope_type == "llama3"`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3Rope {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position_embeddings: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HfConfig {
    pub architecture: String,
    pub family: Family,
    /// The GGUF `general.architecture` this becomes.
    pub gguf_arch: &'static str,
    /// Whether the linear layers are ternary (BitLinear) rather than plain float.
    pub ternary: bool,
    pub linear_class: LinearClass,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub rope_llama3: Option<Llama3Rope>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

fn ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect(),
        _ => Vec::new(),
    }
}

impl HfConfig {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| hf_err(&path, format!("cannot read: {e}")))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| hf_err(&path, format!("is not valid JSON: {e}")))?;
        Self::from_json(&v, &path)
    }

    pub fn from_json(v: &Value, path: &Path) -> Result<Self> {
        let err = |reason: String| hf_err(path, reason);
        let architecture = v.get("architectures").and_then(|a| a.as_array()).and_then(|a| a.first()).and_then(|a| a.as_str()).ok_or_else(|| err("has no \"architectures\" list".into()))?.to_string();
        let usize_of = |key: &str, limit: u64| -> Result<Option<usize>> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => match x.as_u64() {
                    Some(0) => Err(err(format!("{key} is zero"))),
                    Some(n) if n <= limit => Ok(Some(n as usize)),
                    _ => Err(err(format!("{key} = {x} is not a positive integer up to {limit}"))),
                },
            }
        };
        let need = |key: &str, limit: u64| usize_of(key, limit)?.ok_or_else(|| err(format!("has no {key}")));
        let f32_of = |key: &str, default: f32| -> Result<f32> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x.as_f64().map(|f| f as f32).filter(|f| f.is_finite() && *f > 0.0).ok_or_else(|| err(format!("{key} = {x} is not a positive number"))),
            }
        };
        let quant = v.get("quantization_config").filter(|q| !q.is_null());
        let quant_str = |key: &str| quant.and_then(|q| q.get(key)).and_then(|s| s.as_str());
        let act = v.get("hidden_act").and_then(|a| a.as_str()).unwrap_or("silu");
        let (family, gguf_arch, ternary) = match architecture.as_str() {
            "BitNetForCausalLM" => match act {
                "relu2" => (Family::BitNetB158, "bitnet-25", true),
                "silu" => (Family::BitNetB158, "bitnet", true),
                other => return Err(err(format!("hidden_act {other:?} is not supported for {architecture} (relu2 or silu)"))),
            },
            "BitnetForCausalLM" => (Family::Bitnet1bitLlm, "bitnet", true),
            "LlamaForCausalLM" => {
                if act != "silu" {
                    return Err(err(format!("hidden_act {act:?} is not supported for LlamaForCausalLM (silu)")));
                }
                let ternary = match quant_str("quant_method") {
                    None => false,
                    Some("bitnet") => true,
                    Some(other) => return Err(err(format!("quantization_config.quant_method {other:?} is not supported (bitnet, or none)"))),
                };
                (Family::Llama, "llama", ternary)
            }
            other => {
                return Err(ModelError::UnknownArchitecture(format!("{other} (in {}; ternlm reads BitNetForCausalLM, BitnetForCausalLM and LlamaForCausalLM)", path.display())));
            }
        };
        if family == Family::Bitnet1bitLlm && act != "silu" {
            return Err(err(format!("hidden_act {act:?} is not supported for {architecture} (silu)")));
        }
        let linear_class = match quant_str("linear_class") {
            None | Some("bitlinear") => LinearClass::BitLinear,
            Some("autobitlinear") => LinearClass::AutoBitLinear,
            Some(other) => return Err(err(format!("quantization_config.linear_class {other:?} is not supported (bitlinear or autobitlinear)"))),
        };
        if quant.and_then(|q| q.get("use_rms_norm")).and_then(|b| b.as_bool()) == Some(true) {
            return Err(err("quantization_config.use_rms_norm (an RMSNorm inside every BitLinear) is not supported".into()));
        }
        for key in ["attention_bias", "mlp_bias"] {
            if v.get(key).and_then(|b| b.as_bool()) == Some(true) {
                return Err(err(format!("{key} is true: linear biases are not supported")));
            }
        }
        let hidden_size = need("hidden_size", 1 << 16)?;
        let num_heads = need("num_attention_heads", 1024)?;
        let num_kv_heads = usize_of("num_key_value_heads", 1024)?.unwrap_or(num_heads);
        if num_heads % num_kv_heads != 0 {
            return Err(err(format!("num_key_value_heads {num_kv_heads} does not divide num_attention_heads {num_heads}")));
        }
        let head_dim = match usize_of("head_dim", 1 << 12)? {
            Some(d) => d,
            None if hidden_size % num_heads == 0 => hidden_size / num_heads,
            None => return Err(err(format!("num_attention_heads {num_heads} does not divide hidden_size {hidden_size}"))),
        };
        if head_dim % 2 != 0 {
            return Err(err(format!("head_dim {head_dim} is odd; rope needs pairs")));
        }
        let rope_llama3 = match v.get("rope_scaling").filter(|r| !r.is_null()) {
            None => None,
            Some(r) => {
                let kind = r.get("rope_type").or_else(|| r.get("type")).and_then(|t| t.as_str()).unwrap_or("");
                let num = |k: &str| r.get(k).and_then(|x| x.as_f64()).map(|x| x as f32).ok_or_else(|| err(format!("rope_scaling.{k} is missing")));
                match kind {
                    "default" => None,
                    "llama3" => Some(Llama3Rope {
                        factor: num("factor")?,
                        low_freq_factor: num("low_freq_factor")?,
                        high_freq_factor: num("high_freq_factor")?,
                        original_max_position_embeddings: num("original_max_position_embeddings")?,
                    }),
                    other => return Err(err(format!("rope_scaling type {other:?} is not supported (llama3, or none)"))),
                }
            }
        };
        Ok(Self {
            architecture,
            family,
            gguf_arch,
            ternary,
            linear_class,
            vocab_size: need("vocab_size", 1 << 24)?,
            hidden_size,
            intermediate_size: need("intermediate_size", 1 << 20)?,
            num_layers: need("num_hidden_layers", 1024)?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: f32_of("rms_norm_eps", 1e-6)?,
            rope_theta: f32_of("rope_theta", 10000.0)?,
            max_position_embeddings: usize_of("max_position_embeddings", 1 << 24)?.unwrap_or(2048),
            tie_word_embeddings: v.get("tie_word_embeddings").and_then(|b| b.as_bool()).unwrap_or(false),
            rope_llama3,
            bos_token_id: ids(v.get("bos_token_id")).first().copied(),
            eos_token_ids: ids(v.get("eos_token_id")),
        })
    }

    /// Names of the sub-norms (attention output, gated FFN) in this family's checkpoints.
    pub fn sub_norm_names(&self) -> Option<(&'static str, &'static str)> {
        match self.family {
            Family::BitNetB158 => Some(("self_attn.attn_sub_norm", "mlp.ffn_sub_norm")),
            Family::Bitnet1bitLlm => Some(("self_attn.inner_attn_ln", "mlp.ffn_layernorm")),
            Family::Llama => None,
        }
    }

    /// GGUF llama models carry Q and K rows permuted for the interleaved rope llama.cpp
    /// applies; the bitnet architectures rotate halves (NeoX) and keep HF's order.
    pub fn permute_qk(&self) -> bool {
        self.gguf_arch == "llama"
    }

    /// Per-dimension rope frequency divisors (GGUF `rope_freqs.weight`) for LLaMA-3 scaling.
    pub fn rope_freqs(&self) -> Option<Vec<f32>> {
        let r = self.rope_llama3?;
        let low_wavelen = r.original_max_position_embeddings / r.low_freq_factor;
        let high_wavelen = r.original_max_position_embeddings / r.high_freq_factor;
        Some(
            (0..self.head_dim / 2)
                .map(|i| {
                    let freq = 1.0 / self.rope_theta.powf(2.0 * i as f32 / self.head_dim as f32);
                    let wavelen = 2.0 * std::f32::consts::PI / freq;
                    if wavelen < high_wavelen {
                        1.0
                    } else if wavelen > low_wavelen {
                        r.factor
                    } else {
                        let smooth = (r.original_max_position_embeddings / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
                        1.0 / ((1.0 - smooth) / r.factor + smooth)
                    }
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<HfConfig> {
        HfConfig::from_json(&serde_json::from_str(s).unwrap(), Path::new("config.json"))
    }

    #[test]
    fn families_and_linear_classes() {
        let c = parse(r#"{"architectures":["BitNetForCausalLM"],"hidden_act":"relu2","hidden_size":256,"intermediate_size":512,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":300,"quantization_config":{"quant_method":"bitnet","linear_class":"autobitlinear"}}"#).unwrap();
        assert_eq!((c.family, c.gguf_arch, c.ternary, c.linear_class), (Family::BitNetB158, "bitnet-25", true, LinearClass::AutoBitLinear));
        assert_eq!(c.head_dim, 64);
        let c = parse(r#"{"architectures":["LlamaForCausalLM"],"hidden_size":256,"intermediate_size":512,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":300,"quantization_config":{"quant_method":"bitnet"}}"#).unwrap();
        assert_eq!((c.family, c.ternary, c.linear_class, c.permute_qk()), (Family::Llama, true, LinearClass::BitLinear, true));
    }

    #[test]
    fn unknown_architectures_and_bad_values_are_named() {
        let e = parse(r#"{"architectures":["MambaForCausalLM"]}"#).unwrap_err().to_string();
        assert!(e.contains("MambaForCausalLM"), "{e}");
        let e = parse(r#"{"architectures":["LlamaForCausalLM"],"hidden_size":0}"#).unwrap_err().to_string();
        assert!(e.contains("hidden_size") && e.contains("config.json"), "{e}");
    }
}
