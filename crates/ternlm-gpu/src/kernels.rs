//! Device buffers and the BitLinear kernels: per-token int8 quantization, ternary x int8
//! products (one token, or a batch in one dispatch) and RMSNorm. Shapes are checked here, before anything reaches wgpu.

use crate::device::{Gpu, Recorder};
use crate::{GpuError, Result};

/// Columns per interleaved trit group (ternlm-kernels' `ternary::GROUP`).
const GROUP: usize = 128;
/// Workgroup sizes of the shaders (`const WG` in each).
const GEMV_WG: usize = 64;
/// Flags of the GEMV's `Params.flags` (see gemv_ternary.wgsl).
const PER_ROW_SCALES: u32 = 1;
const DIRECT: u32 = 2;

/// f32 values on the device (cloning shares the buffer, it does not copy it).
#[derive(Clone)]
pub struct GpuVec {
    buf: wgpu::Buffer,
    len: usize,
}

impl GpuVec {
    pub(crate) fn from_parts(buf: wgpu::Buffer, len: usize) -> GpuVec {
        GpuVec { buf, len }
    }

    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        &self.buf
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Per-token int8 activations on the device: `n` rows of `cols` values packed 4 per word,
/// and per row `[s, Σq, Σq per 128 columns...]`.
pub struct GpuActs {
    q: wgpu::Buffer,
    meta: wgpu::Buffer,
    n: usize,
    cols: usize,
    meta_stride: usize,
}

/// [`GpuActs`] read back, in the terms of ternlm-kernels' `QuantActs`.
#[derive(Clone, Debug, PartialEq)]
pub struct HostActs {
    /// `n * cols` values, row-major.
    pub q: Vec<i8>,
    /// Per row, the multiplier `s = 127 / max|x|` (`QuantActs::inv`).
    pub s: Vec<f32>,
    /// Per row, `Σq` (`QuantActs::tsum`).
    pub tsum: Vec<i32>,
    /// Per row, `Σq` per 128 columns, the last group possibly shorter (`QuantActs::bsums`).
    pub bsums: Vec<i32>,
}

impl GpuActs {
    pub fn rows(&self) -> usize {
        self.n
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// One part of a weight matrix small enough for a single storage binding.
struct Chunk {
    weights: wgpu::Buffer,
    scales: wgpu::Buffer,
    params: wgpu::Buffer,
    grid: (u32, u32),
}

/// A ternary matrix in ternlm's 2-bit layout on the device, split by rows into as many
/// buffers as the adapter's binding limit needs.
pub struct GpuTernary {
    rows: usize,
    cols: usize,
    chunks: Vec<Chunk>,
}

impl GpuTernary {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// How many buffers the weights were split into.
    pub fn chunks(&self) -> usize {
        self.chunks.len()
    }
}

impl Gpu {
    /// Copies `data` to the device.
    pub fn upload(&self, data: &[f32]) -> Result<GpuVec> {
        Ok(GpuVec { buf: self.storage_init("f32 vector", bytemuck::cast_slice(data))?, len: data.len() })
    }

    /// Copies `v` back to the host.
    pub fn read(&self, v: &GpuVec) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(&v.buf, v.len as u64 * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Uploads a ternary matrix given as `TernaryMatrix::from_parts` takes it: `rows` rows of
    /// `cols` trits packed by `TernaryMatrix::pack_row` (`cols / 4` bytes each), and either one
    /// scale or one per `block_len` columns of each row. Equal scales collapse to one, as on
    /// the CPU. Rows are padded to whole words for the shader; a matrix above the binding
    /// limit is split by rows, and a single row above it is a [`GpuError::TooLarge`].
    pub fn upload_ternary(&self, rows: usize, cols: usize, packed: &[u8], block_len: usize, scales: &[f32]) -> Result<GpuTernary> {
        if rows == 0 || cols == 0 || !cols.is_multiple_of(4) {
            return Err(GpuError::Shape(format!("ternary matrix {rows}x{cols}: columns must be a positive multiple of 4")));
        }
        if block_len == 0 || !cols.is_multiple_of(block_len) {
            return Err(GpuError::Shape(format!("scale block {block_len} does not divide {cols} columns")));
        }
        let row_bytes = cols / 4;
        if packed.len() != rows * row_bytes {
            return Err(GpuError::Shape(format!("packed data is {} bytes, expected {}", packed.len(), rows * row_bytes)));
        }
        let per_row = cols / block_len;
        if scales.len() != 1 && scales.len() != rows * per_row {
            return Err(GpuError::Shape(format!("{} scales for {} blocks", scales.len(), rows * per_row)));
        }
        if scales.iter().any(|s| !s.is_finite()) {
            return Err(GpuError::Shape("a weight scale is not finite".into()));
        }
        self.fits("the GEMV output", rows as u64 * 4)?;
        let one_scale = scales.windows(2).all(|w| w[0] == w[1]);
        let kc = cols / GROUP * GROUP;
        // The CPU's epilogue (TernaryMatrix::finish/store): with one scale it writes
        // `isum * scale / s` directly when the row is all groups or all tail, and accumulates
        // from 0.0 otherwise; per-block scales always accumulate from 0.0.
        let (block, nb, flags) = if one_scale { (cols, 1, if kc == cols || kc == 0 { DIRECT } else { 0 }) } else { (block_len, per_row, PER_ROW_SCALES) };

        let row_words = row_bytes.div_ceil(4);
        let stride = row_words as u64 * 4;
        let mut rows_per_chunk = self.binding_limit() / stride;
        if !one_scale {
            rows_per_chunk = rows_per_chunk.min(self.binding_limit() / (nb as u64 * 4));
        }
        if rows_per_chunk == 0 {
            return Err(GpuError::TooLarge { what: format!("one row of a {rows}x{cols} ternary matrix"), bytes: stride.max(nb as u64 * 4), limit: self.binding_limit() });
        }
        let rows_per_chunk = rows_per_chunk.min(rows as u64) as usize;
        let mut chunks = Vec::with_capacity(rows.div_ceil(rows_per_chunk));
        let mut padded = Vec::new();
        for row0 in (0..rows).step_by(rows_per_chunk) {
            let n = rows_per_chunk.min(rows - row0);
            let src = &packed[row0 * row_bytes..(row0 + n) * row_bytes];
            let bytes: &[u8] = if row_bytes == row_words * 4 {
                src
            } else {
                padded.clear();
                padded.resize(n * row_words * 4, 0);
                for (dst, s) in padded.chunks_exact_mut(row_words * 4).zip(src.chunks_exact(row_bytes)) {
                    dst[..row_bytes].copy_from_slice(s);
                }
                &padded
            };
            let weights = self.storage_init("ternary weights", bytes)?;
            let chunk_scales = if one_scale { &scales[..1] } else { &scales[row0 * nb..(row0 + n) * nb] };
            let scales = self.storage_init("ternary scales", bytemuck::cast_slice(chunk_scales))?;
            let grid = self.grid(n, GEMV_WG)?;
            let words = [n, row0, cols, row_words, kc, block, nb, flags as usize, 0, grid.0 as usize, rows, 2 + cols.div_ceil(GROUP)];
            let words: Vec<u32> =
                words.iter().map(|&v| u32::try_from(v)).collect::<Result<_, _>>().map_err(|_| GpuError::Shape(format!("ternary matrix {rows}x{cols} is too large for 32-bit indexing")))?;
            chunks.push(Chunk { weights, scales, params: self.uniform(&words), grid });
        }
        Ok(GpuTernary { rows, cols, chunks })
    }

    /// Quantizes `x` (rows of `cols` values) per token into int8, as
    /// `ternlm_kernels::act_quant::quantize_per_token` does for each row.
    pub fn quantize_per_token(&self, x: &GpuVec, cols: usize) -> Result<GpuActs> {
        let mut r = self.begin()?;
        let a = r.quantize_per_token(x, cols)?;
        r.submit()?;
        Ok(a)
    }

    /// Reads quantized activations back (for tests and debugging).
    pub fn read_acts(&self, a: &GpuActs) -> Result<HostActs> {
        let q: Vec<i8> = bytemuck::pod_collect_to_vec(&self.read_bytes(&a.q, (a.n * a.cols) as u64)?);
        let meta: Vec<u32> = bytemuck::pod_collect_to_vec(&self.read_bytes(&a.meta, (a.n * a.meta_stride * 4) as u64)?);
        let mut out = HostActs { q, s: Vec::new(), tsum: Vec::new(), bsums: Vec::new() };
        for row in meta.chunks_exact(a.meta_stride) {
            out.s.push(f32::from_bits(row[0]));
            out.tsum.push(row[1] as i32);
            out.bsums.extend(row[2..].iter().map(|&v| v as i32));
        }
        Ok(out)
    }

    /// `y = W x` for each token of `x` (`n x rows` out), equal to `TernaryMatrix::gemm` on the
    /// same weights and activations (see the crate docs for the division caveat off lavapipe).
    pub fn gemv(&self, w: &GpuTernary, x: &GpuActs) -> Result<GpuVec> {
        let mut r = self.begin()?;
        let y = r.gemm(w, x)?;
        r.submit()?;
        Ok(y)
    }

    /// `y = x / sqrt(mean(x²) + eps) * w` for each row of `x` (rows of `w.len()`), as
    /// `ternlm_kernels::ops::rms_norm`.
    pub fn rms_norm(&self, x: &GpuVec, w: &GpuVec, eps: f32) -> Result<GpuVec> {
        let mut r = self.begin()?;
        let y = r.rms_norm(x, w, eps)?;
        r.submit()?;
        Ok(y)
    }
}

impl Recorder<'_> {
    /// Quantizes `x` (rows of `cols` values) per token into int8, as
    /// `ternlm_kernels::act_quant::quantize_per_token` does for each row.
    pub fn quantize_per_token(&mut self, x: &GpuVec, cols: usize) -> Result<GpuActs> {
        if cols == 0 || !cols.is_multiple_of(4) || !x.len.is_multiple_of(cols) || x.len == 0 {
            return Err(GpuError::Shape(format!("{} activations are not rows of {cols} (a positive multiple of 4)", x.len)));
        }
        let n = x.len / cols;
        let (gx, gy) = self.gpu.grid(n, 1)?;
        if gy > 1 {
            return Err(GpuError::Shape(format!("{n} rows are more than one dispatch dimension holds")));
        }
        let groups = cols.div_ceil(GROUP);
        let meta_stride = 2 + groups;
        let q = self.gpu.storage("int8 activations", x.len as u64)?;
        let meta = self.gpu.storage("activation scales and sums", (n * meta_stride * 4) as u64)?;
        let params = self.gpu.uniform(&[cols as u32, groups as u32, meta_stride as u32, 0]);
        let gpu = self.gpu;
        let bg = gpu.bind_group(&gpu.quant, &[&x.buf, &q, &meta, &params]);
        self.dispatch(&gpu.quant, vec![(bg, gx, 1, 1)]);
        Ok(GpuActs { q, meta, n, cols, meta_stride })
    }

    /// Records `y = W x` for each of `x`'s tokens (`n x rows` out): one dispatch per weight
    /// chunk, the tokens along the grid's z.
    pub fn gemm(&mut self, w: &GpuTernary, x: &GpuActs) -> Result<GpuVec> {
        if x.n == 0 || x.cols != w.cols {
            return Err(GpuError::Shape(format!("the ternary product takes tokens of {} values, got {} of {}", w.cols, x.n, x.cols)));
        }
        let z = self.gpu.token_groups(x.n)?;
        let y = self.gpu.storage("GEMM output", (x.n * w.rows) as u64 * 4)?;
        let gpu = self.gpu;
        let runs: Vec<_> = w.chunks.iter().map(|c| (gpu.bind_group(&gpu.gemv, &[&c.weights, &c.scales, &x.q, &x.meta, &y, &c.params]), c.grid.0, c.grid.1, z)).collect();
        self.dispatch(&gpu.gemv, runs);
        Ok(GpuVec { buf: y, len: x.n * w.rows })
    }

    /// Records `y = rms_norm(x) * w` for each row of `x`.
    pub fn rms_norm(&mut self, x: &GpuVec, w: &GpuVec, eps: f32) -> Result<GpuVec> {
        if w.len == 0 || x.len == 0 || !x.len.is_multiple_of(w.len) {
            return Err(GpuError::Shape(format!("{} values are not rows of the norm's {} weights", x.len, w.len)));
        }
        let n = x.len / w.len;
        let (gx, gy) = self.gpu.grid(n, 1)?;
        if gy > 1 {
            return Err(GpuError::Shape(format!("{n} rows are more than one dispatch dimension holds")));
        }
        let y = self.gpu.storage("RMSNorm output", x.len as u64 * 4)?;
        let params = self.gpu.uniform(&[w.len as u32, eps.to_bits(), 0, 0]);
        let gpu = self.gpu;
        let bg = gpu.bind_group(&gpu.rms, &[&x.buf, &w.buf, &y, &params]);
        self.dispatch(&gpu.rms, vec![(bg, gx, 1, 1)]);
        Ok(GpuVec { buf: y, len: x.len })
    }
}
