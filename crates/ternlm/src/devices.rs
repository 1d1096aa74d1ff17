//! GPU devices this machine offers, as ternlm describes them (`ternlm info --devices`). The
//! types are this crate's own, so callers never name the GPU layer's (`ternlm-gpu`), which
//! stays an implementation detail of the model crate.

use serde::Serialize;

/// One GPU adapter (or software rasterizer) that ternlm could run on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    /// Position in [`devices`]' list; the number a device option would take.
    pub index: usize,
    pub name: String,
    /// The maker ("NVIDIA", "AMD", "Intel", "Apple", "Mesa", ...) or its PCI vendor id in hex.
    pub vendor: String,
    /// "vulkan", "metal", "dx12" or "gl".
    pub backend: String,
    /// "discrete", "integrated", "virtual", "cpu" or "other".
    pub device_type: String,
    /// Device-local memory in bytes, where the backend reports it (Vulkan).
    pub memory_bytes: Option<u64>,
    /// Shaders can use packed int8 dot products (which the ternary kernels need).
    pub int8_dot: bool,
    /// Shaders can compute in f16.
    pub f16: bool,
    /// A CPU implementation of the graphics API (lavapipe, SwiftShader, WARP): correct, slow.
    pub software: bool,
}

/// Every device found, in a stable order; empty when there is none (no driver, no Vulkan
/// loader, or hidden with `TERNLM_GPU=off` / `WGPU_BACKEND=none`).
pub fn devices() -> Vec<DeviceInfo> {
    ternlm_gpu::adapters()
        .into_iter()
        .map(|a| DeviceInfo {
            index: a.index,
            name: a.name,
            vendor: a.vendor,
            backend: a.backend.as_str().to_string(),
            device_type: a.device_type.as_str().to_string(),
            memory_bytes: a.memory_bytes,
            int8_dot: a.int8_dot,
            f16: a.f16,
            software: a.software,
        })
        .collect()
}
