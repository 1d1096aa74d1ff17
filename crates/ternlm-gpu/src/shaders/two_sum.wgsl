
// ---- two_sum.wgsl: an exact sum of two floats as a pair (appended where needed; the
// including shader defines opaque()) ----

// (s, e) with s = a + b rounded and s + e = a + b exactly (Knuth's TwoSum). The opaque()
// calls keep the compiler from simplifying (s - a) and friends algebraically.
fn two_sum(a: f32, b: f32) -> vec2<f32> {
    let s = opaque(a + b);
    let bb = opaque(s - a);
    let e = (a - opaque(s - bb)) + (b - bb);
    return vec2<f32>(s, e);
}

