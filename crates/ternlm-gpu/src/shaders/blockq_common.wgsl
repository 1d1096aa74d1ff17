// ---- blockq_common.wgsl: the start of every block-quantized GEMV shader ----
// One token through a ggml block-quantized weight matrix, in the float order of
// ternlm_kernels::blockq's portable dot products (what BlockMatrix::gemm_at(Isa::Scalar)
// runs): per block, 8 exact int32 lanes (lane l holds elements 4l..4l+3); per lane
// acc = fma(block scale, f32(lane), acc) across blocks in order; hsum8 folds the lanes.
// The CPU's fma is Rust's f32::mul_add, rounded once; WGSL's fma() need not be fused (Vulkan
// gives it the accuracy of a multiply and an add, and lavapipe does not fuse it: measured),
// so the shaders use fma_exact below.
//
// Weights are not the GGUF bytes as they lie in the file (34/18/20/210-byte blocks are not
// word aligned) but repacked at upload into whole words per block (each shader's header says
// how). Activations are ggml's Q8_0/Q8_1/Q8_K blocks as QuantActs holds them: q packed 4 per
// word, one f32 scale (and for Q8_1 one f32 d * Σq) per block; F16 takes f16-rounded floats.
requires packed_4x8_integer_dot_product;

struct Params {
    rows: u32,      // rows in this chunk
    row0: u32,      // first output row of this chunk
    blocks: u32,    // 32-value blocks per row (F16: columns)
    row_words: u32, // u32 words per row
    wgx: u32,       // workgroups along x of the dispatch (rows may need a 2-D grid)
    zero: u32,      // always 0; see opaque()
    pad0: u32,
    pad1: u32,
}

const WG: u32 = 64u;

// Returns v unchanged through a value the compiler cannot know (p.zero is 0 at run time):
// SPIR-V lets drivers contract a * b + c into one FMA where the CPU rounds the product first.
fn opaque(v: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(v) ^ p.zero);
}

// IEEE half (low 16 bits of h) to f32, exactly, subnormals included: done with integer
// operations because WGSL lets unpack2x16float flush f16 subnormals.
fn f16_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0u) {
        // m * 2^-24: an integer times a power of two, exact in f32.
        let v = f32(m) * 5.9604644775390625e-8;
        return bitcast<f32>(bitcast<u32>(v) | sign);
    }
    if (e == 31u) {
        return bitcast<f32>(sign | 0x7f800000u | (m << 13u));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

// ggml's hsum_float_8 (as ternlm_kernels::blockq::hsum_float_8): upper half plus lower half,
// then pairs, then the last two.
fn hsum8(a: array<f32, 8>) -> f32 {
    let t0 = a[4] + a[0];
    let t1 = a[5] + a[1];
    let t2 = a[6] + a[2];
    let t3 = a[7] + a[3];
    return (t0 + t2) + (t1 + t3);
}

fn row_index(wg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * p.wgx + wg.x) * WG + lid;
}

// (s, e) with s = a + b rounded and s + e = a + b exactly (Knuth's TwoSum). The opaque()
// calls keep the compiler from simplifying (s - a) and friends algebraically.
fn two_sum(a: f32, b: f32) -> vec2<f32> {
    let s = opaque(a + b);
    let bb = opaque(s - a);
    let e = (a - opaque(s - bb)) + (b - bb);
    return vec2<f32>(s, e);
}

// The upper 12 significant bits of a (the lower 12 are a minus this, exactly).
fn hi12(a: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(a) & 0xfffff000u);
}

// a * b + c rounded once to nearest even, from operations that each round (so it does not
// matter whether the device fuses): the exact product as p + e (Dekker's product, the
// halves' products being exact), c + p as th + tl (TwoSum), then th plus tl + e rounded to
// odd. Rounding the small part to odd before the last addition makes the double rounding
// exact (Boldo and Melquiond, "Emulation of FMA and correctly rounded sums: proved
// algorithms using rounding to odd", 2008). Valid while nothing underflows: the scales
// and sums here stay far above 2^-100.
fn fma_exact(a_in: f32, b: f32, c: f32) -> f32 {
    // The callers' `a` is itself a product: opaque keeps a driver from fusing it into
    // `a - ah` below, which would split a value other than the rounded a.
    let a = opaque(a_in);
    let p = opaque(a * b);
    let ah = hi12(a);
    let al = a - ah;
    let bh = hi12(b);
    let bl = b - bh;
    let e = ((ah * bh - p) + ah * bl + al * bh) + al * bl;
    let t = two_sum(c, p);
    let u = two_sum(t.y, e);
    var v = u.x;
    let vb = bitcast<u32>(v);
    // Round to odd: an inexact even result moves one ULP towards the exact sum.
    if (u.y != 0.0 && (vb & 1u) == 0u) {
        if (((vb ^ bitcast<u32>(u.y)) & 0x80000000u) == 0u) {
            v = bitcast<f32>(vb + 1u);
        } else {
            v = bitcast<f32>(vb - 1u);
        }
    }
    return t.x + v;
}
