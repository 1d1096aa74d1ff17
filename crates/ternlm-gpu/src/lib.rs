//! ternlm's portable GPU layer on wgpu (Vulkan, Metal, DX12) with WGSL kernels.
//!
//! This first step lists adapters ([`adapters`]), opens one ([`Gpu::open`]) and runs the
//! BitLinear pieces on it, each the device twin of a ternlm-kernels CPU kernel and tested
//! against it:
//! - [`Gpu::quantize_per_token`]: `ternlm_kernels::act_quant::quantize_per_token` (exact: a
//!   max, one division, a multiply and a round half to even per value);
//! - [`Gpu::gemv`]: one token through a [`GpuTernary`] in ternlm's packed 2-bit layout, equal
//!   to `TernaryMatrix::gemm` (integer sums exact, then the CPU's float operations in the CPU's
//!   order);
//! - [`Gpu::gemv_block`]: one token through a [`GpuBlockMatrix`] of ggml Q8_0, Q4_0, Q4_1,
//!   Q6_K or F16 weights (GGUF bytes repacked at upload, activations prepared by
//!   [`Gpu::prepare_block_acts`] or uploaded from the host), equal to `BlockMatrix::gemm` at
//!   `Isa::Scalar` (module `blockq`: the CPU's fused multiply-adds and F16's f64 tail are
//!   emulated exactly);
//! - [`Gpu::rms_norm`]: `ternlm_kernels::ops::rms_norm` within a few ULP (the CPU sums in f64,
//!   WGSL has no f64).
//!
//! Why the results match bit for bit on any conforming device, not only on lavapipe: WGSL
//! rounds `+ - *` correctly, but allows 2.5 ULP for `/`, and both the quantization scale
//! (`127 / amax`) and the GEMV epilogue (`y / s`) divide on the CPU. The shaders therefore
//! divide with `div_exact` (shaders/div.wgsl: long division of the significands in u32,
//! rounded to nearest even). SPIR-V also lets drivers contract `a * b + c` into one FMA; the
//! GEMV passes each product through an opaque identity before adding it. (lavapipe would
//! need neither, its `/` being correctly rounded and its compiler not contracting; the tests
//! fail there when `div_exact`'s rounding is broken, so they do exercise it.) The remaining
//! gap is subnormal numbers, which WGSL may flush to zero. RMSNorm sums squares in f32 where
//! the CPU uses f64: measured on lavapipe at most 4 ULP (relative 2.8e-7) from the CPU; the
//! tests allow 16 ULP.
//!
//! Hiding adapters: `WGPU_BACKEND=none` (wgpu's own variable; any name it does not know means
//! no backend) or `TERNLM_GPU=off` make [`adapters`] empty and [`Gpu::open`] fail with
//! [`GpuError::NoAdapter`]; the tests use that to check that they say `skipped: no adapter`.

mod adapters;
mod blockq;
mod device;
mod fma;
mod kernels;
mod ops;

pub use adapters::{AdapterInfo, Backend, DeviceType, adapters};
pub use blockq::{GpuBlockActs, GpuBlockKind, GpuBlockMatrix, HostBlockActs};
pub use device::{Gpu, Recorder};
pub use kernels::{GpuActs, GpuTernary, GpuVec, HostActs};
pub use ops::{AttnShape, GateActivation, GpuHalf, MAX_HEAD_DIM, RopePairs};

/// Why a GPU operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU adapter found (none enumerated by wgpu{hint})")]
    NoAdapter { hint: String },
    #[error("no GPU adapter with index {index} ({count} adapters; `ternlm info --devices` lists them)")]
    BadIndex { index: usize, count: usize },
    #[error("could not open a device on adapter {name:?}: {message}")]
    RequestDevice { name: String, message: String },
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    #[error("{what} needs {bytes} bytes in one binding, above this adapter's limit of {limit} bytes")]
    TooLarge { what: String, bytes: u64, limit: u64 },
    #[error("bad shape: {0}")]
    Shape(String),
    #[error("the GPU ran out of memory: {0}")]
    OutOfMemory(String),
    #[error("GPU validation error: {0}")]
    Validation(String),
    #[error("waiting for the GPU failed: {0}")]
    Poll(String),
    #[error("reading a GPU buffer back failed: {0}")]
    Readback(String),
}

pub type Result<T, E = GpuError> = std::result::Result<T, E>;
