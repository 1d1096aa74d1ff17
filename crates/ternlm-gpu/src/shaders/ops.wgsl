// Elementwise and per-pair ops of the forward pass, each the device twin of a
// ternlm_kernels::ops function: residual add, the gated FFN activations (SiLU, squared ReLU)
// and rotary embeddings. One value (or rotated pair) per invocation over a 2-D grid.
// add and squared ReLU give the CPU's bits (products kept apart from sums, see opaque()),
// rope too (its multiply-adds fused exactly, see fma_exact.wgsl); SiLU's exp and division
// are the device's own, within a few ULP of the CPU's.

struct Params {
    n: u32,        // items: values, or rotated pairs for rope
    wgx: u32,      // workgroups along x of the grid
    zero: u32,     // always 0; see opaque()
    head_dim: u32, // rope: values per head
    half: u32,     // rope: rotated pairs per head (rope_dims / 2)
    heads: u32,    // rope: heads per row
    neox: u32,     // rope: 1 pairs (i, i + half), 0 pairs (2i, 2i + 1)
    pad: u32,
}

@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

const WG: u32 = 256u;

// v unchanged, through a value the compiler cannot know: keeps a product out of an FMA.
fn opaque(v: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(v) ^ p.zero);
}

fn item(wg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * p.wgx + wg.x) * WG + lid;
}

// a += b
@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = item(wg, lid);
    if (i >= p.n) { return; }
    a[i] = a[i] + b[i];
}

// a = silu(a) * b, silu(x) = x / (1 + exp(-x))
@compute @workgroup_size(256)
fn gate_silu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = item(wg, lid);
    if (i >= p.n) { return; }
    let g = a[i];
    a[i] = (g / (1.0 + exp(-g))) * b[i];
}

// a = relu(a)^2 * b
@compute @workgroup_size(256)
fn gate_relu2(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = item(wg, lid);
    if (i >= p.n) { return; }
    let r = max(a[i], 0.0);
    a[i] = (r * r) * b[i];
}

// Rotates pair j of every head of every row of a by the row's (cos, sin) in b (b holds, per
// row, `half` pairs of floats: ternlm_kernels::ops::rope_cache's values).
@compute @workgroup_size(256)
fn rope(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = item(wg, lid);
    if (i >= p.n) { return; }
    let j = i % p.half;
    let head = i / p.half;
    let row = head / p.heads;
    let base = head * p.head_dim;
    var ia = base + 2u * j;
    var ib = ia + 1u;
    if (p.neox != 0u) {
        ia = base + j;
        ib = base + j + p.half;
    }
    let c = b[2u * (row * p.half + j)];
    let s = b[2u * (row * p.half + j) + 1u];
    let x0 = a[ia];
    let x1 = a[ib];
    // The CPU's (and ggml's) rotation: one product fused into each sum.
    a[ia] = fma_exact(x0, c, -opaque(x1 * s));
    a[ib] = fma_exact(x0, s, opaque(x1 * c));
}
