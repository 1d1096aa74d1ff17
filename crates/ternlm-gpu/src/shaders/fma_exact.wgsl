
// ---- fma_exact.wgsl: a fused multiply-add from rounded operations (appended where needed;
// the including shader defines opaque() (see blockq_common.wgsl) and includes two_sum.wgsl) ----

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
