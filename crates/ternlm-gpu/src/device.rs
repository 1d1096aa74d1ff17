//! Opening a device and the plumbing every kernel shares: buffers, uploads, readback and
//! error capture, all returning [`GpuError`] rather than panicking.

use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use crate::adapters::{self, AdapterInfo};
use crate::{GpuError, Result};

/// The kernels that divide get `div_exact` appended (after the shader's own `requires`,
/// which WGSL wants before any declaration).
const QUANT_WGSL: &str = concat!(include_str!("shaders/quant_per_token.wgsl"), include_str!("shaders/div.wgsl"));
const GEMV_WGSL: &str = concat!(include_str!("shaders/gemv_ternary.wgsl"), include_str!("shaders/div.wgsl"));
const RMS_WGSL: &str = include_str!("shaders/rms_norm.wgsl");

/// An open device with its queue and compiled kernels.
pub struct Gpu {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: AdapterInfo,
    limits: wgpu::Limits,
    /// The largest storage binding the kernels use: the adapter's limit, or lower when set by
    /// [`Gpu::set_binding_limit`].
    binding_limit: u64,
    /// Set by the device-lost callback; checked before every operation.
    lost: Arc<Mutex<Option<String>>>,
    /// Errors no error scope caught (wgpu's default handler would panic on them).
    uncaptured: Arc<Mutex<Option<String>>>,
    pub(crate) quant: wgpu::ComputePipeline,
    pub(crate) gemv: wgpu::ComputePipeline,
    pub(crate) rms: wgpu::ComputePipeline,
    pub(crate) block: crate::blockq::BlockPipelines,
    pub(crate) ops: crate::ops::OpsPipelines,
    /// The device's `fma()` passed the fused self-check (fma.rs) and the kernels use it.
    native_fma: bool,
}

impl Gpu {
    /// Opens adapter `index` of [`adapters::adapters`], or with `None` the first hardware
    /// adapter, else the first software one. The device gets the adapter's own limits (wgpu's
    /// defaults are WebGPU's, far below what desktop GPUs allow) and `SHADER_F16` when offered.
    pub fn open(index: Option<usize>) -> Result<Gpu> {
        let instance = adapters::instance();
        let int8_dot = instance.wgsl_language_features().contains(wgpu::WgslLanguageFeatures::Packed4x8IntegerDotProduct);
        let found = adapters::enumerate(&instance);
        let infos: Vec<AdapterInfo> = found.iter().enumerate().map(|(i, a)| adapters::describe(i, a, int8_dot)).collect();
        let chosen = match index {
            Some(i) if i < found.len() => i,
            Some(index) => {
                if found.is_empty() {
                    return Err(no_adapter());
                }
                return Err(GpuError::BadIndex { index, count: found.len() });
            }
            None => infos.iter().position(|a| !a.software).or(if found.is_empty() { None } else { Some(0) }).ok_or_else(no_adapter)?,
        };
        let (adapter, info) = (&found[chosen], infos[chosen].clone());
        if !info.int8_dot {
            return Err(GpuError::RequestDevice { name: info.name, message: "WGSL packed_4x8_integer_dot_product is not available".into() });
        }
        let limits = adapter.limits();
        let want = wgpu::Features::SHADER_F16;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("ternlm"),
            required_features: adapter.features() & want,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| GpuError::RequestDevice { name: info.name.clone(), message: e.to_string() })?;

        let lost = Arc::new(Mutex::new(None));
        let flag = Arc::clone(&lost);
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut l) = flag.lock() {
                *l = Some(format!("{reason:?}: {message}"));
            }
        });
        let uncaptured = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&uncaptured);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut u) = sink.lock() {
                u.get_or_insert_with(|| e.to_string());
            }
        }));

        let scope = Scope::push(&device);
        let module = |label: &str, src: &str| shader(&device, label, src);
        let pipeline = |m: &wgpu::ShaderModule, entry: &str| pipeline(&device, m, entry);
        let quant = pipeline(&module("quant_per_token", QUANT_WGSL), "quantize");
        let gemv = pipeline(&module("gemv_ternary", GEMV_WGSL), "gemv");
        let rms = pipeline(&module("rms_norm", RMS_WGSL), "rms_norm");
        let native_fma = crate::fma::device_fma_is_fused(&device, &queue)?;
        let block = crate::blockq::BlockPipelines::new(&device, native_fma);
        let ops = crate::ops::OpsPipelines::new(&device, native_fma);
        scope.pop()?;
        let mut binding_limit = adapter_binding_limit(&limits);
        // A lower limit on request: for drivers that misbehave near their stated limit, and
        // for tests of the splitting paths.
        if let Some(max) = std::env::var("TERNLM_GPU_MAX_BINDING").ok().and_then(|v| v.trim().parse::<u64>().ok()) {
            binding_limit = binding_limit.min(max.max(4096)) / 4 * 4;
        }
        let gpu = Gpu { device, queue, info, limits, binding_limit, lost, uncaptured, quant, gemv, rms, block, ops, native_fma };
        gpu.check()?;
        Ok(gpu)
    }

    /// The adapter this device runs on.
    pub fn info(&self) -> &AdapterInfo {
        &self.info
    }

    /// Whether the kernels use the device's own fused multiply-add (it passed the self-check
    /// when opened) rather than the exact emulation.
    pub fn native_fma(&self) -> bool {
        self.native_fma
    }

    /// Compiles the kernels in the variant this device did not take (native `fma()` where it
    /// emulates, and the reverse), so that both are known to be valid WGSL on any device
    /// the tests run on.
    pub fn compile_other_fma_variant(&self) -> Result<()> {
        let scope = self.scope()?;
        let _ = crate::blockq::BlockPipelines::new(&self.device, !self.native_fma);
        let _ = crate::ops::OpsPipelines::new(&self.device, !self.native_fma);
        scope.pop()
    }

    /// The adapter's limits, as the device was opened with them.
    pub(crate) fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// The largest storage binding (bytes) the kernels will use.
    pub fn binding_limit(&self) -> u64 {
        self.binding_limit
    }

    /// Lowers the largest storage binding the kernels use (never raises it above the
    /// adapter's): weight uploads split into more, smaller buffers. Tests use it to exercise
    /// splitting on small matrices.
    pub fn set_binding_limit(&mut self, bytes: u64) {
        let adapter = adapter_binding_limit(&self.limits);
        // Bindings are sized in words and offsets aligned to 4; keep the limit a multiple of 4.
        self.binding_limit = bytes.min(adapter) / 4 * 4;
    }

    /// Fails if the device was lost or an error escaped the error scopes.
    pub(crate) fn check(&self) -> Result<()> {
        if let Some(m) = self.lost.lock().ok().and_then(|l| l.clone()) {
            return Err(GpuError::DeviceLost(m));
        }
        if let Some(m) = self.uncaptured.lock().ok().and_then(|mut u| u.take()) {
            return Err(GpuError::Validation(m));
        }
        Ok(())
    }

    pub(crate) fn scope(&self) -> Result<Scope> {
        self.check()?;
        Ok(Scope::push(&self.device))
    }

    /// Fails with [`GpuError::TooLarge`] when `bytes` do not fit one binding.
    pub(crate) fn fits(&self, what: &str, bytes: u64) -> Result<()> {
        if bytes > self.binding_limit {
            return Err(GpuError::TooLarge { what: what.into(), bytes, limit: self.binding_limit });
        }
        Ok(())
    }

    /// A storage buffer holding `bytes` (checked against the binding limit first, so wgpu's
    /// validation never sees an oversized buffer).
    pub(crate) fn storage_init(&self, what: &str, bytes: &[u8]) -> Result<wgpu::Buffer> {
        self.fits(what, bytes.len() as u64)?;
        // wgpu rejects zero-sized bindings; an empty input still gets a word.
        let contents: &[u8] = if bytes.is_empty() { &[0; 4] } else { bytes };
        let scope = self.scope()?;
        let buf = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(what),
            contents,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        });
        scope.pop()?;
        Ok(buf)
    }

    /// An uninitialised storage buffer of `bytes` for kernel outputs.
    pub(crate) fn storage(&self, what: &str, bytes: u64) -> Result<wgpu::Buffer> {
        self.fits(what, bytes)?;
        let scope = self.scope()?;
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        scope.pop()?;
        Ok(buf)
    }

    pub(crate) fn uniform(&self, words: &[u32]) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some("params"), contents: bytemuck::cast_slice(words), usage: wgpu::BufferUsages::UNIFORM })
    }

    /// Starts recording work for one submission: the ops of a whole forward step go into
    /// one command encoder, so the device runs them back to back and the host waits once.
    pub fn begin(&self) -> Result<Recorder<'_>> {
        let scope = self.scope()?;
        let enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("ternlm-gpu") });
        Ok(Recorder { gpu: self, enc, scope })
    }

    pub(crate) fn bind_group(&self, pipeline: &wgpu::ComputePipeline, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = buffers.iter().enumerate().map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() }).collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &pipeline.get_bind_group_layout(0), entries: &entries })
    }

    /// Workgroups for `n` items of `per` each, as a 2-D grid when one dimension is not enough.
    pub(crate) fn grid(&self, n: usize, per: usize) -> Result<(u32, u32)> {
        let groups = n.div_ceil(per) as u64;
        let max = u64::from(self.limits.max_compute_workgroups_per_dimension);
        let y = groups.div_ceil(max).max(1);
        if y > max {
            return Err(GpuError::TooLarge { what: format!("a dispatch of {groups} workgroups"), bytes: groups, limit: max * max });
        }
        let x = groups.div_ceil(y);
        Ok((x as u32, y as u32))
    }

    /// Workgroups along z for `n` tokens (one each), or an error past the adapter's limit.
    pub(crate) fn token_groups(&self, n: usize) -> Result<u32> {
        let max = self.limits.max_compute_workgroups_per_dimension;
        match u32::try_from(n) {
            Ok(z) if z >= 1 && z <= max => Ok(z),
            _ => Err(GpuError::Shape(format!("{n} tokens in one product; this adapter takes 1 to {max}"))),
        }
    }

    /// Copies `bytes` bytes of `src` back to the host, blocking until the GPU is done.
    pub(crate) fn read_bytes(&self, src: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let scope = self.scope()?;
        let staging =
            self.device.create_buffer(&wgpu::BufferDescriptor { label: Some("readback"), size: bytes, usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST, mapped_at_creation: false });
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
        enc.copy_buffer_to_buffer(src, 0, &staging, 0, bytes);
        self.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            // The receiver lives until after the poll below; a failed send only means the
            // caller already returned an error.
            let _ = tx.send(r);
        });
        scope.pop()?;
        // The map callback runs inside whichever thread's poll sees the work finish: when
        // another thread shares this device, our poll can return while that thread is still
        // delivering our callback, so wait for it a little before polling again.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Poll(e.to_string()))?;
            self.check()?;
            match rx.recv_timeout(std::time::Duration::from_millis(5)) {
                Ok(Ok(())) => break,
                Ok(Err(e)) => return Err(GpuError::Readback(e.to_string())),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if std::time::Instant::now() < deadline => {}
                Err(_) => return Err(GpuError::Readback("the buffer was not mapped within 60 s of the GPU finishing".into())),
            }
        }
        let out = staging.get_mapped_range(..).map_err(|e| GpuError::Readback(e.to_string()))?.to_vec();
        staging.unmap();
        Ok(out)
    }
}

/// Compiles WGSL source (the caller holds an error scope: a bad shader is a validation error).
pub(crate) fn shader(device: &wgpu::Device, label: &str, src: &str) -> wgpu::ShaderModule {
    device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(label), source: wgpu::ShaderSource::Wgsl(src.into()) })
}

/// A compute pipeline for `entry` of `module`, its bind group layout derived from the
/// bindings that entry point uses.
pub(crate) fn pipeline(device: &wgpu::Device, module: &wgpu::ShaderModule, entry: &str) -> wgpu::ComputePipeline {
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor { label: Some(entry), layout: None, module, entry_point: Some(entry), compilation_options: Default::default(), cache: None })
}

/// The largest buffer one storage binding may cover on this device, and at most 4 GiB: the
/// shaders index words with u32.
fn adapter_binding_limit(limits: &wgpu::Limits) -> u64 {
    limits.max_storage_buffer_binding_size.min(limits.max_buffer_size).min(u64::from(u32::MAX))
}

fn no_adapter() -> GpuError {
    let hidden = std::env::var("TERNLM_GPU").ok().map(|v| format!("; TERNLM_GPU={v}")).unwrap_or_default();
    let backend = std::env::var("WGPU_BACKEND").ok().map(|v| format!("; WGPU_BACKEND={v}")).unwrap_or_default();
    let hint = if hidden.is_empty() && backend.is_empty() { "; is a Vulkan driver installed?".to_string() } else { format!("{hidden}{backend}") };
    GpuError::NoAdapter { hint }
}

/// Work recorded for one submission ([`Gpu::begin`]): every op of the crate has a form that
/// records into it. Dispatches run in the order recorded, each seeing the writes of the ones
/// before (wgpu places the barriers). Nothing runs until [`Recorder::submit`].
pub struct Recorder<'g> {
    pub(crate) gpu: &'g Gpu,
    enc: wgpu::CommandEncoder,
    scope: Scope,
}

impl<'g> Recorder<'g> {
    /// The device this records for.
    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// Records dispatches of one pipeline, `(bind group, x, y, z)` workgroups each.
    pub(crate) fn dispatch(&mut self, pipeline: &wgpu::ComputePipeline, runs: Vec<(wgpu::BindGroup, u32, u32, u32)>) {
        let mut pass = self.enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
        pass.set_pipeline(pipeline);
        for (bg, x, y, z) in &runs {
            pass.set_bind_group(0, bg, &[]);
            pass.dispatch_workgroups(*x, *y, *z);
        }
    }

    /// Records a copy of `bytes` bytes between buffers (offsets and length multiples of 4).
    pub(crate) fn copy(&mut self, src: &wgpu::Buffer, src_off: u64, dst: &wgpu::Buffer, dst_off: u64, bytes: u64) {
        if bytes > 0 {
            self.enc.copy_buffer_to_buffer(src, src_off, dst, dst_off, bytes);
        }
    }

    /// Submits everything recorded; errors in it (validation, out of memory) surface here.
    pub fn submit(self) -> Result<()> {
        self.gpu.queue.submit([self.enc.finish()]);
        self.scope.pop()?;
        self.gpu.check()
    }
}

/// Validation and out-of-memory error scopes around a group of wgpu calls, popped into a
/// [`GpuError`] (wgpu would otherwise hand the error to the uncaptured handler).
pub(crate) struct Scope {
    // Dropped in declaration order, which must be the reverse of the pushes (a scope dropped
    // unpopped, on an early return, pops itself, and out of order that panics in wgpu).
    validation: wgpu::ErrorScopeGuard,
    oom: wgpu::ErrorScopeGuard,
}

impl Scope {
    fn push(device: &wgpu::Device) -> Scope {
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        Scope { validation, oom }
    }

    pub(crate) fn pop(self) -> Result<()> {
        // Inner scope first: scopes pop in reverse order of their pushes.
        let validation = pollster::block_on(self.validation.pop());
        let oom = pollster::block_on(self.oom.pop());
        if let Some(e) = oom {
            return Err(GpuError::OutOfMemory(e.to_string()));
        }
        if let Some(e) = validation {
            return Err(GpuError::Validation(e.to_string()));
        }
        Ok(())
    }
}
