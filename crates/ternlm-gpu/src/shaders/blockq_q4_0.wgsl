// ---- blockq_q4_0.wgsl: Q4_0 weights times Q8_0 activations ----
// A block is 5 words: the f16 d in the low half of word 0, then 16 bytes of nibbles. Byte j
// of the nibbles holds weight j (low) and j + 16 (high), each stored as w + 8.

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> xq: array<u32>;
@group(0) @binding(2) var<storage, read> xd: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(64)
fn gemv_q4_0(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = row_index(wg, lid);
    if (r >= p.rows) { return; }
    let base = r * p.row_words;
    // This token's activation blocks.
    let xo = wg.z * p.blocks;
    var acc = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (var b = 0u; b < p.blocks; b++) {
        let blk = base + b * 5u;
        let d = f16_to_f32(w[blk] & 0xffffu) * xd[xo + b];
        for (var l = 0u; l < 8u; l++) {
            // Lanes 0-3 are the low nibbles of words 0-3, lanes 4-7 their high nibbles.
            let nib = (w[blk + 1u + (l & 3u)] >> (4u * (l >> 2u))) & 0x0f0f0f0fu;
            let x = xq[8u * (xo + b) + l];
            // Σ (n - 8) x = Σ n x - 8 Σ x, exact in i32; nibbles 0..15 are valid signed bytes.
            let lane = dot4I8Packed(nib, x) - 8 * dot4I8Packed(0x01010101u, x);
            acc[l] = fma_exact(d, f32(lane), acc[l]);
        }
    }
    y[wg.z * p.out_stride + p.row0 + r] = hsum8(acc);
}
