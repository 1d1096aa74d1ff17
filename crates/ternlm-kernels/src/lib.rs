//! ternlm's compute kernels. Nothing here knows about files, models or tokens: callers hand in
//! packed weights and f32 activations and get f32 results back.
//!
//! - [`pool`]: the persistent thread pool every parallel kernel runs on;
//! - [`isa`]: the instruction-set level kernels are compiled for and chosen at run time;
//! - [`act_quant`]: int8 quantization of activations (per token, and ggml's Q8_0/Q8_1/Q8_K);
//! - [`ternary`]: ternary weights in the kernel's own packed layout and ternary x int8 products;
//! - [`blockq`]: ggml block-quantized and float weights (Q4_0, Q4_1, Q8_0, Q4_K, Q6_K, F16,
//!   BF16, F32) and their products with quantized activations;
//! - [`f16_ops`]: F16 dot products and accumulator updates in ggml's arithmetic;
//! - `f16_rows`: F16 weight rows (output heads) times f32 tokens, tiled over a batch;
//! - [`huge_buf`]: huge-page-backed buffers for weights repacked at load;
//! - [`int8`]: int8 rows with per-row scales (the opt-in int8 output head);
//! - [`ops`]: RMSNorm, RoPE, softmax, SiLU, squared ReLU;
//! - [`attention`]: causal attention of a batch of queries over a KV cache;
//! - [`bandwidth`]: a memory read-bandwidth probe, the roofline decode is measured against.
//!
//! Each kernel is scalar today and shaped so SIMD versions can take its place behind the same
//! functions (a batch of token rows per call, weights packed once at load).

pub mod act_quant;
pub mod aligned;
pub mod attention;
pub mod bandwidth;
pub mod blockq;
pub mod f16_ops;
mod f16_rows;
pub mod huge_buf;
pub mod int8;
pub mod isa;
pub mod ops;
pub mod pool;
mod self_check;
mod sync_out;
pub mod ternary;
#[cfg(target_arch = "x86_64")]
mod tile_config;

pub use pool::ThreadPool;
