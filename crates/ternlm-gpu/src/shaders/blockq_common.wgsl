// ---- blockq_common.wgsl: the start of every block-quantized GEMV shader ----
// One token (workgroup z) through a ggml block-quantized weight matrix, in the float order of
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
    out_stride: u32, // outputs per token: the whole matrix's rows
    pad0: u32,
}

const WG: u32 = 64u;

// Returns v unchanged through a value the compiler cannot know (p.zero is 0 at run time):
// SPIR-V lets drivers contract a * b + c into one FMA where the CPU rounds the product first.
fn opaque(v: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(v) ^ p.zero);
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

