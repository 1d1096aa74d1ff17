// Causal attention over an F16 KV cache on the device, and the cache writes, the twins of
// ternlm_kernels::attention (llama.cpp's CPU flash attention) and KvCache::write.
//
// The cache holds f16 values two to a word (the even column low), rows of kv_stride values
// per position. attention runs one workgroup per (query head, token): the query is rounded
// to f16, each score is ggml's F16 dot product in its lane order (products of two f16
// values are exact in f32, so its fused multiply-adds are plain adds here) times the scale,
// and the online softmax and F16 value accumulator advance position by position in the
// CPU's order, each update one exact fma rounded to f16. Only exp() is the device's own, so
// results stay within a few f16 ULP of the CPU's, not bit for bit; a head size that is not
// a multiple of 64 adds its tail in f32 where the CPU uses f64.

struct Params {
    group: u32,     // query heads per KV head
    head_dim: u32,
    kv_stride: u32, // values per cached position (n_kv_heads * head_dim)
    pos0: u32,      // position of the segment's first token
    q_row0: u32,    // the segment's first row in q and out
    q_stride: u32,  // values per row of q and out
    scale: f32,     // 1 / sqrt(head_dim)
    zero: u32,      // always 0; see opaque()
    // kv_write: copies `count` values (even) from src[src_off..] into the cache at dst_off.
    src_off: u32,
    dst_off: u32,
    count: u32,
    wgx: u32,
}

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> kc: array<u32>;
@group(0) @binding(2) var<storage, read> vc: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;
@group(0) @binding(5) var<storage, read> src: array<f32>;
@group(0) @binding(6) var<storage, read_write> dst: array<u32>;

const WG: u32 = 64u;
// Head dimensions each invocation accumulates: head_dim <= 4 * WG.
const DIMS: u32 = 4u;

fn opaque(v: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(v) ^ p.zero);
}

fn k_at(i: u32) -> f32 {
    return f16_to_f32(kc[i / 2u] >> (16u * (i & 1u)));
}

fn v_at(i: u32) -> f32 {
    return f16_to_f32(vc[i / 2u] >> (16u * (i & 1u)));
}

// Two values per invocation, rounded to f16 and packed into one cache word.
@compute @workgroup_size(64)
fn kv_write(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.y * p.wgx + wg.x) * WG + lid;
    if (2u * i >= p.count) { return; }
    let lo = f16_bits(src[p.src_off + 2u * i]);
    let hi = f16_bits(src[p.src_off + 2u * i + 1u]);
    dst[p.dst_off / 2u + i] = lo | (hi << 16u);
}

var<workgroup> qs: array<f32, 256>;
var<workgroup> scores: array<f32, 64>;

// ggml's F16 dot product of the cached key at `off` with the f16-rounded query: 4 x 16 lanes
// over steps of 64 values, folded as its AVX-512 build does.
fn score(off: u32) -> f32 {
    let hd = p.head_dim;
    let k64 = hd / 64u * 64u;
    var v = array<f32, 16>();
    for (var l = 0u; l < 16u; l++) {
        var lane = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
        for (var s = 0u; s < k64; s += 64u) {
            for (var j = 0u; j < 4u; j++) {
                let i = s + 16u * j + l;
                lane[j] = lane[j] + k_at(off + i) * qs[i];
            }
        }
        v[l] = (lane[0] + lane[2]) + (lane[1] + lane[3]);
    }
    var t3 = array<f32, 8>();
    for (var i = 0u; i < 8u; i++) { t3[i] = v[i + 8u] + v[i]; }
    var t6 = array<f32, 4>();
    for (var i = 0u; i < 4u; i++) { t6[i] = t3[i + 4u] + t3[i]; }
    var sum = (t6[0] + t6[2]) + (t6[1] + t6[3]);
    for (var i = k64; i < hd; i++) {
        sum = sum + k_at(off + i) * qs[i];
    }
    return sum;
}

@compute @workgroup_size(64)
fn attention(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let h = wg.x;
    let i = wg.y;
    let hd = p.head_dim;
    let qbase = (p.q_row0 + i) * p.q_stride + h * hd;
    for (var d = t; d < hd; d += WG) {
        qs[d] = round_f16(q[qbase + d]);
    }
    workgroupBarrier();
    let col0 = (h / p.group) * hd;
    let n_pos = p.pos0 + i + 1u;
    var acc = array<f32, DIMS>(0.0, 0.0, 0.0, 0.0);
    // The running maximum starts below any score (the CPU's -inf: its first rescale is by 0).
    var mx = -3.4028235e38;
    var first = true;
    var sum = 0.0;
    for (var tile = 0u; tile < n_pos; tile += WG) {
        if (tile + t < n_pos) {
            scores[t] = opaque(score((tile + t) * p.kv_stride + col0)) * p.scale;
        }
        workgroupBarrier();
        let count = min(WG, n_pos - tile);
        for (var j = 0u; j < count; j++) {
            let s = scores[j];
            var ms = 1.0;
            var vs = 1.0;
            if (first || s > mx) {
                ms = select(exp(mx - s), 0.0, first);
                mx = s;
                first = false;
            } else {
                vs = exp(s - mx);
            }
            sum = fma_exact(sum, ms, vs);
            let off = (tile + j) * p.kv_stride + col0;
            for (var k = 0u; k < DIMS; k++) {
                let d = t + WG * k;
                if (d < hd) {
                    var a = acc[k];
                    if (ms != 1.0) { a = round_f16(a * ms); }
                    acc[k] = round_f16(fma_exact(v_at(off + d), vs, a));
                }
            }
        }
        workgroupBarrier();
    }
    // The CPU (like ggml) scales by the reciprocal rather than dividing: they round differently.
    let inv = div_exact(1.0, sum);
    for (var k = 0u; k < DIMS; k++) {
        let d = t + WG * k;
        if (d < hd) {
            out[qbase + d] = opaque(acc[k] * inv);
        }
    }
}
