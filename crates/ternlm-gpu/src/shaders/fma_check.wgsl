// The fused-multiply-add self-check: out[i] = fma(a, b, c) for each (a, b, c, _) of the
// input, compared on the host with Rust's f32::mul_add (rounded once).

struct Params { n: u32, zero: u32, pad0: u32, pad1: u32 }

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(64)
fn fma_check(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.n) { return; }
    let v = x[i];
    out[i] = fma(v.x, v.y, v.z);
}
