//! File formats for ternlm: the GGUF v3 reader (over mmap or any byte slice), Hugging Face
//! safetensors checkpoints, the ggml tensor type table, dequantization of every block layout
//! ternlm accepts, and quantization into the
//! layouts it writes.
//!
//! Nothing here computes beyond (de)quantization: kernels live in `ternlm-kernels` and models
//! in `ternlm`.

pub mod dequant;
pub mod error;
pub mod gguf;
pub mod quant;
pub mod safetensors;
pub mod types;

pub use error::FormatError;
pub use gguf::{GgufFile, GgufView, Metadata, MetadataValue, TensorInfo};
pub use types::TensorType;
