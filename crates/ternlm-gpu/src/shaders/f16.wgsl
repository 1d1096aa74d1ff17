
// ---- f16.wgsl: IEEE half conversions done on the bits (appended where needed) ----
// WGSL's pack2x16float/unpack2x16float may flush subnormals and need not round to nearest
// even; ternlm's results follow the CPU's `half` crate, so these are exact.

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

// v rounded to the nearest f16 (ties to even), as f32: half's f16::from_f32(v).to_f32().
fn round_f16(v: f32) -> f32 {
    let b = bitcast<u32>(v);
    let mag = b & 0x7fffffffu;
    if (mag >= 0x7f800000u) { return v; }
    if (mag < 0x38800000u) {
        // Below 2^-14, f16 is subnormal: steps of 2^-24. v * 2^24 is exact and below 2^10,
        // round() takes it to an integer, ties to even, keeping the sign of zero.
        return round(v * 16777216.0) * 5.9604644775390625e-8;
    }
    // Normal: keep 10 of f32's 23 fraction bits, to nearest even; a carry moves into the
    // exponent as it should.
    let rem = b & 0x1fffu;
    var r = b & ~0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (b & 0x2000u) != 0u)) { r += 0x2000u; }
    // Past the largest half (65504) the f16 is infinite.
    if ((r & 0x7fffffffu) > 0x477fe000u) { r = (b & 0x80000000u) | 0x7f800000u; }
    return bitcast<f32>(r);
}

// The IEEE half bits of v rounded to nearest even (half's f16::from_f32(v).to_bits()).
fn f16_bits(v: f32) -> u32 {
    let r = round_f16(v);
    let b = bitcast<u32>(r);
    let sign = (b >> 16u) & 0x8000u;
    let mag = b & 0x7fffffffu;
    if (mag > 0x7f800000u) { return sign | 0x7e00u; }
    if (mag >= 0x477ff000u) { return sign | 0x7c00u; }
    if (mag < 0x38800000u) {
        // Subnormal half: r is a multiple of 2^-24 below 2^-14, so r * 2^24 is an integer.
        return sign | u32(abs(r) * 16777216.0);
    }
    return sign | (((mag >> 23u) - 112u) << 10u) | ((mag >> 13u) & 0x3ffu);
}
