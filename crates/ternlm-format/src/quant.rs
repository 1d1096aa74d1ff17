//! Quantization into the ggml layouts ternlm writes: float rows into F32/F16/BF16/Q8_0/Q4_0/
//! Q6_K, and whole ternary tensors into TQ1_0/TQ2_0/I2_S. Each function is the inverse of its
//! twin in [`crate::dequant`], and the tests check the pair round-trips.
//!
//! The float quantizers are simple round-to-nearest (absmax per block), not llama.cpp's
//! error-minimizing searches: they write valid files (generated models, `ternlm dummy`), not
//! the best possible ones.

use half::{bf16, f16};

use crate::error::{FormatError, Result};
use crate::types::{I2S_BLOCK, I2S_TRAILER_BYTES, TensorType};

fn bad(ty: TensorType, reason: String) -> FormatError {
    FormatError::BadTensor { name: format!("<{ty} quantizer>"), reason }
}

/// Quantizes `rows` rows of `row_len` floats into the bytes of a tensor of type `ty`.
pub fn quantize_rows(ty: TensorType, x: &[f32], row_len: usize) -> Result<Vec<u8>> {
    let rb = ty.row_bytes(row_len).filter(|_| !ty.is_ternary()).ok_or_else(|| bad(ty, format!("cannot quantize rows of {row_len} floats into {ty}")))?;
    if row_len == 0 || !x.len().is_multiple_of(row_len) {
        return Err(bad(ty, format!("{} values are not whole rows of {row_len}", x.len())));
    }
    let mut out = Vec::with_capacity(x.len() / row_len * rb);
    match ty {
        TensorType::F32 => x.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        TensorType::F16 => x.iter().for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        TensorType::BF16 => x.iter().for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_le_bytes())),
        TensorType::Q8_0 => x.chunks_exact(32).for_each(|b| q8_0_block(b, &mut out)),
        TensorType::Q4_0 => x.chunks_exact(32).for_each(|b| q4_0_block(b, &mut out)),
        TensorType::Q6K => x.chunks_exact(256).for_each(|b| q6_k_block(b, &mut out)),
        other => return Err(bad(other, "quantizing floats into this type is not supported".into())),
    }
    Ok(out)
}

fn absmax(b: &[f32]) -> f32 {
    b.iter().fold(0f32, |m, v| m.max(v.abs()))
}

fn q8_0_block(b: &[f32], out: &mut Vec<u8>) {
    let d = absmax(b) / 127.0;
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    out.extend(b.iter().map(|v| (v * inv).round().clamp(-127.0, 127.0) as i8 as u8));
}

fn q4_0_block(b: &[f32], out: &mut Vec<u8>) {
    // ggml's sign convention: the value of largest magnitude maps to -8.
    let m = b.iter().copied().fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
    let d = m / -8.0;
    let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    let q = |v: f32| ((v * inv + 8.5) as i32).clamp(0, 15) as u8;
    out.extend((0..16).map(|j| q(b[j]) | (q(b[j + 16]) << 4)));
}

fn q6_k_block(b: &[f32], out: &mut Vec<u8>) {
    // One scale per 16 values (int8, relative to the super-block's f16 `d`), 6-bit values
    // stored as q + 32 split into 4 low bits (`ql`) and 2 high bits (`qh`).
    let sub: Vec<f32> = b.chunks_exact(16).map(|c| absmax(c) / 31.0).collect();
    let max_sub = sub.iter().fold(0f32, |m, &s| m.max(s));
    let d = max_sub / 127.0;
    let d16 = f16::from_f32(d).to_f32();
    let scales: Vec<i8> = sub.iter().map(|&s| if d16 > 0.0 { (s / d16).round().clamp(-128.0, 127.0) as i8 } else { 0 }).collect();
    let mut q = [0u8; 256];
    for (i, v) in b.iter().enumerate() {
        let s = d16 * f32::from(scales[i / 16]);
        let level = if s != 0.0 { (v / s).round().clamp(-32.0, 31.0) as i32 } else { 0 };
        q[i] = (level + 32) as u8;
    }
    let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
    for half in 0..2 {
        let (y, ql, qh) = (&q[half * 128..], &mut ql[half * 64..], &mut qh[half * 32..]);
        for l in 0..32 {
            ql[l] = (y[l] & 0xF) | ((y[l + 64] & 0xF) << 4);
            ql[l + 32] = (y[l + 32] & 0xF) | ((y[l + 96] & 0xF) << 4);
            qh[l] = (y[l] >> 4) | ((y[l + 32] >> 4) << 2) | ((y[l + 64] >> 4) << 4) | ((y[l + 96] >> 4) << 6);
        }
    }
    out.extend_from_slice(&ql);
    out.extend_from_slice(&qh);
    out.extend(scales.iter().map(|&s| s as u8));
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
}

/// Packs a whole ternary tensor (`trits` in {-1, 0, 1}, rows of `row_len`) with one scale
/// for every block into `ty` (TQ1_0, TQ2_0 or I2_S, which has a single tensor scale).
pub fn pack_ternary(ty: TensorType, trits: &[i8], row_len: usize, scale: f32) -> Result<Vec<u8>> {
    if row_len == 0 || !trits.len().is_multiple_of(row_len) || !row_len.is_multiple_of(ty.block_len()) || !ty.is_ternary() {
        return Err(bad(ty, format!("cannot pack rows of {row_len} trits into {ty}")));
    }
    if let Some(t) = trits.iter().find(|t| !(-1..=1).contains(*t)) {
        return Err(bad(ty, format!("{t} is not a trit")));
    }
    let code = |t: i8| (t + 1) as u8;
    let d = f16::from_f32(scale).to_le_bytes();
    let mut out = Vec::with_capacity(trits.len() / 4 + 64);
    match ty {
        TensorType::TQ2_0 => {
            for blk in trits.chunks_exact(256) {
                for half in 0..2 {
                    for m in 0..32 {
                        let at = |l: usize| code(blk[half * 128 + l * 32 + m]) << (2 * l);
                        out.push(at(0) | at(1) | at(2) | at(3));
                    }
                }
                out.extend_from_slice(&d);
            }
        }
        TensorType::TQ1_0 => {
            for blk in trits.chunks_exact(256) {
                // 160 trits in 32 bytes, 80 in 16, 16 in 4 (see the unpacking's order).
                for (base, width) in [(0usize, 32usize), (160, 16)] {
                    for m in 0..width {
                        out.push(tq1_byte((0..5).map(|n| blk[base + n * width + m])));
                    }
                }
                for j in 0..4 {
                    out.push(tq1_byte((0..4).map(|n| blk[240 + n * 4 + j])));
                }
                out.extend_from_slice(&d);
            }
        }
        TensorType::I2S => {
            for blk in trits.chunks_exact(I2S_BLOCK) {
                for j in 0..32 {
                    out.push((code(blk[j]) << 6) | (code(blk[j + 32]) << 4) | (code(blk[j + 64]) << 2) | code(blk[j + 96]));
                }
            }
            let mut trailer = [0u8; I2S_TRAILER_BYTES as usize];
            trailer[..4].copy_from_slice(&scale.to_le_bytes());
            out.extend_from_slice(&trailer);
        }
        _ => unreachable!("checked to be ternary above"),
    }
    Ok(out)
}

/// Base-3 digits (most significant first) scaled into a byte so that digit `n` comes back as
/// `((byte · 3^n) mod 256 · 3) >> 8`, as TQ1_0 stores them.
fn tq1_byte(digits: impl Iterator<Item = i8>) -> u8 {
    let (mut q, mut n) = (0u16, 0u32);
    for t in digits {
        q = q * 3 + (t + 1) as u16;
        n += 1;
    }
    let v = q * 3u16.pow(5 - n);
    (v * 256).div_ceil(243) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dequant::{dequantize_row, unpack_ternary_row};

    fn ramp(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect()
    }

    #[test]
    fn float_quantizers_round_trip_within_their_step() {
        for (ty, tol) in [(TensorType::F16, 2e-3), (TensorType::Q8_0, 0.02), (TensorType::Q4_0, 0.4), (TensorType::Q6K, 0.1)] {
            let x = ramp(512);
            let bytes = quantize_rows(ty, &x, 256).unwrap();
            assert_eq!(bytes.len(), 2 * ty.row_bytes(256).unwrap());
            for r in 0..2 {
                let mut back = vec![0f32; 256];
                dequantize_row(ty, &bytes, 256, 512, r, "t", &mut back).unwrap();
                for (a, b) in back.iter().zip(&x[r * 256..]) {
                    assert!((a - b).abs() <= tol, "{ty}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn ternary_packers_round_trip() {
        let trits: Vec<i8> = (0..1024).map(|i| ((i * 7 + i / 5) % 3) as i8 - 1).collect();
        for ty in [TensorType::TQ1_0, TensorType::TQ2_0, TensorType::I2S] {
            let bytes = pack_ternary(ty, &trits, 512, 0.5).unwrap();
            assert_eq!(bytes.len() as u64, ty.data_size(512, 1024).unwrap());
            for r in 0..2 {
                let mut back = vec![0i8; 512];
                let s = unpack_ternary_row(ty, &bytes, 512, 1024, r, "t", &mut back).unwrap();
                assert_eq!(back, trits[r * 512..(r + 1) * 512], "{ty}");
                assert!(s.scales.iter().all(|&v| v == 0.5));
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(pack_ternary(TensorType::TQ2_0, &[0; 100], 100, 1.0).is_err());
        assert!(pack_ternary(TensorType::TQ2_0, &[2; 256], 256, 1.0).is_err());
        assert!(quantize_rows(TensorType::Q6K, &[0.0; 100], 100).is_err());
        assert!(quantize_rows(TensorType::TQ2_0, &[0.0; 256], 256).is_err());
    }
}
