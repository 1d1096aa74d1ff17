// ---- blockq_f16.wgsl: F16 weights times f16-rounded f32 activations ----
// Each row's halves as in the file, 2 a word (the even column low), padded to a whole word.
// The activations are rounded through f16 already (quant_f16 in blockq_quant.wgsl, or
// PreparedActs::float from the host).
// ternlm_kernels::f16_rows::dot_row: lane l accumulates fma(w[8s + l], x[8s + l], acc) in
// order of s, hsum8 folds the lanes, and the last cols % 8 products are added after in f64.

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

fn weight(base: u32, i: u32) -> f32 {
    return f16_to_f32(w[base + i / 2u] >> (16u * (i & 1u)));
}

@compute @workgroup_size(64)
fn gemv_f16(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = row_index(wg, lid);
    if (r >= p.rows) { return; }
    let base = r * p.row_words;
    let cols = p.blocks;
    // This token's activations.
    let xo = wg.z * cols;
    let yo = wg.z * p.out_stride + p.row0 + r;
    let k8 = cols / 8u * 8u;
    var acc = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (var s = 0u; s < k8; s += 8u) {
        for (var l = 0u; l < 8u; l++) {
            // The CPU fuses w * x + acc. Both factors are f16 values (11 significant bits
            // each), so their product is exact in f32 and rounding only the sum is the fused
            // result: no fma_exact needed, provided x really was rounded through f16.
            acc[l] = opaque(weight(base, s + l) * x[xo + s + l]) + acc[l];
        }
    }
    // The CPU adds the tail's f32 products to the folded lanes in f64 and rounds the sum to
    // f32 once. WGSL has no f64: tail_sum emulates that sum exactly in 128-bit fixed point.
    let folded = hsum8(acc);
    var fx = to_fixed(folded);
    var ok = fx.ok;
    var sum = fx.v;
    // A zero sum is -0.0 on the CPU only if every addend was -0.0.
    var neg_zero = bitcast<u32>(folded) == 0x80000000u;
    var approx = folded;
    for (var i = k8; i < cols; i++) {
        // Both factors are f16 values: the product is exact, a multiple of 2^-48.
        let t = weight(base, i) * x[xo + i];
        approx = approx + t;
        neg_zero = neg_zero && bitcast<u32>(t) == 0x80000000u;
        let tx = to_fixed(t);
        ok = ok && tx.ok;
        sum = round_to(add(sum, tx.v), 53u);
    }
    if (k8 == cols) {
        y[yo] = folded;
    } else if (!ok) {
        // Only when x was not rounded through f16, or a sum overflowed: f32 within the
        // tolerance the tests measure for that path.
        y[yo] = approx;
    } else if (neg_zero) {
        y[yo] = -0.0;
    } else {
        y[yo] = to_f32(round_to(sum, 24u));
    }
}

// ---- Exact f64-style sums for the F16 tail ----
// Every value here (f16 x f16 products and sums of them rounded to f32 or f64) is a multiple
// of 2^-48, in practice far below 2^74 in magnitude, so a 128-bit two's complement integer counting units of
// 2^-48 (word 0 least significant) holds each exactly; rounding it to 53 significant bits is
// exactly the CPU's f64 addition.

struct Fixed {
    v: array<u32, 4>,
    ok: bool,
}

fn negate(a: array<u32, 4>) -> array<u32, 4> {
    var r = array<u32, 4>(~a[0], ~a[1], ~a[2], ~a[3]);
    return add(r, array<u32, 4>(1u, 0u, 0u, 0u));
}

fn add(a: array<u32, 4>, b: array<u32, 4>) -> array<u32, 4> {
    var r: array<u32, 4>;
    var carry = 0u;
    for (var i = 0u; i < 4u; i++) {
        let s1 = a[i] + b[i];
        let s2 = s1 + carry;
        carry = select(0u, 1u, s1 < a[i]) | select(0u, 1u, s2 < s1);
        r[i] = s2;
    }
    return r;
}

// v in units of 2^-48; ok is false when v is not finite, not a multiple of 2^-48 or not
// below 2^74.
fn to_fixed(v: f32) -> Fixed {
    var out = Fixed(array<u32, 4>(0u, 0u, 0u, 0u), true);
    let b = bitcast<u32>(v);
    let e = (b >> 23u) & 0xffu;
    if ((b & 0x7fffffffu) == 0u) { return out; }
    // Below 2^74 (2^122 units), so a tail of 7 such values and the folded sum cannot wrap.
    if (e == 0u || e > 200u) {
        out.ok = false;
        return out;
    }
    var m = (b & 0x7fffffu) | 0x800000u;
    // v = m * 2^(e - 150) = m * 2^(e - 102) units.
    let sh = i32(e) - 102;
    if (sh < 0) {
        let drop = u32(-sh);
        if (drop >= 24u || (m & ((1u << drop) - 1u)) != 0u) {
            out.ok = false;
            return out;
        }
        out.v[0] = m >> drop;
    } else {
        let wi = u32(sh) / 32u;
        let bit = u32(sh) % 32u;
        out.v[wi] = m << bit;
        if (bit != 0u && wi < 3u) {
            out.v[wi + 1u] = m >> (32u - bit);
        }
    }
    if ((b & 0x80000000u) != 0u) {
        out.v = negate(out.v);
    }
    return out;
}

// Index of the highest set bit of a nonzero magnitude (-1 for zero).
fn top_bit(a: array<u32, 4>) -> i32 {
    for (var i = 3i; i >= 0; i--) {
        if (a[i] != 0u) { return i * 32 + i32(firstLeadingBit(a[i])); }
    }
    return -1;
}

fn bit_at(a: array<u32, 4>, k: u32) -> bool {
    return ((a[k / 32u] >> (k % 32u)) & 1u) != 0u;
}

// a rounded to `bits` significant bits, to nearest even, as f64 (53) or f32 (24) would.
fn round_to(a: array<u32, 4>, bits: u32) -> array<u32, 4> {
    let neg = (a[3] & 0x80000000u) != 0u;
    var m = a;
    if (neg) { m = negate(a); }
    let t = top_bit(m);
    if (t < i32(bits)) { return a; }
    let k = u32(t) + 1u - bits;   // the lowest bit kept
    let half = bit_at(m, k - 1u);
    var sticky = false;
    let kw = (k - 1u) / 32u;
    for (var i = 0u; i < kw; i++) { sticky = sticky || m[i] != 0u; }
    sticky = sticky || (m[kw] & ((1u << ((k - 1u) % 32u)) - 1u)) != 0u;
    // Clear everything below bit k.
    for (var i = 0u; i < 4u; i++) {
        if ((i + 1u) * 32u <= k) {
            m[i] = 0u;
        } else if (i * 32u < k) {
            m[i] &= ~((1u << (k % 32u)) - 1u);
        }
    }
    if (half && (sticky || bit_at(m, k))) {
        var one = array<u32, 4>(0u, 0u, 0u, 0u);
        one[k / 32u] = 1u << (k % 32u);
        m = add(m, one);
    }
    if (neg) { return negate(m); }
    return m;
}

// A value with at most 24 significant bits to f32 (exact).
fn to_f32(a: array<u32, 4>) -> f32 {
    let neg = (a[3] & 0x80000000u) != 0u;
    var m = a;
    if (neg) { m = negate(a); }
    let t = top_bit(m);
    if (t < 0) { return 0.0; }
    var v: f32;
    if (t < 24) {
        // An integer below 2^24 times a power of two: both steps exact.
        v = f32(m[0]) * 3.552713678800501e-15;
    } else {
        let sh = u32(t) - 23u;
        var mant = m[sh / 32u] >> (sh % 32u);
        if (sh % 32u != 0u && sh / 32u < 3u) {
            mant |= m[sh / 32u + 1u] << (32u - sh % 32u);
        }
        v = bitcast<f32>((u32(t - 48 + 127) << 23u) | (mant & 0x7fffffu));
    }
    if (neg) { return -v; }
    return v;
}
