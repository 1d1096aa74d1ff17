//! Adapter discovery: every adapter wgpu enumerates on this platform, described in the terms
//! `ternlm info --devices` prints (vendor name, backend, device type, memory, int8 dot product,
//! f16, software or not).

/// The graphics API an adapter runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Vulkan,
    Metal,
    Dx12,
    Gl,
    Other,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vulkan => "vulkan",
            Self::Metal => "metal",
            Self::Dx12 => "dx12",
            Self::Gl => "gl",
            Self::Other => "other",
        }
    }
}

/// What kind of device an adapter is, as the driver reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceType {
    Discrete,
    Integrated,
    Virtual,
    Cpu,
    Other,
}

impl DeviceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Discrete => "discrete",
            Self::Integrated => "integrated",
            Self::Virtual => "virtual",
            Self::Cpu => "cpu",
            Self::Other => "other",
        }
    }
}

/// One adapter as [`adapters`] lists it; `index` is what [`crate::Gpu::open`] takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterInfo {
    pub index: usize,
    pub name: String,
    /// A name for the PCI vendor id ("NVIDIA", "AMD", ...) or the id in hex.
    pub vendor: String,
    pub backend: Backend,
    pub device_type: DeviceType,
    /// Device-local memory: on Vulkan the sum of the DEVICE_LOCAL heaps; `None` on other
    /// backends (wgpu has no portable query).
    pub memory_bytes: Option<u64>,
    /// WGSL's `packed_4x8_integer_dot_product` (dot4I8Packed), which the GEMV needs. It is a
    /// language feature of the instance: naga emits the native instruction where the driver
    /// has it and a bit-extracting polyfill where not, so it is true on every native adapter.
    pub int8_dot: bool,
    /// `SHADER_F16` (f16 arithmetic in shaders).
    pub f16: bool,
    /// A CPU implementation (lavapipe/llvmpipe, SwiftShader, WARP): correct but slow.
    pub software: bool,
}

/// The adapters wgpu finds on every backend compiled in (Vulkan everywhere but Apple, Metal on
/// Apple, DX12 on Windows), in wgpu's order. Empty when there are none, when the Vulkan loader
/// is missing, or when hidden by `WGPU_BACKEND=none` or `TERNLM_GPU=off`.
pub fn adapters() -> Vec<AdapterInfo> {
    let instance = instance();
    let int8_dot = instance.wgsl_language_features().contains(wgpu::WgslLanguageFeatures::Packed4x8IntegerDotProduct);
    enumerate(&instance).iter().enumerate().map(|(index, a)| describe(index, a, int8_dot)).collect()
}

/// The instance every lookup goes through, so indices agree between [`adapters`] and
/// [`crate::Gpu::open`].
pub(crate) fn instance() -> wgpu::Instance {
    let hidden = std::env::var("TERNLM_GPU").is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "off" | "none" | "0"));
    // `with_env` applies WGPU_BACKEND; an unknown name there (e.g. "none") selects no backend.
    let backends = if hidden { wgpu::Backends::empty() } else { wgpu::Backends::all().with_env() };
    wgpu::Instance::new(wgpu::InstanceDescriptor { backends, ..wgpu::InstanceDescriptor::new_without_display_handle() })
}

pub(crate) fn enumerate(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
}

pub(crate) fn describe(index: usize, adapter: &wgpu::Adapter, int8_dot: bool) -> AdapterInfo {
    let info = adapter.get_info();
    let backend = match info.backend {
        wgpu::Backend::Vulkan => Backend::Vulkan,
        wgpu::Backend::Metal => Backend::Metal,
        wgpu::Backend::Dx12 => Backend::Dx12,
        wgpu::Backend::Gl => Backend::Gl,
        _ => Backend::Other,
    };
    let device_type = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => DeviceType::Discrete,
        wgpu::DeviceType::IntegratedGpu => DeviceType::Integrated,
        wgpu::DeviceType::VirtualGpu => DeviceType::Virtual,
        wgpu::DeviceType::Cpu => DeviceType::Cpu,
        wgpu::DeviceType::Other => DeviceType::Other,
    };
    AdapterInfo {
        index,
        software: is_software(&info.name, device_type),
        vendor: vendor_name(info.vendor),
        name: info.name,
        backend,
        device_type,
        memory_bytes: device_local_memory(adapter),
        int8_dot,
        f16: adapter.features().contains(wgpu::Features::SHADER_F16),
    }
}

/// PCI vendor ids of the GPU makers ternlm users are likely to have (0x10005 is Mesa's
/// Khronos-registered id, used by lavapipe).
pub(crate) fn vendor_name(id: u32) -> String {
    match id {
        0x10de => "NVIDIA".into(),
        0x1002 => "AMD".into(),
        0x8086 => "Intel".into(),
        0x106b => "Apple".into(),
        0x5143 => "Qualcomm".into(),
        0x13b5 => "ARM".into(),
        0x10005 => "Mesa".into(),
        other => format!("{other:#x}"),
    }
}

/// Software rasterizers report themselves inconsistently (lavapipe says Cpu, WARP says
/// Discrete or Integrated on some Windows versions), so the name is checked too.
pub(crate) fn is_software(name: &str, device_type: DeviceType) -> bool {
    let name = name.to_ascii_lowercase();
    device_type == DeviceType::Cpu || ["llvmpipe", "lavapipe", "swiftshader", "warp", "microsoft basic render"].iter().any(|s| name.contains(s))
}

/// Sum of the DEVICE_LOCAL memory heaps, through wgpu's Vulkan HAL (no other backend exposes
/// it portably).
#[cfg(not(target_arch = "wasm32"))]
fn device_local_memory(adapter: &wgpu::Adapter) -> Option<u64> {
    // VK_MEMORY_HEAP_DEVICE_LOCAL_BIT, spelled as the raw bit so that this crate needs no
    // direct dependency on `ash` pinned to wgpu-hal's version.
    const DEVICE_LOCAL: u32 = 0x1;
    // SAFETY: the HAL adapter is only borrowed for this call, and only read: a memory-properties
    // query on the adapter's own physical device and instance, both alive while `adapter` is.
    unsafe {
        let hal = adapter.as_hal::<wgpu::hal::api::Vulkan>()?;
        let instance = hal.shared_instance().raw_instance();
        let props = instance.get_physical_device_memory_properties(hal.raw_physical_device());
        Some(props.memory_heaps_as_slice().iter().filter(|h| h.flags.as_raw() & DEVICE_LOCAL != 0).map(|h| h.size).sum())
    }
}

#[cfg(target_arch = "wasm32")]
fn device_local_memory(_: &wgpu::Adapter) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendors_and_software_names() {
        assert_eq!(vendor_name(0x10de), "NVIDIA");
        assert_eq!(vendor_name(0x10005), "Mesa");
        assert_eq!(vendor_name(0xabcd), "0xabcd");
        assert!(is_software("llvmpipe (LLVM 15.0.6, 256 bits)", DeviceType::Other));
        assert!(is_software("Microsoft Basic Render Driver", DeviceType::Integrated));
        assert!(is_software("anything", DeviceType::Cpu));
        assert!(!is_software("NVIDIA GeForce RTX 4090", DeviceType::Discrete));
    }
}
