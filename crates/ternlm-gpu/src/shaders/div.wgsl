
// ---- div.wgsl: appended to the kernels that divide (WGSL directives must come first) ----

// a / b rounded to nearest even, as the CPU's f32 division, for b positive and normal and a
// finite. WGSL lets `/` be 2.5 ULP off; ternlm's outputs must match the CPU's bits, so the
// quotient is computed from the significands by long division in u32. Cases this does not
// need exactly (a subnormal, a result outside the normal range) fall back to `/`.
fn div_exact(a: f32, b: f32) -> f32 {
    let ab = bitcast<u32>(a);
    let bb = bitcast<u32>(b);
    let sign = ab & 0x80000000u;
    let ea = i32((ab >> 23u) & 0xffu);
    let eb = i32((bb >> 23u) & 0xffu);
    if ((ab & 0x7fffffffu) == 0u) { return a; }
    if (ea == 0 || ea == 255 || eb == 0 || eb == 255 || (bb & 0x80000000u) != 0u) { return a / b; }
    var ma = (ab & 0x7fffffu) | 0x800000u;
    let mb = (bb & 0x7fffffu) | 0x800000u;
    var e = ea - eb + 127;
    // Scale the dividend so the quotient of significands lies in [1, 2).
    if (ma < mb) {
        ma <<= 1u;
        e -= 1;
    }
    // 24 quotient bits and a guard bit; the remainder is the sticky bit. rem < 2 mb < 2^25.
    var rem = ma;
    var quo = 0u;
    for (var i = 0u; i < 25u; i++) {
        quo <<= 1u;
        if (rem >= mb) {
            rem -= mb;
            quo |= 1u;
        }
        rem <<= 1u;
    }
    var m = quo >> 1u;
    if ((quo & 1u) != 0u && (rem != 0u || (m & 1u) != 0u)) {
        m += 1u;
        if (m == 0x1000000u) {
            m >>= 1u;
            e += 1;
        }
    }
    if (e <= 0 || e >= 255) { return a / b; }
    return bitcast<f32>(sign | (u32(e) << 23u) | (m & 0x7fffffu));
}
