// RMSNorm, the device twin of ternlm_kernels::ops::rms_norm: y = x * (1 / sqrt(mean(x^2) + eps)) * w,
// one workgroup per row. The CPU sums squares in f64; here they are f32 partial sums reduced as a
// tree (WGSL has no f64), so results agree within a few ULP rather than bit for bit (the tests
// measure and bound the difference).

struct Params { n: u32, eps: f32, pad0: u32, pad1: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

const WG: u32 = 256u;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(256)
fn rms_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let base = wg.x * p.n;
    var s = 0.0;
    for (var i = t; i < p.n; i += WG) {
        let v = x[base + i];
        s += v * v;
    }
    red[t] = s;
    workgroupBarrier();
    for (var off = WG / 2u; off > 0u; off >>= 1u) {
        if (t < off) { red[t] += red[t + off]; }
        workgroupBarrier();
    }
    // Same order of operations as the CPU: mean, + eps, sqrt, reciprocal, then x * scale * w.
    let scale = 1.0 / sqrt(red[0] / f32(p.n) + p.eps);
    for (var i = t; i < p.n; i += WG) {
        y[base + i] = x[base + i] * scale * w[i];
    }
}
