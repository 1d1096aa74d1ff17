// ---- blockq_q4_k.wgsl: Q4_K weights times Q8_K activations (256-value blocks) ----
// A block is the GGUF block's 36 words unchanged (144 bytes, already word aligned): f16 d
// low and f16 dmin high in word 0, 12 bytes of 6-bit sub-block scales and mins, then 128
// bytes of nibbles: sub-blocks 2i and 2i + 1 are the low and high nibbles of bytes
// 32i..32i + 31. As ternlm_kernels::blockq::dot_q4k: per block, exact integer sums
// acc = Σ scale_j Σ q x and mins = Σ min_j Σ x, then sum += d * acc - dmin * mins.

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> xq: array<u32>;
@group(0) @binding(2) var<storage, read> xd: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

// Byte i of the block's 12 scale bytes.
fn scale_byte(blk: u32, i: u32) -> u32 {
    return (w[blk + 1u + i / 4u] >> (8u * (i % 4u))) & 0xffu;
}

@compute @workgroup_size(64)
fn gemv_q4_k(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = row_index(wg, lid);
    if (r >= p.rows) { return; }
    let base = r * p.row_words;
    // This token's activation blocks.
    let xo = wg.z * p.blocks;
    var sum = 0.0;
    for (var b = 0u; b < p.blocks; b++) {
        let blk = base + b * 36u;
        var acc = 0i;
        var mins = 0i;
        for (var j = 0u; j < 8u; j++) {
            var sc: u32;
            var m: u32;
            if (j < 4u) {
                sc = scale_byte(blk, j) & 63u;
                m = scale_byte(blk, j + 4u) & 63u;
            } else {
                sc = (scale_byte(blk, j + 4u) & 0xfu) | ((scale_byte(blk, j - 4u) >> 6u) << 4u);
                m = (scale_byte(blk, j + 4u) >> 4u) | ((scale_byte(blk, j) >> 6u) << 4u);
            }
            var isum = 0i;
            var xsum = 0i;
            for (var l = 0u; l < 8u; l++) {
                let nib = (w[blk + 4u + (j / 2u) * 8u + l] >> (4u * (j % 2u))) & 0x0f0f0f0fu;
                let x = xq[64u * (xo + b) + 8u * j + l];
                isum += dot4I8Packed(nib, x);
                xsum += dot4I8Packed(0x01010101u, x);
            }
            acc += i32(sc) * isum;
            mins += i32(m) * xsum;
        }
        let d = f16_to_f32(w[blk] & 0xffffu) * xd[xo + b];
        let dmin = f16_to_f32(w[blk] >> 16u) * xd[xo + b];
        // The CPU rounds both products, subtracts, then adds: keep the compiler from fusing.
        sum = sum + (opaque(d * f32(acc)) - opaque(dmin * f32(mins)));
    }
    y[wg.z * p.out_stride + p.row0 + r] = sum;
}
