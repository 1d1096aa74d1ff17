// ---- blockq_q8_0.wgsl: Q8_0 weights times Q8_0 activations ----
// A block is 9 words: the f16 d in the low half of word 0, then the 32 int8 weights.

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> xq: array<u32>;
@group(0) @binding(2) var<storage, read> xd: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

// One row per invocation, as the ternary GEMV (faster on llvmpipe than a reduction).
@compute @workgroup_size(64)
fn gemv_q8_0(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = row_index(wg, lid);
    if (r >= p.rows) { return; }
    let base = r * p.row_words;
    // This token's activation blocks.
    let xo = wg.z * p.blocks;
    var acc = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (var b = 0u; b < p.blocks; b++) {
        let blk = base + b * 9u;
        // The CPU's `f16_at(blk, 0) * d8[b]`: one rounded product, then used as the FMA's factor.
        let d = f16_to_f32(w[blk] & 0xffffu) * xd[xo + b];
        for (var l = 0u; l < 8u; l++) {
            // Word l of the block is weights 4l..4l+3, exactly lane l; the sum is exact.
            let lane = dot4I8Packed(w[blk + 1u + l], xq[8u * (xo + b) + l]);
            // The CPU's f32::mul_add: one rounding.
            acc[l] = fma_exact(d, f32(lane), acc[l]);
        }
    }
    y[wg.z * p.out_stride + p.row0 + r] = hsum8(acc);
}
