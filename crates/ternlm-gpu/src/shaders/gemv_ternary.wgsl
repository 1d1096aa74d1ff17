// Ternary x int8 GEMV for one token per workgroup z (a batch of tokens is a GEMM), from ternlm's 2-bit layout (ternlm_kernels::ternary):
// y[r] = (sum over scale blocks b of f32(isum_b) * scale_b) / s, with exact integer sums and
// the CPU's float operations in the CPU's order.
//
// Weights: each row is the CPU's packed row (cols / 4 bytes) padded to whole u32 words. The
// first kc = cols - cols % 128 trits are groups of 128 in 32 bytes (8 words): byte j holds
// trits j, j+32, j+64, j+96 at shifts 0, 2, 4, 6. So in word i of a group, plane m (shift 2m)
// holds the codes of trits 32m + 4i .. 32m + 4i + 3: exactly the 4 int8 activations of q word
// 8m + i of that group, and one dot4I8Packed multiplies them. The ragged tail (cols % 128) is
// 4 trits per byte in order. Codes are trit + 1, so a group's sum subtracts the activations'
// group sum (from the quantize kernel) to get sum(trit * q).
requires packed_4x8_integer_dot_product;

struct Params {
    rows: u32,        // rows in this chunk
    row0: u32,        // first output row of this chunk
    cols: u32,
    row_words: u32,   // u32 words per padded row
    kc: u32,          // grouped columns (multiple of 128)
    block: u32,       // columns per scale block
    nb: u32,          // scale blocks per row
    flags: u32,       // bit 0: one scale per (row, block), else one for the matrix; bit 1: see below
    zero: u32,        // always 0; see opaque()
    wgx: u32,         // workgroups along x of the dispatch (rows may need a 2-D grid)
    out_stride: u32, // outputs per token: the whole matrix's rows
    meta_stride: u32, // words of qmeta per token
}

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> scales: array<f32>;
@group(0) @binding(2) var<storage, read> q: array<u32>;
@group(0) @binding(3) var<storage, read> qmeta: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

const WG: u32 = 64u;
const M: u32 = 0x03030303u;
const PER_ROW_SCALES: u32 = 1u;
// The CPU's common path writes `isum * scale / s` directly; its general path starts from
// 0.0 and adds each block's product. The two differ only in the sign of a zero result.
const DIRECT: u32 = 2u;

// Returns v unchanged, but through a value the compiler cannot know (p.zero is 0 at run
// time): SPIR-V lets drivers contract a * b + c into an FMA, which rounds once where the CPU
// rounds twice. Passing the product through this keeps the multiply and the add apart.
fn opaque(v: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(v) ^ p.zero);
}

// Code (trit + 1) of column k of the row starting at word `base`.
fn code(base: u32, k: u32) -> i32 {
    var byte: u32;
    var shift: u32;
    if (k < p.kc) {
        let j = k % 128u;
        byte = (k / 128u) * 32u + j % 32u;
        shift = 2u * (j / 32u);
    } else {
        let t = k - p.kc;
        byte = p.kc / 4u + t / 4u;
        shift = 2u * (t % 4u);
    }
    return i32((w[base + byte / 4u] >> (8u * (byte % 4u) + shift)) & 3u);
}

// Activation k of the token whose words start at q0.
fn qval(q0: u32, k: u32) -> i32 {
    return extractBits(bitcast<i32>(q[q0 + k / 4u]), 8u * (k % 4u), 8u);
}

// Exact sum of trit * q over columns [k0, k1) of the row at `base`: whole groups with
// dot4I8Packed, anything else (ragged tail, blocks not on group boundaries) one column at a time.
fn block_sum(base: u32, q0: u32, m0: u32, k0: u32, k1: u32) -> i32 {
    var acc = 0i;
    var k = k0;
    loop {
        if (k >= k1) { break; }
        if (k % 128u == 0u && k + 128u <= min(k1, p.kc)) {
            let g = k / 128u;
            let wb = base + g * 8u;
            let qb = q0 + g * 32u;
            for (var i = 0u; i < 8u; i++) {
                let wd = w[wb + i];
                acc += dot4I8Packed(wd & M, q[qb + i]);
                acc += dot4I8Packed((wd >> 2u) & M, q[qb + 8u + i]);
                acc += dot4I8Packed((wd >> 4u) & M, q[qb + 16u + i]);
                acc += dot4I8Packed((wd >> 6u) & M, q[qb + 24u + i]);
            }
            acc -= bitcast<i32>(qmeta[m0 + 2u + g]);
            k += 128u;
        } else {
            acc += (code(base, k) - 1) * qval(q0, k);
            k += 1u;
        }
    }
    return acc;
}

// One row per invocation: on llvmpipe this beat a workgroup-per-row reduction 3-5x (the
// spike's measurement); real GPUs will want a variant.
@compute @workgroup_size(64)
fn gemv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = (wg.y * p.wgx + wg.x) * WG + lid;
    if (r >= p.rows) { return; }
    let base = r * p.row_words;
    let t = wg.z;
    let q0 = t * (p.cols / 4u);
    let m0 = t * p.meta_stride;
    let s = bitcast<f32>(qmeta[m0]);
    var acc = 0.0;
    for (var b = 0u; b < p.nb; b++) {
        let isum = block_sum(base, q0, m0, b * p.block, (b + 1u) * p.block);
        var sc = scales[0];
        if ((p.flags & PER_ROW_SCALES) != 0u) { sc = scales[r * p.nb + b]; }
        let prod = opaque(f32(isum) * sc);
        if (b == 0u && (p.flags & DIRECT) != 0u) {
            acc = prod;
        } else {
            acc = acc + prod;
        }
    }
    // The CPU divides by s (it does not multiply by 1/s); div_exact rounds the same way.
    y[t * p.out_stride + p.row0 + r] = div_exact(acc, s);
}
