//! The architectures ternlm runs. Each file describes one family: how its hyperparameters and
//! tensors are named in GGUF and which variant of the shared pre-norm transformer it is
//! (rope style, FFN activation, extra sub-norms). The forward pass itself is shared
//! (`crate::forward`), because the families differ only in these choices.

mod bitnet;
mod llama;

use ternlm_kernels::ops::RopeStyle;

use crate::error::{ModelError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnActivation {
    /// `silu(gate) * up`
    Silu,
    /// `relu(gate)^2 * up` (BitNet b1.58 2B-4T)
    Relu2,
}

/// What distinguishes one family from another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchSpec {
    /// The `general.architecture` value, which also prefixes the hyperparameter keys.
    pub name: String,
    pub rope: RopeStyle,
    pub ffn: FfnActivation,
    /// RMSNorms on the attention output before `Wo` and on the gated FFN before `Wdown`.
    pub sub_norms: bool,
}

impl ArchSpec {
    pub fn for_name(name: &str) -> Result<Self> {
        match name {
            "llama" => Ok(llama::spec()),
            "bitnet" => Ok(bitnet::spec_bitnet()),
            "bitnet-25" | "bitnet-b1.58" => Ok(bitnet::spec_b158(name)),
            other => Err(ModelError::UnknownArchitecture(other.to_string())),
        }
    }
}
