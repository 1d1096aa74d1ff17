// ---- blockq_q6_k.wgsl: Q6_K weights times Q8_K activations (256-value blocks) ----
// A block is 53 words: the GGUF block's first 208 bytes unchanged (ql: 128 bytes of low
// nibbles, qh: 64 bytes of 2-bit high parts, 16 int8 sub-block scales), then a word with
// the f16 d. Values are 6 bits minus 32. As ternlm_kernels::blockq::dot_q6k: per block,
// lane l sums sc * q * x exactly over elements 4l..4l+3 of each 32-value run, then one
// fma per lane with d8 * d.

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> xq: array<u32>;
@group(0) @binding(2) var<storage, read> xd: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(64)
fn gemv_q6_k(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = row_index(wg, lid);
    if (r >= p.rows) { return; }
    let base = r * p.row_words;
    // This token's activation blocks.
    let xo = wg.z * p.blocks;
    var acc = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (var b = 0u; b < p.blocks; b++) {
        let blk = base + b * 53u;
        var lanes = array<i32, 8>(0, 0, 0, 0, 0, 0, 0, 0);
        // Half h, run j: elements 128h + 32j + (0..32). Word L of a run is its lane L.
        for (var h = 0u; h < 2u; h++) {
            for (var j = 0u; j < 4u; j++) {
                for (var l = 0u; l < 8u; l++) {
                    // Runs 0 and 2 read ql bytes 64h.., runs 1 and 3 bytes 64h + 32..; runs 0
                    // and 1 the low nibbles, 2 and 3 the high; qh holds run j at shift 2j.
                    let lo = (w[blk + 16u * h + 8u * (j & 1u) + l] >> (4u * (j >> 1u))) & 0x0f0f0f0fu;
                    let hi = (w[blk + 32u + 8u * h + l] >> (2u * j)) & 0x03030303u;
                    let x = xq[64u * (xo + b) + 32u * h + 8u * j + l];
                    // (v - 32) summed with dot4I8Packed on the unsigned 6-bit values, exact.
                    let isum = dot4I8Packed(lo | (hi << 4u), x) - 32 * dot4I8Packed(0x01010101u, x);
                    let si = 8u * h + 2u * j + (l >> 2u);
                    let sc = extractBits(bitcast<i32>(w[blk + 48u + si / 4u]), 8u * (si % 4u), 8u);
                    lanes[l] += sc * isum;
                }
            }
        }
        // |lane| <= 32 * 128 * 32 * 127 < 2^24: f32(lane) is exact.
        let d = xd[xo + b] * f16_to_f32(w[blk + 52u] & 0xffffu);
        for (var l = 0u; l < 8u; l++) {
            acc[l] = fma_exact(d, f32(lanes[l]), acc[l]);
        }
    }
    y[wg.z * p.out_stride + p.row0 + r] = hsum8(acc);
}
