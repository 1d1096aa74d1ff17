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

/// Checks a float matrix `[rows, cols]` (HF order) and returns its dtype's GGUF type.
pub fn check_float(t: &StTensor<'_>, rows: usize, cols: usize) -> Result<TensorType> {
    t.expect_shape(&[rows, cols])?;
    float_type(t.dtype).ok_or_else(|| t.error(format!("has dtype {:?}, expected F32, F16 or BF16", t.dtype)).into())
}

/// Checks a ternary linear of `rows x cols`: packed (`[rows/4, cols]` uint8 plus a one-value
/// `weight_scale`) or latent floats `[rows, cols]`.
pub fn check_ternary(ckpt: &Checkpoint, t: &StTensor<'_>, rows: usize, cols: usize) -> Result<()> {
    match t.dtype {
        Dtype::U8 => {
            if rows % 4 != 0 {
                return Err(t.error(format!("packs 4 rows per byte but has {rows} rows")).into());
            }
            t.expect_shape(&[rows / 4, cols])?;
            let scale_name = scale_name(t.name);
            let s = ckpt.tensor(&scale_name).ok_or_else(|| t.error(format!("is packed ternary but {scale_name:?} is missing")))?;
            s.scalar()?;
            Ok(())
        }
        _ => check_float(t, rows, cols).map(|_| ()),
    }
}

fn scale_name(weight: &str) -> String {
    format!("{}_scale", weight)
}

/// The trits (row-major `rows x cols`) and the one scale of a ternary linear, such that
/// `W ≈ scale · trits` (the divide-by-scale `bitlinear` convention already inverted).
pub fn ternary_values(ckpt: &Checkpoint, t: &StTensor<'_>, rows: usize, cols: usize, class: LinearClass) -> Result<(Vec<i8>, f32)> {
    if t.dtype == Dtype::U8 {
        let stored = ckpt.require(&scale_name(t.name))?.scalar()?;
        let scale = match class {
            LinearClass::AutoBitLinear => stored,
            LinearClass::BitLinear if stored != 0.0 => 1.0 / stored,
            LinearClass::BitLinear => return Err(t.error("has a weight_scale of 0, which bitlinear divides by").into()),
        };
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
                (false, perm) => {
                    let v = t.to_f32()?;
                    let v = match perm {
                        Some(h) => permute_rows(&v, cols, *h),
                        None => v,
                    };
                    quantize_rows(p.ty, &v, cols)?
                }
            }
        }
        Source::Ternary { src, permute_heads } => {
            let t = ckpt.require(src)?;
            let rows = p.dims[1] as usize;
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
    if bytes.len() as u64 != p.size() {
        return Err(ModelError::Invalid(format!("converting {}: produced {} bytes, expected {}", p.name, bytes.len(), p.size())));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_interleaves_halves_of_each_head() {
        // 2 heads of 4 rows, rows of length 1: HF [a0 a1 b0 b1] -> [a0 b0 a1 b1].
        let rows: Vec<u32> = (0..8).collect();
        assert_eq!(permute_rows(&rows, 1, 2), vec![0, 2, 1, 3, 4, 6, 5, 7]);
        let two_wide: Vec<u32> = (0..8).collect();
        assert_eq!(permute_rows(&two_wide, 2, 1), vec![0, 1, 4, 5, 2, 3, 6, 7]);
    }
}
