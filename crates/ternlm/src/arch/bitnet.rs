//! The BitNet families. `bitnet` is 1bitLLM's bitnet_b1_58 (llama.cpp's `bitnet` graph):
//! llama plus sub-norms, SiLU gate. `bitnet-25` / `bitnet-b1.58` is microsoft's
//! bitnet-b1.58-2B-4T: the same with a squared-ReLU gate. Both rotate with NeoX-style rope.

use ternlm_kernels::ops::RopeStyle;

use super::{ArchSpec, FfnActivation};

pub(super) fn spec_bitnet() -> ArchSpec {
    ArchSpec { name: "bitnet".into(), rope: RopeStyle::Neox, ffn: FfnActivation::Silu, sub_norms: true }
}

pub(super) fn spec_b158(name: &str) -> ArchSpec {
    ArchSpec { name: name.into(), rope: RopeStyle::Neox, ffn: FfnActivation::Relu2, sub_norms: true }
}
