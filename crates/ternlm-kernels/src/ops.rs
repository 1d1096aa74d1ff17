//! Elementwise and row-wise f32 operations of the transformer: RMSNorm, rotary embeddings
//! (GPT-J "interleaved" and NeoX "rotate half" styles), SiLU, squared ReLU. (Softmax lives
//! inside attention, which computes it online.) Each rounds as llama.cpp's compiled CPU code
//! does, so that logits agree with it bit for bit (README, "Numerics").

/// `1 / sqrt(mean(x²) + eps)` as ggml computes it: each square rounded to f32, their sum
/// kept in f64.
fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let ss: f64 = x.iter().map(|&v| f64::from(v * v)).sum();
    1.0 / ((ss / x.len() as f64) as f32 + eps).sqrt()
}

/// `out = x / sqrt(mean(x²) + eps) * w`, row by row (`w` has one row's length).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let k = w.len();
    for (xr, or) in x.chunks_exact(k).zip(out.chunks_exact_mut(k)) {
        let scale = rms_scale(xr, eps);
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * scale * g;
        }
    }
}

/// In place: `x = rms_norm(x) * w`.
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    for xr in x.chunks_exact_mut(w.len()) {
        let scale = rms_scale(xr, eps);
        for (v, &g) in xr.iter_mut().zip(w) {
            *v = *v * scale * g;
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs (2i, 2i+1): llama.cpp's "NORM", used by GGUF llama models.
    Interleaved,
    /// Pairs (i, i + d/2): "NEOX", used by the bitnet architectures.
    Neox,
}

/// Appends cos/sin of one position for the first `n_dims` dimensions, computed as ggml does
/// (`theta *= base^(-2/n)` step by step, in f32). `freq_factors` (LLaMA 3.1) divide each
/// pair's angle.
pub fn rope_cache(pos: usize, n_dims: usize, base: f32, freq_factors: Option<&[f32]>, cache: &mut Vec<(f32, f32)>) {
    let theta_scale = base.powf(-2.0 / n_dims as f32);
    let mut theta = pos as f32;
    for i in 0..n_dims / 2 {
        let t = freq_factors.map_or(theta, |f| theta / f[i]);
        cache.push((t.cos(), t.sin()));
        theta *= theta_scale;
    }
}

/// Defines `$at(level, args)`, which runs `$body(args)` compiled for `level`: the SIMD
/// levels through `$fma`, a copy with AVX2 and FMA enabled (so `mul_add` is one instruction
/// rather than a libm call), the scalar level as it is. Every level gives the same bits.
macro_rules! fma_level_dispatch {
    ($(#[$doc:meta])* $at:ident, $fma:ident, $body:ident($($arg:ident: $ty:ty),*)) => {
        $(#[$doc])*
        pub fn $at(level: crate::isa::Isa, $($arg: $ty),*) {
            assert!(level <= crate::isa::Isa::detect(), "ISA level {level:?} is beyond this CPU");
            match level {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the level is at most the detected one (asserted above), which has FMA.
                crate::isa::Isa::Avx2 | crate::isa::Isa::Avx512 | crate::isa::Isa::Amx => unsafe { $fma($($arg),*) },
                _ => $body($($arg),*),
            }
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $fma($($arg: $ty),*) {
            $body($($arg),*);
        }
    };
}

/// Rotates every head of one token's vector `x` (`n_heads * head_dim`) in place; dimensions
/// past `cache.len() * 2` are left as they are. Each pair is rotated as ggml's compiled
/// `rotate_pairs` does it, one product fused into each sum:
/// `x0' = fma(x0, cos, -(x1 sin))`, `x1' = fma(x0, sin, x1 cos)`.
pub fn rope(x: &mut [f32], head_dim: usize, style: RopeStyle, cache: &[(f32, f32)]) {
    rope_at(crate::isa::active(), x, head_dim, style, cache);
}

fma_level_dispatch!(
    /// [`rope`] compiled for a given ISA level (every level gives the same bits; the level
    /// only makes the multiply-adds single instructions).
    rope_at, rope_fma, rope_body(x: &mut [f32], head_dim: usize, style: RopeStyle, cache: &[(f32, f32)])
);

#[inline(always)]
fn rope_body(x: &mut [f32], head_dim: usize, style: RopeStyle, cache: &[(f32, f32)]) {
    let n_rot = cache.len() * 2;
    for head in x.chunks_exact_mut(head_dim) {
        for (i, &(c, s)) in cache.iter().enumerate() {
            let (a, b) = match style {
                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                RopeStyle::Neox => (i, i + n_rot / 2),
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0.mul_add(c, -(x1 * s));
            head[b] = x0.mul_add(s, x1 * c);
        }
    }
}

/// SiLU, `x / (1 + exp(-x))`, with [`exp_poly`] for the exponential: the function
/// llama.cpp's SIMD builds compute, so SiLU-gated models agree with it bit for bit.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp_poly(0.0 - x))
}

/// SiLU with the C library's `expf`: what ggml computes for the last `n % 16` values of a
/// row, past its 16-wide vector loop.
#[inline(always)]
pub fn silu_libm(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `exp(x)` within 2.5 ULP: the polynomial of Arm's optimized-routines `expf` in the form
/// of ggml's AVX-512 `ggml_v_expf`: `x = n ln2 + b` with `n` integral, a degree-5
/// polynomial in `b` for `exp(b)`, scaled by `2^n` exactly. Every step is an IEEE operation
/// (the multiply-adds fused), so any CPU computes the same bits. Past `|n| > 192` the
/// result is 0 or infinity, as there.
#[inline(always)]
pub fn exp_poly(x: f32) -> f32 {
    let c = f32::from_bits;
    let shift = c(0x4b40_0000); // 0x1.8p23: adding it rounds to an integer
    let z = x.mul_add(c(0x3fb8_aa3b), shift); // x / ln2 + shift
    let n = z - shift;
    // b = x - n ln2, with ln2 in two parts (0x1.62e4p-1 + 0x1.7f7d1cp-20).
    let b = (-n).mul_add(c(0x35bf_be8e), (-n).mul_add(c(0x3f31_7200), x));
    let u = b * b;
    let hi = c(0x3c07_2010).mul_add(b, c(0x3d2b_9f17)).mul_add(u, c(0x3e2a_af33).mul_add(b, c(0x3eff_fedb)));
    let j = hi.mul_add(u, c(0x3f7f_fff6).mul_add(b, 1.0));
    // `vscalefps`: j * 2^n rounded once. Where 2^n is a normal f32 one multiply does that.
    if (-126.0..=127.0).contains(&n) {
        return j * f32::from_bits(((n as i32 + 127) as u32) << 23);
    }
    scale_edge(j, n)
}

/// [`exp_poly`]'s scaling where `2^n` is no normal f32: 0 or infinity past `|n| > 192` (as
/// ggml), else `j * 2^n` in f64 (exact) rounded once.
#[cold]
fn scale_edge(j: f32, n: f32) -> f32 {
    if n.is_nan() {
        return n;
    }
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    (f64::from(j) * 2f64.powi(n as i32)) as f32
}

/// `gate = silu(gate) * up` over rows of `n_ff` (ggml's `swiglu`: [`silu`] on each row's
/// first `n_ff / 16 * 16` values, [`silu_libm`] on the rest). `gate` may be a piece of
/// the rows that starts `offset` values into them.
pub fn swiglu(gate: &mut [f32], up: &[f32], n_ff: usize, offset: usize) {
    swiglu_at(crate::isa::active(), gate, up, n_ff, offset);
}

fma_level_dispatch!(
    /// [`swiglu`] compiled for a given ISA level (every level gives the same bits; the level
    /// only makes the multiply-adds single instructions).
    swiglu_at, swiglu_fma, swiglu_body(gate: &mut [f32], up: &[f32], n_ff: usize, offset: usize)
);

#[inline(always)]
fn swiglu_body(gate: &mut [f32], up: &[f32], n_ff: usize, offset: usize) {
    assert!(n_ff > 0 && gate.len() <= up.len());
    let vectorized = n_ff / 16 * 16;
    let (mut i, mut col) = (0, offset % n_ff);
    // Runs of one row's columns: the polynomial part, then the tail.
    while i < gate.len() {
        let poly = (vectorized.saturating_sub(col)).min(gate.len() - i);
        for (g, &u) in gate[i..i + poly].iter_mut().zip(&up[i..i + poly]) {
            *g = silu(*g) * u;
        }
        let tail = (n_ff - col - poly).min(gate.len() - i - poly);
        for (g, &u) in gate[i + poly..i + poly + tail].iter_mut().zip(&up[i + poly..i + poly + tail]) {
            *g = silu_libm(*g) * u;
        }
        i += poly + tail;
        col = 0;
    }
}

pub fn relu2(x: f32) -> f32 {
    let r = x.max(0.0);
    r * r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_of_constant_row_is_weight() {
        let x = [2.0f32; 4];
        let w = [1.0, 2.0, 3.0, 4.0];
        let mut out = [0f32; 4];
        rms_norm(&x, &w, 0.0, &mut out);
        assert_eq!(out, w);
    }

    #[test]
    fn rope_at_position_zero_is_identity_and_preserves_norm() {
        let mut cache = Vec::new();
        rope_cache(0, 8, 10000.0, None, &mut cache);
        let mut x: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let orig = x.clone();
        rope(&mut x, 8, RopeStyle::Neox, &cache);
        assert_eq!(x, orig);
        cache.clear();
        rope_cache(7, 8, 10000.0, None, &mut cache);
        for style in [RopeStyle::Neox, RopeStyle::Interleaved] {
            let mut y = orig.clone();
            rope(&mut y, 8, style, &cache);
            let n0: f32 = orig.iter().map(|v| v * v).sum();
            let n1: f32 = y.iter().map(|v| v * v).sum();
            assert!((n0 - n1).abs() < 1e-2);
        }
        // NEOX pairs (0, 4): first frequency is exactly `pos` radians.
        let mut z = vec![0f32; 8];
        z[0] = 1.0;
        rope(&mut z, 8, RopeStyle::Neox, &cache);
        assert!((z[0] - 7f32.cos()).abs() < 1e-6 && (z[4] - 7f32.sin()).abs() < 1e-6);
    }

    #[test]
    fn exp_poly_is_within_a_few_ulp_of_exp_and_handles_the_edges() {
        let ulp = |v: f32| f64::from(f32::from_bits(v.to_bits() + 1) - v);
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp_poly(x), f64::from(x).exp());
            assert!((f64::from(got) - want).abs() <= 2.5 * ulp(want as f32), "exp({x}) = {got}, want {want}");
            x += 0.0137;
        }
        assert_eq!(exp_poly(0.0), 1.0);
        assert_eq!(exp_poly(-200.0), 0.0);
        assert_eq!(exp_poly(200.0), f32::INFINITY);
        assert!(exp_poly(f32::NAN).is_nan());
        assert!(exp_poly(-100.0) > 0.0 && exp_poly(-100.0) < 1e-43, "subnormal results round, not flush");
    }

    #[test]
    fn swiglu_is_the_same_at_every_level_and_from_any_offset() {
        let n_ff = 40; // 32 values in the vector loop, 8 past it
        let gate: Vec<f32> = (0..3 * n_ff).map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 37.0).collect();
        let up: Vec<f32> = (0..3 * n_ff).map(|i| ((i * 104_729 % 997) as f32 - 498.0) / 91.0).collect();
        let mut want = gate.clone();
        swiglu_at(crate::isa::Isa::Scalar, &mut want, &up, n_ff, 0);
        for (i, w) in want.iter().enumerate() {
            let f = if i % n_ff < 32 { silu(gate[i]) } else { silu_libm(gate[i]) };
            assert_eq!(w.to_bits(), (f * up[i]).to_bits(), "value {i}");
        }
        for level in [crate::isa::Isa::Scalar, crate::isa::Isa::Avx2, crate::isa::Isa::Avx512] {
            if level <= crate::isa::Isa::detect() {
                for split in [0, 7, 40, 75] {
                    let mut got = gate.clone();
                    let (a, b) = got.split_at_mut(split);
                    swiglu_at(level, a, &up, n_ff, 0);
                    swiglu_at(level, b, &up[split..], n_ff, split);
                    assert_eq!(got, want, "{level:?}, split at {split}");
                }
            }
        }
    }

    #[test]
    fn rope_is_the_same_at_every_level() {
        let mut cache = Vec::new();
        rope_cache(1234, 64, 10000.0, None, &mut cache);
        let x: Vec<f32> = (0..3 * 64).map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 37.0).collect();
        for style in [RopeStyle::Neox, RopeStyle::Interleaved] {
            let mut want = x.clone();
            rope_at(crate::isa::Isa::Scalar, &mut want, 64, style, &cache);
            assert_eq!(want[0].to_bits(), x[0].mul_add(cache[0].0, -(x[if style == RopeStyle::Neox { 32 } else { 1 }] * cache[0].1)).to_bits());
            for level in [crate::isa::Isa::Avx2, crate::isa::Isa::Avx512] {
                if level <= crate::isa::Isa::detect() {
                    let mut got = x.clone();
                    rope_at(level, &mut got, 64, style, &cache);
                    assert_eq!(got, want, "{style:?} at {level:?}");
                }
            }
        }
    }

    #[test]
    fn in_place_and_copying_norms_agree() {
        let x: Vec<f32> = (0..12).map(|i| i as f32 * 0.3 - 1.0).collect();
        let w = [0.5f32, 1.0, 2.0, -1.0];
        let mut out = vec![0f32; 12];
        rms_norm(&x, &w, 1e-5, &mut out);
        let mut y = x.clone();
        rms_norm_inplace(&mut y, &w, 1e-5);
        assert_eq!(out, y);
    }
}
