//! Elementwise and row-wise f32 operations of the transformer: RMSNorm, rotary embeddings
//! (GPT-J "interleaved" and NeoX "rotate half" styles), SiLU, squared ReLU. (Softmax lives
//! inside attention, which computes it online.)

/// `1 / sqrt(mean(x²) + eps)`, the sum of squares kept in f64 as ggml does.
fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let ss: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
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

/// Rotates every head of one token's vector `x` (`n_heads * head_dim`) in place; dimensions
/// past `cache.len() * 2` are left as they are.
pub fn rope(x: &mut [f32], head_dim: usize, style: RopeStyle, cache: &[(f32, f32)]) {
    let n_rot = cache.len() * 2;
    for head in x.chunks_exact_mut(head_dim) {
        for (i, &(c, s)) in cache.iter().enumerate() {
            let (a, b) = match style {
                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                RopeStyle::Neox => (i, i + n_rot / 2),
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * c - x1 * s;
            head[b] = x0 * s + x1 * c;
        }
    }
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
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
