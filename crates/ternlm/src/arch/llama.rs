//! `llama`: SmolLM2, LLaMA-family GGUF models and ternary LLaMA-shaped models
//! (Falcon3-1.58bit, Llama3-8B-1.58 in TQ types). SiLU-gated FFN, no sub-norms, and the
//! interleaved rope that llama.cpp applies to GGUF llama models (their Q/K rows are permuted
//! at conversion).

use ternlm_kernels::ops::RopeStyle;

use super::{ArchSpec, FfnActivation};

pub(super) fn spec() -> ArchSpec {
    ArchSpec { name: "llama".into(), rope: RopeStyle::Interleaved, ffn: FfnActivation::Silu, sub_norms: false }
}
