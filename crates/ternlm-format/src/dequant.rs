//! Dequantization of every accepted ggml block layout to f32, and unpacking of the ternary
//! layouts (TQ1_0, TQ2_0, I2_S) to plain trits plus scales, which the model then repacks into
//! the layout its kernel wants. These are the reference semantics of each format; they are
//! written for clarity, not speed (hot paths never dequantize whole weights).

use half::{bf16, f16};

use crate::error::{FormatError, Result};
use crate::types::{I2S_BLOCK, TensorType};

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Where one row lives inside a tensor's bytes, checked against the tensor's length.
fn row_slice<'a>(ty: TensorType, data: &'a [u8], row_len: usize, row: usize, name: &str) -> Result<&'a [u8]> {
    let bad = |reason: String| FormatError::BadTensor { name: name.to_string(), reason };
    let rb = ty.row_bytes(row_len).ok_or_else(|| bad(format!("row length {row_len} is not a multiple of the {ty} block size")))?;
    let start = row.checked_mul(rb).ok_or_else(|| bad("row offset overflows".into()))?;
    data.get(start..start + rb).ok_or_else(|| bad(format!("row {row} lies outside the tensor data")))
}

/// The whole-tensor scale stored after I2_S's packed bytes.
pub fn i2s_scale(data: &[u8], n_elements: usize, name: &str) -> Result<f32> {
    let at = n_elements / 4;
    let b = data.get(at..at + 4).ok_or_else(|| FormatError::BadTensor { name: name.to_string(), reason: "I2_S scale lies outside the tensor data".into() })?;
    let s = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    if !s.is_finite() {
        return Err(FormatError::BadTensor { name: name.to_string(), reason: format!("I2_S scale {s} is not finite") });
    }
    Ok(s)
}

/// Dequantizes row `row` (of length `row_len`) of a tensor whose bytes are `data` into `out`.
/// `n_elements` is the tensor's total element count (I2_S keeps its scale after all rows).
pub fn dequantize_row(ty: TensorType, data: &[u8], row_len: usize, n_elements: usize, row: usize, name: &str, out: &mut [f32]) -> Result<()> {
    assert_eq!(out.len(), row_len, "output buffer must hold one row");
    let src = row_slice(ty, data, row_len, row, name)?;
    match ty {
        TensorType::F32 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        TensorType::F16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        TensorType::BF16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        TensorType::Q4_0 => blocks(src, out, 18, 32, dequant_q4_0),
        TensorType::Q4_1 => blocks(src, out, 20, 32, dequant_q4_1),
        TensorType::Q8_0 => blocks(src, out, 34, 32, dequant_q8_0),
        TensorType::Q4K => blocks(src, out, 144, 256, dequant_q4_k),
        TensorType::Q6K => blocks(src, out, 210, 256, dequant_q6_k),
        TensorType::TQ1_0 | TensorType::TQ2_0 | TensorType::I2S => {
            let mut trits = vec![0i8; row_len];
            let scales = unpack_ternary_row(ty, data, row_len, n_elements, row, name, &mut trits)?;
            let bl = scales.block_len;
            for (i, (o, &t)) in out.iter_mut().zip(&trits).enumerate() {
                *o = f32::from(t) * scales.scales[i / bl];
            }
        }
    }
    Ok(())
}

fn blocks(src: &[u8], out: &mut [f32], bytes: usize, len: usize, f: fn(&[u8], &mut [f32])) {
    for (b, o) in src.chunks_exact(bytes).zip(out.chunks_exact_mut(len)) {
        f(b, o);
    }
}

fn dequant_q4_0(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..16 {
        let q = b[2 + j];
        o[j] = (f32::from(q & 0xF) - 8.0) * d;
        o[j + 16] = (f32::from(q >> 4) - 8.0) * d;
    }
}

fn dequant_q4_1(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    for j in 0..16 {
        let q = b[4 + j];
        o[j] = f32::from(q & 0xF) * d + m;
        o[j + 16] = f32::from(q >> 4) * d + m;
    }
}

fn dequant_q8_0(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..32 {
        o[j] = f32::from(b[2 + j] as i8) * d;
    }
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K block.
pub fn q4k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 { (s[j] & 63, s[j + 4] & 63) } else { ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4)) }
}

fn dequant_q4_k(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for chunk in 0..4 {
        let (sc1, m1) = q4k_scale_min(2 * chunk, scales);
        let (sc2, m2) = q4k_scale_min(2 * chunk + 1, scales);
        let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, min2) = (d * f32::from(sc2), dmin * f32::from(m2));
        let q = &qs[chunk * 32..chunk * 32 + 32];
        let y = &mut o[chunk * 64..chunk * 64 + 64];
        for l in 0..32 {
            y[l] = d1 * f32::from(q[l] & 0xF) - min1;
            y[l + 32] = d2 * f32::from(q[l] >> 4) - min2;
        }
    }
}

/// The signed 6-bit values of a Q6_K block, in element order.
pub fn q6k_values(b: &[u8]) -> [i8; 256] {
    let ql = &b[0..128];
    let qh = &b[128..192];
    let mut v = [0i8; 256];
    for half in 0..2 {
        let (ql, qh) = (&ql[half * 64..], &qh[half * 32..]);
        let y = &mut v[half * 128..];
        for l in 0..32 {
            y[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            y[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            y[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            y[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    v
}

fn dequant_q6_k(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 208);
    let sc = &b[192..208];
    let v = q6k_values(b);
    for (i, (y, &q)) in o.iter_mut().zip(v.iter()).enumerate() {
        *y = d * f32::from(sc[i / 16] as i8) * f32::from(q);
    }
}

/// Scales of one unpacked ternary row: `scales[i / block_len]` applies to element `i`.
#[derive(Clone, Debug, PartialEq)]
pub struct TernaryScales {
    pub block_len: usize,
    pub scales: Vec<f32>,
}

/// Unpacks row `row` of a ternary tensor into trits in {-1, 0, 1} and returns its scales.
pub fn unpack_ternary_row(ty: TensorType, data: &[u8], row_len: usize, n_elements: usize, row: usize, name: &str, trits: &mut [i8]) -> Result<TernaryScales> {
    assert_eq!(trits.len(), row_len, "trit buffer must hold one row");
    let src = row_slice(ty, data, row_len, row, name)?;
    let bad_code = || FormatError::BadTensor { name: name.to_string(), reason: format!("row {row} holds the invalid 2-bit code 3 (ternary codes are 0, 1, 2)") };
    match ty {
        TensorType::I2S => {
            let scale = i2s_scale(data, n_elements, name)?;
            for (blk, out) in src.chunks_exact(I2S_BLOCK / 4).zip(trits.chunks_exact_mut(I2S_BLOCK)) {
                for (j, &byte) in blk.iter().enumerate() {
                    for (k, shift) in [6u8, 4, 2, 0].into_iter().enumerate() {
                        let c = (byte >> shift) & 3;
                        if c == 3 {
                            return Err(bad_code());
                        }
                        out[j + 32 * k] = c as i8 - 1;
                    }
                }
            }
            Ok(TernaryScales { block_len: row_len, scales: vec![scale] })
        }
        TensorType::TQ2_0 => {
            let mut scales = Vec::with_capacity(row_len / 256);
            for (blk, out) in src.chunks_exact(66).zip(trits.chunks_exact_mut(256)) {
                for half in 0..2 {
                    for l in 0..4 {
                        for m in 0..32 {
                            let c = (blk[half * 32 + m] >> (2 * l)) & 3;
                            if c == 3 {
                                return Err(bad_code());
                            }
                            out[half * 128 + l * 32 + m] = c as i8 - 1;
                        }
                    }
                }
                scales.push(f16_at(blk, 64));
            }
            Ok(TernaryScales { block_len: 256, scales })
        }
        TensorType::TQ1_0 => {
            const POW3: [u8; 6] = [1, 3, 9, 27, 81, 243];
            let trit = |byte: u8, n: usize| -> i8 {
                let q = byte.wrapping_mul(POW3[n]);
                ((u16::from(q) * 3) >> 8) as i8 - 1
            };
            let mut scales = Vec::with_capacity(row_len / 256);
            for (blk, out) in src.chunks_exact(54).zip(trits.chunks_exact_mut(256)) {
                let (qs, qh) = (&blk[0..48], &blk[48..52]);
                let mut k = 0;
                // 160 trits from the first 32 bytes, 80 from the next 16, 16 from qh: each
                // group is walked digit by digit, all bytes of the group per digit.
                for group in [&qs[..32], &qs[32..48]] {
                    for n in 0..5 {
                        for &byte in group {
                            out[k] = trit(byte, n);
                            k += 1;
                        }
                    }
                }
                for n in 0..4 {
                    for &h in qh {
                        out[k] = trit(h, n);
                        k += 1;
                    }
                }
                scales.push(f16_at(blk, 52));
            }
            Ok(TernaryScales { block_len: 256, scales })
        }
        other => Err(FormatError::BadTensor { name: name.to_string(), reason: format!("{other} is not a ternary type") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16b(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q4_0_hand_block() {
        let mut b = vec![0u8; 18];
        b[..2].copy_from_slice(&f16b(0.5));
        b[2] = 0x9F; // element 0 = 15-8, element 16 = 9-8
        let mut out = vec![0f32; 32];
        dequantize_row(TensorType::Q4_0, &b, 32, 32, 0, "t", &mut out).unwrap();
        assert_eq!(out[0], 3.5);
        assert_eq!(out[16], 0.5);
        assert_eq!(out[1], -4.0);
    }

    #[test]
    fn q4_1_and_q8_0_hand_blocks() {
        let mut b = vec![0u8; 20];
        b[..2].copy_from_slice(&f16b(2.0));
        b[2..4].copy_from_slice(&f16b(-1.0));
        b[4] = 0x31;
        let mut out = vec![0f32; 32];
        dequantize_row(TensorType::Q4_1, &b, 32, 32, 0, "t", &mut out).unwrap();
        assert_eq!((out[0], out[16], out[1]), (1.0, 5.0, -1.0));

        let mut b = vec![0u8; 34];
        b[..2].copy_from_slice(&f16b(0.25));
        b[2] = (-4i8) as u8;
        b[33] = 8;
        dequantize_row(TensorType::Q8_0, &b, 32, 32, 0, "t", &mut out).unwrap();
        assert_eq!((out[0], out[31], out[1]), (-1.0, 2.0, 0.0));
    }

    #[test]
    fn tq2_0_element_order() {
        let mut b = vec![0x55u8; 66]; // every code 1 -> trit 0
        b[64..66].copy_from_slice(&f16b(1.0));
        b[3] = 0x55 & !(3 << 4) | (2 << 4); // element 2*32 + 3 = 67 -> +1
        b[32] = 0x54; // element 128 -> code 0 -> -1
        let mut t = vec![0i8; 256];
        let s = unpack_ternary_row(TensorType::TQ2_0, &b, 256, 256, 0, "t", &mut t).unwrap();
        assert_eq!(s.scales, vec![1.0]);
        assert_eq!(t[67], 1);
        assert_eq!(t[128], -1);
        assert_eq!(t.iter().map(|&x| i32::from(x).abs()).sum::<i32>(), 2);
    }

    #[test]
    fn i2s_element_order_and_scale() {
        let mut b = vec![0x55u8; 32 + 32];
        b[32..36].copy_from_slice(&0.75f32.to_le_bytes());
        b[5] = 0x55 & !(3 << 6) | (2 << 6); // byte 5, shift 6 -> element 5 -> +1
        b[7] = 0x55 & !3; // byte 7, shift 0 -> element 7 + 96 = 103 -> -1
        let mut t = vec![0i8; 128];
        let s = unpack_ternary_row(TensorType::I2S, &b, 128, 128, 0, "t", &mut t).unwrap();
        assert_eq!(s.scales, vec![0.75]);
        assert_eq!((t[5], t[103]), (1, -1));
    }

    #[test]
    fn tq1_0_all_digits_round_trip() {
        // Pack trits the way ggml's quantizer does (base-3 digits, scaled to a byte with
        // ceiling division by 3^5) and check the unpacking sees them in order.
        let trits: Vec<i8> = (0..256).map(|i| ((i * 7 + i / 3) % 3) as i8 - 1).collect();
        let pack = |digits: &[i8]| -> u8 {
            let mut q: u16 = 0;
            for &t in digits {
                q = q * 3 + (t + 1) as u16;
            }
            // scale to 0..256 by 256/3^n rounded up, as ggml does for 5 (and 4) digits
            let n = digits.len() as u32;
            let mut v = q * 3u16.pow(5 - n);
            v = (v * 256).div_ceil(243);
            v as u8
        };
        let mut b = vec![0u8; 54];
        for m in 0..32 {
            let d: Vec<i8> = (0..5).map(|n| trits[n * 32 + m]).collect();
            b[m] = pack(&d);
        }
        for m in 0..16 {
            let d: Vec<i8> = (0..5).map(|n| trits[160 + n * 16 + m]).collect();
            b[32 + m] = pack(&d);
        }
        for j in 0..4 {
            let d: Vec<i8> = (0..4).map(|n| trits[240 + n * 4 + j]).collect();
            b[48 + j] = pack(&d);
        }
        b[52..54].copy_from_slice(&f16b(1.0));
        let mut t = vec![0i8; 256];
        unpack_ternary_row(TensorType::TQ1_0, &b, 256, 256, 0, "t", &mut t).unwrap();
        assert_eq!(t, trits);
    }
}
