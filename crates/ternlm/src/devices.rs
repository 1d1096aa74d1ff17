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

/// Where a model's arithmetic runs (`--device`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    /// A discrete GPU when one is found and the model fits its memory, else the CPU; never
    /// a software rasterizer.
    Auto,
    /// The CPU kernels (the library's default).
    #[default]
    Cpu,
    /// A GPU: adapter `N` of [`devices`], or with `None` the first hardware adapter, else the
    /// first software one. Failing to use it is an error, not a fallback.
    Gpu(Option<usize>),
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "gpu" => Ok(Self::Gpu(None)),
            other => match other.strip_prefix("gpu:").map(str::parse::<usize>) {
                Some(Ok(i)) => Ok(Self::Gpu(Some(i))),
                _ => Err(format!("unknown device {s:?}: use auto, cpu, gpu or gpu:N (N from `ternlm info --devices`)")),
            },
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Gpu(None) => f.write_str("gpu"),
            Self::Gpu(Some(i)) => write!(f, "gpu:{i}"),
        }
    }
}

/// Whether this machine may have a hardware GPU at all. On Linux a GPU driver exposes a
/// device node (`/dev/dri/renderD*`, `/dev/nvidia*`); without one, `auto` does not start a
/// graphics API just to find software rasterizers it would not pick anyway (that costs
/// time at every start, and Mesa prints warnings on a headless machine).
pub fn may_have_hardware_gpu() -> bool {
    if !cfg!(target_os = "linux") {
        return true;
    }
    let has = |dir: &str, prefix: &str| std::fs::read_dir(dir).map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with(prefix))).unwrap_or(false);
    has("/dev/dri", "renderD") || has("/dev", "nvidia")
}

/// The adapter `auto` would pick for a model needing `bytes` of device memory, or why none.
pub(crate) fn auto_pick(bytes: usize) -> Result<DeviceInfo, String> {
    if !may_have_hardware_gpu() {
        return Err("no GPU device node".into());
    }
    let all = devices();
    if all.is_empty() {
        return Err("no GPU adapter".into());
    }
    let usable = |d: &&DeviceInfo| !d.software && d.device_type == "discrete" && d.int8_dot;
    let Some(best) = all.iter().filter(usable).max_by_key(|d| d.memory_bytes.unwrap_or(0)) else {
        let names: Vec<String> = all.iter().map(|d| format!("{} ({})", d.name, if d.software { "software" } else { d.device_type.as_str() })).collect();
        return Err(format!("no discrete GPU with int8 dot products among {}", names.join(", ")));
    };
    // Weights plus a margin for caches and activations.
    if let Some(mem) = best.memory_bytes
        && (bytes as u64).saturating_mul(5) / 4 > mem
    {
        return Err(format!("the model needs about {} MB, {} has {} MB", (bytes * 5 / 4) >> 20, best.name, mem >> 20));
    }
    Ok(best.clone())
}
