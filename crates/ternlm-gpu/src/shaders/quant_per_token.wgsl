// Per-token int8 quantization (BitNet's BitLinear), the device twin of
// ternlm_kernels::act_quant::quantize_per_token: s = 127 / max(amax, 1e-5),
// q = clamp(round_half_even(x * s), -128, 127). One workgroup per token row.
//
// Outputs, per row: q packed 4 per u32 (WGSL storage has no 8-bit type; byte i of a word is
// column 4w + i, the order dot4I8Packed reads), and `meta` = [s (f32 bits), tsum, gsum[0..groups]]
// where gsum[g] is the sum of q over columns 128g..128g+127 (the last group may be shorter), as
// QuantActs::bsums: the GEMV multiplies unsigned codes (trit + 1) and subtracts these.

struct Params { cols: u32, groups: u32, meta_stride: u32, pad: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> q: array<u32>;
@group(0) @binding(2) var<storage, read_write> qmeta: array<u32>;
@group(0) @binding(3) var<uniform> p: Params;

const WG: u32 = 256u;
var<workgroup> red_f: array<f32, WG>;
var<workgroup> red_i: array<i32, WG>;

// One quantized value. Every thread that needs q[k] recomputes it with the same two float
// operations (a multiply and a round, no sum the compiler could reassociate or fuse), so the
// packed words and the group sums agree without a storage barrier between them.
fn quant(v: f32, s: f32) -> i32 {
    // WGSL round() rounds half to even, as Rust's round_ties_even.
    return i32(clamp(round(v * s), -128.0, 127.0));
}

@compute @workgroup_size(256)
fn quantize(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let row = wg.x;
    let base = row * p.cols;
    var m = 0.0;
    for (var i = t; i < p.cols; i += WG) {
        m = max(m, abs(x[base + i]));
    }
    red_f[t] = m;
    workgroupBarrier();
    for (var off = WG / 2u; off > 0u; off >>= 1u) {
        if (t < off) { red_f[t] = max(red_f[t], red_f[t + off]); }
        workgroupBarrier();
    }
    // max is exact and order-free, so amax equals the CPU's; div_exact rounds as the CPU's
    // division does (WGSL's `/` may be 2.5 ULP off, which would move q at rounding ties).
    let s = div_exact(127.0, max(red_f[0], 1e-5));

    let words = p.cols / 4u;
    for (var w = t; w < words; w += WG) {
        let k = base + 4u * w;
        let packed = (u32(quant(x[k], s)) & 0xffu)
            | ((u32(quant(x[k + 1u], s)) & 0xffu) << 8u)
            | ((u32(quant(x[k + 2u], s)) & 0xffu) << 16u)
            | ((u32(quant(x[k + 3u], s)) & 0xffu) << 24u);
        q[row * words + w] = packed;
    }

    let mbase = row * p.meta_stride;
    var part = 0i;
    for (var g = t; g < p.groups; g += WG) {
        var gs = 0i;
        let end = min(p.cols, (g + 1u) * 128u);
        for (var k = g * 128u; k < end; k++) {
            gs += quant(x[base + k], s);
        }
        qmeta[mbase + 2u + g] = bitcast<u32>(gs);
        part += gs;
    }
    red_i[t] = part;
    workgroupBarrier();
    for (var off = WG / 2u; off > 0u; off >>= 1u) {
        if (t < off) { red_i[t] += red_i[t + off]; }
        workgroupBarrier();
    }
    if (t == 0u) {
        qmeta[mbase] = bitcast<u32>(s);
        qmeta[mbase + 1u] = bitcast<u32>(red_i[0]);
    }
}
