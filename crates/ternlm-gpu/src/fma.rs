//! Whether the device's `fma()` is fused. WGSL (like Vulkan) lets `fma(a, b, c)` round the
//! product before adding, and lavapipe does; the block and attention kernels need the CPU's
//! single rounding, so they emulate it from exactly rounded operations (shaders/
//! fma_exact.wgsl, some 25 operations). A device that fuses gets the one-instruction
//! version (shaders/fma_native.wgsl) instead, decided here when the device is opened: a
//! kernel computes `fma` on triples where the two roundings differ, and on random ones, and
//! every result must equal Rust's `f32::mul_add` bit for bit. `TERNLM_GPU_FMA=emulate`
//! forces the emulation.

use wgpu::util::DeviceExt;

use crate::{GpuError, Result};

/// Triples `(a, b, c, 0)` whose fused and unfused results differ, then seeded random ones.
fn triples() -> Vec<[f32; 4]> {
    let e = 2f32.powi(-12);
    let mut v = vec![
        // (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24: rounded first, the 2^-24 is lost (a tie, to even).
        [1.0 + e, 1.0 + e, -(1.0 + 2.0 * e), 0.0],
        [1.0 + e, -(1.0 + e), 1.0 + 2.0 * e, 0.0],
        [3.0 + 4.0 * e, 1.0 / 3.0, -1.0, 0.0],
    ];
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..253 {
        let mut f = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * 4.0
        };
        let (a, b) = (f(), f());
        v.push([a, b, -(a * b) + f() * 1e-6, 0.0]);
    }
    v
}

/// Runs the check on `device`; any failure to run it counts as "not fused".
pub(crate) fn device_fma_is_fused(device: &wgpu::Device, queue: &wgpu::Queue) -> Result<bool> {
    if std::env::var("TERNLM_GPU_FMA").is_ok_and(|v| v.eq_ignore_ascii_case("emulate")) {
        return Ok(false);
    }
    let t = triples();
    let n = t.len();
    let src = include_str!("shaders/fma_check.wgsl");
    let module = crate::device::shader(device, "fma_check", src);
    let pipeline = crate::device::pipeline(device, &module, "fma_check");
    let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
    let input = device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some("fma triples"), contents: bytemuck::cast_slice(&t), usage: storage });
    let out = device.create_buffer(&wgpu::BufferDescriptor { label: Some("fma out"), size: n as u64 * 4, usage: storage, mapped_at_creation: false });
    let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some("fma params"), contents: bytemuck::cast_slice(&[n as u32, 0, 0, 0]), usage: wgpu::BufferUsages::UNIFORM });
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("fma readback"),
        size: n as u64 * 4,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let entries: Vec<wgpu::BindGroupEntry> = [&input, &out, &params].iter().enumerate().map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() }).collect();
    let bg = device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &pipeline.get_bind_group_layout(0), entries: &entries });
    let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("fma_check") });
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(n.div_ceil(64) as u32, 1, 1);
    }
    enc.copy_buffer_to_buffer(&out, 0, &staging, 0, n as u64 * 4);
    queue.submit([enc.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Poll(e.to_string()))?;
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(Ok(())) => {}
        _ => return Ok(false),
    }
    let got: Vec<f32> = bytemuck::pod_collect_to_vec(&staging.get_mapped_range(..).map_err(|e| GpuError::Readback(e.to_string()))?);
    staging.unmap();
    Ok(got.iter().zip(&t).all(|(g, [a, b, c, _])| g.to_bits() == a.mul_add(*b, *c).to_bits()))
}

/// The WGSL that defines `fma_exact` for the kernels.
pub(crate) fn source(native: bool) -> &'static str {
    if native { include_str!("shaders/fma_native.wgsl") } else { include_str!("shaders/fma_exact.wgsl") }
}
