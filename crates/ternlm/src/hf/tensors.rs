//! The tensors of a Hugging Face checkpoint as GGUF tensors: which HF tensor feeds which GGUF
//! name, at what shape and type (decided and checked before anything is written), and the
//! work of producing each one's bytes: unpacking transformers' 2-bit packing, ternarizing
//! latent weights (absmean), permuting Q/K rows for llama's interleaved rope, and packing or
//! quantizing into the chosen type.

use ternlm_format::TensorType;
use ternlm_format::quant::{pack_ternary, quantize_rows};
use ternlm_format::safetensors::{Checkpoint, Dtype, StTensor};

use super::config::{HfConfig, LinearClass};
use crate::error::{ModelError, Result};

/// Where a GGUF tensor's values come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A 1-D float tensor (norm weights), written as F32.
    Vector(String),
    /// A 2-D float matrix, rows permuted for rope when `permute_heads` is set.
    Float { src: String, permute_heads: Option<usize> },
    /// A ternary linear: packed uint8 with a `weight_scale`, or latent floats ternarized here.
    Ternary { src: String, permute_heads: Option<usize> },
    /// Values computed from the config (rope frequency factors).
    Values(Vec<f32>),
}

#[derive(Clone, Debug)]
pub struct Planned {
    pub name: String,
    /// ggml order: row length first.
    pub dims: Vec<u64>,
    pub ty: TensorType,
    pub source: Source,
}

impl Planned {
    pub fn size(&self) -> u64 {
        let n: u64 = self.dims.iter().product();
        self.ty.data_size(self.dims[0], n).unwrap_or(0)
    }
}

fn float_type(d: Dtype) -> Option<TensorType> {
    match d {
        Dtype::F32 => Some(TensorType::F32),
        Dtype::F16 => Some(TensorType::F16),
        Dtype::BF16 => Some(TensorType::BF16),
        _ => None,
    }
}

/// Checks a float tensor of `shape` (HF order: `[rows, cols]` for a matrix) and returns its
/// dtype's GGUF type.
pub fn check_float(t: &StTensor<'_>, shape: &[usize]) -> Result<TensorType> {
    t.expect_shape(shape)?;
    float_type(t.dtype).ok_or_else(|| t.error(format!("has dtype {:?}, expected F32, F16 or BF16", t.dtype)).into())
}

/// Checks a ternary linear of `rows x cols`: packed (`[rows/4, cols]` uint8 plus a one-value
/// `weight_scale`) or latent floats `[rows, cols]`.
pub fn check_ternary(ckpt: &Checkpoint, t: &StTensor<'_>, rows: usize, cols: usize) -> Result<()> {
    match t.dtype {
        Dtype::U8 => {
            if !rows.is_multiple_of(4) {
                return Err(t.error(format!("packs 4 rows per byte but has {rows} rows")).into());
            }
            t.expect_shape(&[rows / 4, cols])?;
            let scale_name = scale_name(t.name);
            let s = ckpt.tensor(&scale_name).ok_or_else(|| t.error(format!("is packed ternary but {scale_name:?} is missing")))?;
            s.scalar()?;
            Ok(())
        }
        _ => check_float(t, &[rows, cols]).map(|_| ()),
    }
}

fn scale_name(weight: &str) -> String {
    format!("{}_scale", weight)
}

/// The trits (row-major `rows x cols`) and the one scale of a ternary linear, such that
/// `W ≈ scale · trits` (the divide-by-scale `bitlinear` convention already inverted).
pub fn ternary_values(ckpt: &Checkpoint, t: &StTensor<'_>, rows: usize, cols: usize, class: LinearClass) -> Result<(Vec<i8>, f32)> {
    if t.dtype == Dtype::U8 {
        let scale = packed_scale(ckpt, t, class)?;
        // Row r = i * (rows/4) + p is 2-bit field i of packed row p: four contiguous blocks.
        let quarter = rows / 4;
        let mut trits = vec![0i8; rows * cols];
        for (p, packed_row) in t.data.chunks_exact(cols).enumerate() {
            for i in 0..4 {
                let out = &mut trits[(i * quarter + p) * cols..][..cols];
                for (o, &b) in out.iter_mut().zip(packed_row) {
                    let code = (b >> (2 * i)) & 3;
                    if code == 3 {
                        return Err(t.error(format!("packed row {p} holds the invalid 2-bit code 3")).into());
                    }
                    *o = code as i8 - 1;
                }
            }
        }
        return Ok((trits, scale));
    }
    let w = t.to_f32()?;
    if let Some(bad) = w.iter().find(|v| !v.is_finite()) {
        return Err(t.error(format!("holds the non-finite value {bad}")).into());
    }
    // Absmean ternarization, as BitNet's WeightQuant computes it in f32.
    let mean = (w.iter().map(|v| f64::from(v.abs())).sum::<f64>() / w.len().max(1) as f64) as f32;
    let inv = 1.0 / mean.max(1e-5);
    let trits = w.iter().map(|&v| (v * inv).round_ties_even().clamp(-1.0, 1.0) as i8).collect();
    Ok((trits, 1.0 / inv))
}

/// bf16 bytes to f16 bytes, a chunk at a time through f32 (F16C converts 8 at once).
fn bf16_to_f16(src: &[u8], out: &mut [u8]) {
    use half::slice::HalfFloatSliceExt;
    let mut wide = [0f32; 4096];
    let mut narrow = [half::f16::ZERO; 4096];
    for (s, o) in src.chunks(2 * 4096).zip(out.chunks_mut(2 * 4096)) {
        let n = s.len() / 2;
        for (w, c) in wide.iter_mut().zip(s.chunks_exact(2)) {
            *w = f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16);
        }
        narrow[..n].convert_from_f32_slice(&wide[..n]);
        for (c, h) in o.chunks_exact_mut(2).zip(&narrow[..n]) {
            c.copy_from_slice(&h.to_le_bytes());
        }
    }
}

/// The scale of a packed linear such that `W = scale · trits`.
fn packed_scale(ckpt: &Checkpoint, t: &StTensor<'_>, class: LinearClass) -> Result<f32> {
    let stored = ckpt.require(&scale_name(t.name))?.scalar()?;
    match class {
        LinearClass::AutoBitLinear => Ok(stored),
        LinearClass::BitLinear if stored != 0.0 => Ok(1.0 / stored),
        LinearClass::BitLinear => Err(t.error("has a weight_scale of 0, which bitlinear divides by").into()),
    }
}

/// The HF row that output row `r` comes from (Q/K rows are permuted for llama's rope).
fn source_row(r: usize, rows: usize, permute_heads: Option<usize>) -> usize {
    let Some(n_head) = permute_heads else { return r };
    let hd = rows / n_head;
    let (h, k) = (r / hd, r % hd);
    h * hd + (k % 2) * (hd / 2) + k / 2
}

/// I2_S straight from transformers' packing (both store `trit + 1` in two bits), without
/// unpacking to trits: the load path of packed checkpoints, which it keeps fast.
fn packed_to_i2s(ckpt: &Checkpoint, t: &StTensor<'_>, rows: usize, cols: usize, permute_heads: Option<usize>, class: LinearClass) -> Result<Vec<u8>> {
    // A field of 3 has both its bits set.
    if let Some(at) = t.data.iter().position(|b| b & (b >> 1) & 0x55 != 0) {
        return Err(t.error(format!("packed row {} holds the invalid 2-bit code 3", at / cols)).into());
    }
    let scale = packed_scale(ckpt, t, class)?;
    let quarter = rows / 4;
    let row_bytes = cols / 4;
    let mut out = vec![0u8; rows * row_bytes + 32];
    for (r, dst) in out[..rows * row_bytes].chunks_exact_mut(row_bytes).enumerate() {
        let s = source_row(r, rows, permute_heads);
        let (shift, p) = (2 * (s / quarter), s % quarter);
        let src = &t.data[p * cols..(p + 1) * cols];
        for (blk, d) in src.chunks_exact(128).zip(dst.chunks_exact_mut(32)) {
            for (j, o) in d.iter_mut().enumerate() {
                let code = |k: usize| (blk[j + 32 * k] >> shift) & 3;
                *o = (code(0) << 6) | (code(1) << 4) | (code(2) << 2) | code(3);
            }
        }
    }
    out[rows * row_bytes..rows * row_bytes + 4].copy_from_slice(&scale.to_le_bytes());
    Ok(out)
}

/// Reorders the rows of each head from HF's rotate-half layout to the interleaved one GGUF
/// llama models use: row `2i + j` of a head is HF row `j * head_dim/2 + i`.
pub fn permute_rows<T: Copy>(data: &[T], row_len: usize, n_head: usize) -> Vec<T> {
    let rows = data.len() / row_len;
    let hd = rows / n_head;
    let half = hd / 2;
    let mut out = Vec::with_capacity(data.len());
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let r = h * hd + j * half + i;
                out.extend_from_slice(&data[r * row_len..(r + 1) * row_len]);
            }
        }
    }
    out
}

/// Writes one planned tensor's bytes into `out` (exactly its size). Large float tables
/// are converted in place rather than through a second copy, which keeps peak memory near
/// the size of the result when a big checkpoint loads.
pub fn produce_into(ckpt: &Checkpoint, cfg: &HfConfig, p: &Planned, out: &mut [u8]) -> Result<()> {
    if out.len() as u64 != p.size() {
        return Err(ModelError::Invalid(format!("converting {}: {} bytes of room for {}", p.name, out.len(), p.size())));
    }
    if let Source::Float { src, permute_heads: None } = &p.source {
        let t = ckpt.require(src)?;
        if float_type(t.dtype) == Some(p.ty) && t.data.len() == out.len() {
            out.copy_from_slice(t.data);
            return Ok(());
        }
        if p.ty == TensorType::F16 && t.dtype == Dtype::BF16 && t.data.len() == out.len() {
            bf16_to_f16(t.data, out);
            return Ok(());
        }
    }
    out.copy_from_slice(&produce(ckpt, cfg, p)?);
    Ok(())
}

/// Produces the bytes of one planned tensor.
pub fn produce(ckpt: &Checkpoint, cfg: &HfConfig, p: &Planned) -> Result<Vec<u8>> {
    let cols = p.dims[0] as usize;
    let bytes = match &p.source {
        Source::Values(v) => quantize_rows(p.ty, v, v.len())?,
        Source::Vector(src) => {
            let t = ckpt.require(src)?;
            let v = t.to_f32()?;
            if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
                return Err(t.error(format!("holds the non-finite value {bad}")).into());
            }
            quantize_rows(p.ty, &v, v.len())?
        }
        Source::Float { src, permute_heads } => {
            let t = ckpt.require(src)?;
            let same = float_type(t.dtype) == Some(p.ty);
            match (same, permute_heads) {
                (true, None) => t.data.to_vec(),
                (true, Some(h)) => permute_rows(t.data, cols * t.data.len() / t.n_elements().max(1), *h),
                // The common load-time case (a bf16 embedding into F16), without an f32 copy
                // of the whole table.
                (false, None) if p.ty == TensorType::F16 && t.dtype == Dtype::BF16 => {
                    let mut out = vec![0u8; t.data.len()];
                    bf16_to_f16(t.data, &mut out);
                    out
                }
                (false, Some(h)) => quantize_rows(p.ty, &permute_rows(&t.to_f32()?, cols, *h), cols)?,
                (false, None) => {
                    // A block of rows at a time, so a 128k-row embedding never exists as f32
                    // all at once.
                    let elem = t.data.len() / t.n_elements().max(1);
                    let mut out = Vec::with_capacity(p.size() as usize);
                    for chunk in t.data.chunks(1024 * cols * elem) {
                        let part = ternlm_format::safetensors::StTensor { data: chunk, ..t };
                        out.extend_from_slice(&quantize_rows(p.ty, &part.to_f32()?, cols)?);
                    }
                    out
                }
            }
        }
        Source::Ternary { src, permute_heads } => {
            let t = ckpt.require(src)?;
            let rows = p.dims[1] as usize;
            if p.ty == TensorType::I2S && t.dtype == Dtype::U8 {
                return finish_size(p, packed_to_i2s(ckpt, &t, rows, cols, *permute_heads, cfg.linear_class)?);
            }
            let (trits, scale) = ternary_values(ckpt, &t, rows, cols, cfg.linear_class)?;
            let trits = match permute_heads {
                Some(h) => permute_rows(&trits, cols, *h),
                None => trits,
            };
            if p.ty.is_ternary() {
                pack_ternary(p.ty, &trits, cols, scale)?
            } else {
                let v: Vec<f32> = trits.iter().map(|&x| f32::from(x) * scale).collect();
                quantize_rows(p.ty, &v, cols)?
            }
        }
    };
    finish_size(p, bytes)
}

/// `bytes`, checked to be exactly the planned tensor's size.
fn finish_size(p: &Planned, bytes: Vec<u8>) -> Result<Vec<u8>> {
    if bytes.len() as u64 != p.size() {
        return Err(ModelError::Invalid(format!("converting {}: produced {} bytes, expected {}", p.name, bytes.len(), p.size())));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_to_f16_matches_the_scalar_conversion() {
        let vals: Vec<f32> = (0..10_000).map(|i| ((i as f32) - 5000.0) * 0.0137).collect();
        let src: Vec<u8> = vals.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
        let want: Vec<u8> = vals.iter().flat_map(|v| half::f16::from_f32(half::bf16::from_f32(*v).to_f32()).to_le_bytes()).collect();
        let mut got = vec![0u8; src.len()];
        bf16_to_f16(&src, &mut got);
        assert_eq!(got, want);
    }

    #[test]
    fn source_rows_invert_the_permutation() {
        let rows: Vec<usize> = (0..16).collect();
        let permuted = permute_rows(&rows, 1, 2);
        for (r, &want) in permuted.iter().enumerate() {
            assert_eq!(source_row(r, 16, Some(2)), want);
        }
        assert_eq!(source_row(5, 16, None), 5);
    }

    #[test]
    fn permutation_interleaves_halves_of_each_head() {
        // 2 heads of 4 rows, rows of length 1: HF [a0 a1 b0 b1] -> [a0 b0 a1 b1].
        let rows: Vec<u32> = (0..8).collect();
        assert_eq!(permute_rows(&rows, 1, 2), vec![0, 2, 1, 3, 4, 6, 5, 7]);
        let two_wide: Vec<u32> = (0..8).collect();
        assert_eq!(permute_rows(&two_wide, 2, 1), vec![0, 1, 4, 5, 2, 3, 6, 7]);
    }
}
