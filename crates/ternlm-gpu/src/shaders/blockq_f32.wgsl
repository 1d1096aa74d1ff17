// ---- blockq_f32.wgsl: F32 and BF16 weights times f32 activations (BF16: rounded to bf16) ----
// Rows as in the file, one F32 value or two BF16 values (the even column low) a word.
// ternlm_kernels::blockq::dot_f32/dot_bf16 round each product to f32 and sum them in f64.
// WGSL has no f64: the sum is kept as an unevaluated pair (s, e) with TwoSum, good to about
// 2^-44 relative, and rounded to f32 at the end. That is the CPU's value except where its
// f64 sum lies that close to a rounding boundary of f32 (then one ULP apart).

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

fn weight_f32(base: u32, i: u32) -> f32 {
    return bitcast<f32>(w[base + i]);
}

fn weight_bf16(base: u32, i: u32) -> f32 {
    return bitcast<f32>(((w[base + i / 2u] >> (16u * (i & 1u))) & 0xffffu) << 16u);
}

// p.pad0 is 1 for BF16 weights, 0 for F32.
@compute @workgroup_size(64)
fn gemv_float(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = row_index(wg, lid);
    if (r >= p.rows) { return; }
    let base = r * p.row_words;
    let xo = wg.z * p.blocks;
    var s = 0.0;
    var e = 0.0;
    for (var i = 0u; i < p.blocks; i++) {
        var wv = weight_f32(base, i);
        if (p.pad0 != 0u) { wv = weight_bf16(base, i); }
        let t = two_sum(s, opaque(wv * x[xo + i]));
        s = t.x;
        e = e + t.y;
    }
    y[wg.z * p.out_stride + p.row0 + r] = s + e;
}
