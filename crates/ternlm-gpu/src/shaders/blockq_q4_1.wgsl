// ---- blockq_q4_1.wgsl: Q4_1 weights times Q8_1 activations ----
// A block is 5 words: f16 d | f16 m << 16, then 16 bytes of nibbles laid out as Q4_0's.
// w = d n + m, so Σ w x = d Σ n x + m Σ x, and ggml's Q8_1 carries Σ x as s = d8 Σ q.

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> xq: array<u32>;
@group(0) @binding(2) var<storage, read> xd: array<f32>;
@group(0) @binding(3) var<storage, read> xs: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

@compute @workgroup_size(64)
fn gemv_q4_1(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = row_index(wg, lid);
    if (r >= p.rows) { return; }
    let base = r * p.row_words;
    // This token's activation blocks.
    let xo = wg.z * p.blocks;
    var acc = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    var summs = 0.0;
    for (var b = 0u; b < p.blocks; b++) {
        let blk = base + b * 5u;
        let dm = w[blk];
        // The CPU rounds m * s, then adds: keep the compiler from fusing the two.
        summs = summs + opaque(f16_to_f32(dm >> 16u) * xs[xo + b]);
        let d = f16_to_f32(dm & 0xffffu) * xd[xo + b];
        for (var l = 0u; l < 8u; l++) {
            let nib = (w[blk + 1u + (l & 3u)] >> (4u * (l >> 2u))) & 0x0f0f0f0fu;
            acc[l] = fma_exact(d, f32(dot4I8Packed(nib, xq[8u * (xo + b) + l])), acc[l]);
        }
    }
    y[wg.z * p.out_stride + p.row0 + r] = hsum8(acc) + summs;
}
