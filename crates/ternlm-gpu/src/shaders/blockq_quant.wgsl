// Activation preparation for the block GEMVs, the device twin of BlockMatrix::prepare for one
// token (ternlm_kernels::act_quant's Q8_0, Q8_1 and Q8_K, and F16's rounding), bit for bit:
// amax is an exact max, the divisions use div_exact (WGSL's `/` may be 2.5 ULP off), WGSL's
// round() is half to even like round_ties_even, and f16 rounding is done on the bits
// (WGSL's pack2x16float need not round to nearest even; round_f16 in f16.wgsl).

struct Params { blocks: u32, with_s: u32, pad0: u32, pad1: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> q: array<u32>;
@group(0) @binding(2) var<storage, read_write> d: array<f32>;
@group(0) @binding(3) var<storage, read_write> s: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;
@group(0) @binding(5) var<storage, read_write> xf: array<f32>;

const WG: u32 = 64u;

fn q8(v: f32, id: f32) -> u32 {
    return u32(i32(round(v * id))) & 0xffu;
}

// ggml's Q8_0 (and Q8_1 when p.with_s) for one 32-value block per invocation:
// d = amax / 127 rounded to f16, q = round(x * (127 / amax)), s = f16(d * Σq) with the
// unrounded d, as ternlm_kernels::act_quant::quantize_q8_0_block.
@compute @workgroup_size(64)
fn quant_q8(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.x;
    if (b >= p.blocks) { return; }
    var amax = 0.0;
    for (var i = 0u; i < 32u; i++) { amax = max(amax, abs(x[32u * b + i])); }
    let dd = div_exact(amax, 127.0);
    var id = 0.0;
    if (amax != 0.0) { id = div_exact(127.0, amax); }
    var sum = 0i;
    for (var w = 0u; w < 8u; w++) {
        var word = 0u;
        for (var k = 0u; k < 4u; k++) {
            let v = q8(x[32u * b + 4u * w + k], id);
            word |= v << (8u * k);
            sum += extractBits(bitcast<i32>(v), 0u, 8u);
        }
        q[8u * b + w] = word;
    }
    d[b] = round_f16(dd);
    if (p.with_s != 0u) { s[b] = round_f16(dd * f32(sum)); }
}

// ggml's Q8_K for one 256-value block per invocation: the signed value of largest magnitude
// (the first, on ties) maps to -127: q = min(round(x * (-127 / max)), 127), d = 1 / iscale.
@compute @workgroup_size(64)
fn quant_q8k(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.x;
    if (b >= p.blocks) { return; }
    var amax = 0.0;
    var mx = 0.0;
    for (var i = 0u; i < 256u; i++) {
        let v = x[256u * b + i];
        if (abs(v) > amax) {
            amax = abs(v);
            mx = v;
        }
    }
    if (amax == 0.0) {
        for (var w = 0u; w < 64u; w++) { q[64u * b + w] = 0u; }
        d[b] = 0.0;
        return;
    }
    // div_exact takes a positive divisor; negating a correctly rounded quotient is exact.
    var iscale = div_exact(127.0, amax);
    if (mx > 0.0) { iscale = -iscale; }
    for (var w = 0u; w < 64u; w++) {
        var word = 0u;
        for (var k = 0u; k < 4u; k++) {
            let v = min(round(iscale * x[256u * b + 4u * w + k]), 127.0);
            word |= (u32(i32(v)) & 0xffu) << (8u * k);
        }
        q[64u * b + w] = word;
    }
    let inv = div_exact(1.0, abs(iscale));
    d[b] = select(inv, -inv, iscale < 0.0);
}

// F16 weights' activations: each value rounded to f16 and back.
@compute @workgroup_size(64)
fn quant_f16(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.blocks) { return; }
    xf[i] = round_f16(x[i]);
}

// BF16 weights' activations: each value rounded to bf16 (nearest, ties to even; NaN stays
// NaN) and back, as half's bf16::from_f32.
@compute @workgroup_size(64)
fn quant_bf16(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.blocks) { return; }
    let b = bitcast<u32>(x[i]);
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        xf[i] = bitcast<f32>(b | 0x00400000u);
        return;
    }
    let r = (b + 0x7fffu + ((b >> 16u) & 1u)) & 0xffff0000u;
    xf[i] = bitcast<f32>(r);
}
