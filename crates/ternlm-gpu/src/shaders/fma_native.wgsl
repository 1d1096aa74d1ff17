
// ---- fma_native.wgsl: fma_exact for a device whose fma() is fused (checked when the device
// is opened, see fma.rs): one instruction instead of fma_exact.wgsl's emulation. opaque()
// keeps a product computed just before from being folded into the fma. ----

fn fma_exact(a_in: f32, b: f32, c: f32) -> f32 {
    return fma(opaque(a_in), b, c);
}
