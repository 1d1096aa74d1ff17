//! Products of ggml's block-quantized (Q8_0, Q4_0, Q4_1, Q6_K, Q4_K) and float (F16, BF16,
//! F32) weights with one or more tokens (output heads, SmolLM2's layers), the device twin
//! of `ternlm_kernels::blockq::BlockMatrix::gemm` at `Isa::Scalar` (F32 and BF16 within one
//! ULP: the CPU sums their products in f64, the device in a float pair).
//!
//! Weights arrive as the GGUF bytes `BlockMatrix` holds. Q8_0 (34 bytes a block), Q4_0 (18),
//! Q4_1 (20) and Q6_K (210) blocks are not word aligned, and WGSL storage has nothing smaller
//! than a word, so [`Gpu::upload_block`] repacks each block into whole words: Q8_0 (9 words),
//! Q4_0 and Q4_1 (5) put their f16 scale word first, then the quantized bytes unchanged; Q6_K
//! (53) keeps its first 208 bytes and moves d to a last word. Q4_K blocks (144 bytes, 36
//! words) are aligned already and go up unchanged, as do F32 rows; F16 and BF16 rows are
//! uploaded as they are, each padded to a whole word when `cols` is odd.
//!
//! Activations are prepared on the device by [`Gpu::prepare_block_acts`] (ggml's Q8_0, Q8_1
//! or Q8_K quantization, or F16 rounding, bit for bit as the CPU), or on the host:
//! [`Gpu::upload_q8_acts`] takes what `PreparedActs::quant` (ternlm-kernels' `QuantActs`)
//! holds, and [`Gpu::upload_f16_acts`] the f16-rounded floats `PreparedActs::float` holds.
//!
//! The shaders follow the CPU's float order (see shaders/blockq_common.wgsl), so the
//! outputs equal the CPU's bit for bit (tested on lavapipe for every type, F16 of any
//! width). Two CPU operations have no direct WGSL twin:
//! - the CPU's `f32::mul_add` rounds once, and WGSL's `fma` need not (Vulkan gives it a
//!   multiply's and an add's accuracy; lavapipe does not fuse, measured): the quantized
//!   kernels use `fma_exact`, an exact emulation from rounded operations (Dekker's product,
//!   TwoSum, rounding to odd). F16 needs none: an f16 times an f16-rounded activation is
//!   exact in f32, so rounding the sum alone is the fused result;
//! - F16 rows with `cols % 8 != 0` add their last products in f64; the shader keeps that sum
//!   exactly in 128-bit fixed point and rounds it to 53 and then 24 bits as the CPU does.
//!
//! `fma_exact` costs some 25 operations where a fused device needs one: a device whose
//! `fma()` passes the self-check run when it is opened (fma.rs) gets the native one.
//! Subnormal f32 values would be out of the emulations' range; the scales and sums of real
//! weights stay far above them.

use crate::device::{Gpu, Recorder};
use crate::kernels::GpuVec;
use crate::{GpuError, Result};

/// Workgroup size of the block shaders (`const WG` in blockq_common.wgsl).
const WG: usize = 64;

const COMMON: &str = concat!(include_str!("shaders/blockq_common.wgsl"), include_str!("shaders/f16.wgsl"), include_str!("shaders/two_sum.wgsl"));

/// The weight types [`Gpu::upload_block`] takes (ternlm-kernels' `BlockKind` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuBlockKind {
    Q8_0,
    Q4_0,
    Q4_1,
    F16,
    Q6K,
    Q4K,
    F32,
    BF16,
}

impl GpuBlockKind {
    /// Columns per block in the GGUF layout.
    pub fn block_len(self) -> usize {
        match self {
            Self::F16 | Self::F32 | Self::BF16 => 1,
            Self::Q6K | Self::Q4K => 256,
            _ => 32,
        }
    }

    /// Bytes per block in the GGUF layout.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::Q8_0 => 34,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::F16 | Self::BF16 => 2,
            Self::F32 => 4,
            Self::Q6K => 210,
            Self::Q4K => 144,
        }
    }

    /// Words per block in the device layout (quantized types).
    fn device_words(self) -> usize {
        match self {
            Self::Q8_0 => 9,
            Self::Q4_0 | Self::Q4_1 => 5,
            Self::Q6K => 53,
            Self::Q4K => 36,
            Self::F16 | Self::F32 | Self::BF16 => 0,
        }
    }

    /// Bytes of f16 scales at the start of a GGUF block (Q4_1 has d and m).
    fn scale_bytes(self) -> usize {
        match self {
            Self::Q4_1 | Self::Q4K => 4,
            _ => 2,
        }
    }
}

/// The compiled block GEMVs, one per [`GpuBlockKind`].
pub(crate) struct BlockPipelines {
    q8_0: wgpu::ComputePipeline,
    q4_0: wgpu::ComputePipeline,
    q4_1: wgpu::ComputePipeline,
    f16: wgpu::ComputePipeline,
    q6k: wgpu::ComputePipeline,
    q4k: wgpu::ComputePipeline,
    float: wgpu::ComputePipeline,
    quant_q8: wgpu::ComputePipeline,
    quant_q8k: wgpu::ComputePipeline,
    quant_f16: wgpu::ComputePipeline,
    quant_bf16: wgpu::ComputePipeline,
}

impl BlockPipelines {
    /// Compiles the shaders; the caller holds an error scope around this.
    /// With `native_fma`, the fused multiply-adds are the device's own `fma()` (see fma.rs).
    pub(crate) fn new(device: &wgpu::Device, native_fma: bool) -> Self {
        let fma = crate::fma::source(native_fma);
        let pipeline = |entry: &str, module: &wgpu::ShaderModule| crate::device::pipeline(device, module, entry);
        let module = |label: &str, src: String| crate::device::shader(device, label, &src);
        let make = |entry: &str, body: &str| pipeline(entry, &module(entry, format!("{COMMON}{fma}{body}")));
        let quant = module("blockq_quant", concat!(include_str!("shaders/blockq_quant.wgsl"), include_str!("shaders/f16.wgsl"), include_str!("shaders/div.wgsl")).to_string());
        BlockPipelines {
            q8_0: make("gemv_q8_0", include_str!("shaders/blockq_q8_0.wgsl")),
            q4_0: make("gemv_q4_0", include_str!("shaders/blockq_q4_0.wgsl")),
            q4_1: make("gemv_q4_1", include_str!("shaders/blockq_q4_1.wgsl")),
            f16: make("gemv_f16", include_str!("shaders/blockq_f16.wgsl")),
            q6k: make("gemv_q6_k", include_str!("shaders/blockq_q6_k.wgsl")),
            q4k: make("gemv_q4_k", include_str!("shaders/blockq_q4_k.wgsl")),
            float: make("gemv_float", include_str!("shaders/blockq_f32.wgsl")),
            quant_q8: pipeline("quant_q8", &quant),
            quant_q8k: pipeline("quant_q8k", &quant),
            quant_f16: pipeline("quant_f16", &quant),
            quant_bf16: pipeline("quant_bf16", &quant),
        }
    }

    fn get(&self, kind: GpuBlockKind) -> &wgpu::ComputePipeline {
        match kind {
            GpuBlockKind::Q8_0 => &self.q8_0,
            GpuBlockKind::Q4_0 => &self.q4_0,
            GpuBlockKind::Q4_1 => &self.q4_1,
            GpuBlockKind::F16 => &self.f16,
            GpuBlockKind::Q6K => &self.q6k,
            GpuBlockKind::Q4K => &self.q4k,
            GpuBlockKind::F32 | GpuBlockKind::BF16 => &self.float,
        }
    }
}

/// One part of a weight matrix small enough for a single storage binding.
struct Chunk {
    weights: wgpu::Buffer,
    params: wgpu::Buffer,
    grid: (u32, u32),
}

/// A block-quantized or F16 matrix on the device, split by rows into as many buffers as the
/// adapter's binding limit needs.
pub struct GpuBlockMatrix {
    kind: GpuBlockKind,
    rows: usize,
    cols: usize,
    chunks: Vec<Chunk>,
}

impl GpuBlockMatrix {
    pub fn kind(&self) -> GpuBlockKind {
        self.kind
    }

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

/// Activations for [`Gpu::gemv_block`] / [`Recorder::gemm_block`]: `n` tokens of `cols`.
pub struct GpuBlockActs {
    n: usize,
    cols: usize,
    data: ActData,
}

enum ActData {
    /// ggml Q8_0 (`s` is `None`), Q8_1 or Q8_K (`block` 256): q packed 4 per word, one f32
    /// scale per block.
    Q8 { q: wgpu::Buffer, d: wgpu::Buffer, s: Option<wgpu::Buffer>, block: usize },
    /// f32 values already rounded through f16.
    Float(wgpu::Buffer),
}

impl GpuBlockActs {
    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn rows(&self) -> usize {
        self.n
    }
}

/// [`GpuBlockActs`] read back, in the terms of ternlm-kernels' `PreparedActs`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostBlockActs {
    /// Quantized values (`QuantActs::q`); empty for float activations.
    pub q: Vec<i8>,
    /// One scale per block (`QuantActs::d`).
    pub d: Vec<f32>,
    /// Q8_1's `d * Σq` per block (`QuantActs::s`).
    pub s: Vec<f32>,
    /// F16-rounded floats (`PreparedActs::float`).
    pub float: Vec<f32>,
}

impl Gpu {
    /// Uploads a `rows x cols` matrix of `kind` from its GGUF bytes (`rows * cols /
    /// block_len * block_bytes` of them, as `BlockMatrix::row_data` gives row by row),
    /// repacked into the word-aligned device layout described in the module docs. A matrix
    /// above the binding limit is split by rows; a single row above it is a
    /// [`GpuError::TooLarge`].
    pub fn upload_block(&self, kind: GpuBlockKind, rows: usize, cols: usize, bytes: &[u8]) -> Result<GpuBlockMatrix> {
        if rows == 0 || cols == 0 || !cols.is_multiple_of(kind.block_len()) {
            return Err(GpuError::Shape(format!("{kind:?} matrix {rows}x{cols}: columns must be a positive multiple of {}", kind.block_len())));
        }
        let blocks = cols / kind.block_len();
        let row_bytes = blocks * kind.block_bytes();
        if rows.checked_mul(row_bytes) != Some(bytes.len()) {
            return Err(GpuError::Shape(format!("{kind:?} matrix {rows}x{cols} is {} bytes, got {}", rows.saturating_mul(row_bytes), bytes.len())));
        }
        self.fits("the GEMV output", rows as u64 * 4)?;
        let row_words = match kind {
            GpuBlockKind::F16 | GpuBlockKind::BF16 => cols.div_ceil(2),
            GpuBlockKind::F32 => cols,
            _ => blocks * kind.device_words(),
        };
        let stride = row_words as u64 * 4;
        let rows_per_chunk = self.binding_limit() / stride;
        if rows_per_chunk == 0 {
            return Err(GpuError::TooLarge { what: format!("one row of a {rows}x{cols} {kind:?} matrix"), bytes: stride, limit: self.binding_limit() });
        }
        let rows_per_chunk = rows_per_chunk.min(rows as u64) as usize;
        let mut chunks = Vec::with_capacity(rows.div_ceil(rows_per_chunk));
        let mut words: Vec<u32> = Vec::new();
        for row0 in (0..rows).step_by(rows_per_chunk) {
            let n = rows_per_chunk.min(rows - row0);
            words.clear();
            words.reserve(n * row_words);
            for row in bytes[row0 * row_bytes..(row0 + n) * row_bytes].chunks_exact(row_bytes) {
                repack_row(kind, row, &mut words);
            }
            debug_assert_eq!(words.len(), n * row_words);
            let weights = self.storage_init("block weights", bytemuck::cast_slice(&words))?;
            let grid = self.grid(n, WG)?;
            // Float kinds count columns; the last word tells BF16 weights from F32 (gemv_float).
            let params = [n, row0, blocks, row_words, grid.0 as usize, 0, rows, usize::from(kind == GpuBlockKind::BF16)];
            let params: Vec<u32> =
                params.iter().map(|&v| u32::try_from(v)).collect::<Result<_, _>>().map_err(|_| GpuError::Shape(format!("{kind:?} matrix {rows}x{cols} is too large for 32-bit indexing")))?;
            chunks.push(Chunk { weights, params: self.uniform(&params), grid });
        }
        Ok(GpuBlockMatrix { kind, rows, cols, chunks })
    }

    /// Uploads one token's activations quantized by ggml's Q8_0 (`s` empty), Q8_1 (`s`: one
    /// `d * Σq` per block) or Q8_K (one scale per 256 values, `s` empty; the 16-value sums
    /// are not needed) as ternlm-kernels' `QuantActs` holds them: `q` (`cols` values), `d`
    /// one f32 scale per block. The block length follows from `d.len()`.
    pub fn upload_q8_acts(&self, q: &[i8], d: &[f32], s: &[f32]) -> Result<GpuBlockActs> {
        let cols = q.len();
        let block = if d.len() * 32 == cols { 32 } else { 256 };
        if cols == 0 || d.len() * block != cols || (!s.is_empty() && (s.len() != d.len() || block != 32)) {
            return Err(GpuError::Shape(format!("Q8 activations: {cols} values, {} scales (one per 32 or 256 values) and {} sums", d.len(), s.len())));
        }
        let q = self.storage_init("Q8 activations", bytemuck::cast_slice(q))?;
        let d = self.storage_init("Q8 activation scales", bytemuck::cast_slice(d))?;
        let s = if s.is_empty() { None } else { Some(self.storage_init("Q8_1 activation sums", bytemuck::cast_slice(s))?) };
        Ok(GpuBlockActs { n: 1, cols, data: ActData::Q8 { q, d, s, block } })
    }

    /// Uploads one token's activations for F16 weights: `x` already rounded through f16 and
    /// back, as `BlockMatrix::prepare` leaves them in `PreparedActs::float`. The device does
    /// not round them again, and its exactness relies on it (with other values the result
    /// is within f32 rounding of the CPU's, not equal).
    pub fn upload_f16_acts(&self, x: &[f32]) -> Result<GpuBlockActs> {
        if x.is_empty() {
            return Err(GpuError::Shape("F16 activations: no values".into()));
        }
        Ok(GpuBlockActs { n: 1, cols: x.len(), data: ActData::Float(self.storage_init("F16 activations", bytemuck::cast_slice(x))?) })
    }

    /// Prepares one token `x` for weights of `kind` on the device (see
    /// [`Recorder::prepare_block_acts`]).
    pub fn prepare_block_acts(&self, kind: GpuBlockKind, x: &GpuVec) -> Result<GpuBlockActs> {
        let mut r = self.begin()?;
        let a = r.prepare_block_acts(kind, x, 1)?;
        r.submit()?;
        Ok(a)
    }

    /// Reads prepared activations back (for tests and debugging).
    pub fn read_block_acts(&self, a: &GpuBlockActs) -> Result<HostBlockActs> {
        let floats = |b: &wgpu::Buffer, n: usize| -> Result<Vec<f32>> { Ok(bytemuck::pod_collect_to_vec(&self.read_bytes(b, n as u64 * 4)?)) };
        Ok(match &a.data {
            ActData::Float(b) => HostBlockActs { float: floats(b, a.n * a.cols)?, ..Default::default() },
            ActData::Q8 { q, d, s, block } => {
                let n = a.n * a.cols / block;
                HostBlockActs {
                    q: bytemuck::pod_collect_to_vec(&self.read_bytes(q, (a.n * a.cols) as u64)?),
                    d: floats(d, n)?,
                    s: match s {
                        Some(s) => floats(s, n)?,
                        None => Vec::new(),
                    },
                    float: Vec::new(),
                }
            }
        })
    }

    /// `y = W x` for each token of `x` (see [`Recorder::gemm_block`]).
    pub fn gemv_block(&self, w: &GpuBlockMatrix, x: &GpuBlockActs) -> Result<GpuVec> {
        let mut r = self.begin()?;
        let y = r.gemm_block(w, x)?;
        r.submit()?;
        Ok(y)
    }
}

impl Recorder<'_> {
    /// Records the preparation of `n` tokens `x` (rows of `x.len() / n`) for weights of `kind`, as `BlockMatrix::prepare`
    /// does on the CPU and bit for bit: ggml's Q8_0 (Q8_0 and Q4_0 weights), Q8_1 (Q4_1) or
    /// Q8_K (Q6_K, without the 16-value sums, which its GEMV does not need), or values
    /// rounded through f16 (F16). Subnormal block maxima are the exception: WGSL may flush them.
    pub fn prepare_block_acts(&mut self, kind: GpuBlockKind, x: &GpuVec, n: usize) -> Result<GpuBlockActs> {
        if n == 0 || !x.len().is_multiple_of(n) {
            return Err(GpuError::Shape(format!("{} activations are not {n} tokens", x.len())));
        }
        let cols = x.len() / n;
        let bl = kind.block_len();
        if cols == 0 || !cols.is_multiple_of(bl) {
            return Err(GpuError::Shape(format!("{kind:?} activations: {cols} values are not a positive multiple of {bl}")));
        }
        let blocks = x.len() / bl;
        let (gx, gy) = self.gpu.grid(blocks, WG)?;
        if gy > 1 {
            return Err(GpuError::Shape(format!("{cols} activations are more than one dispatch dimension holds")));
        }
        if kind == GpuBlockKind::F32 {
            // F32 weights take the activations as they are.
            return Ok(GpuBlockActs { n, cols, data: ActData::Float(x.buffer().clone()) });
        }
        let params = self.gpu.uniform(&[u32::try_from(blocks).map_err(|_| GpuError::Shape(format!("{cols} activations")))?, u32::from(kind == GpuBlockKind::Q4_1), 0, 0]);
        let total = x.len() as u64;
        let x = x.buffer().clone();
        // Buffers are handles: the clones share the device memory.
        let (pipeline, acts, entries): (&wgpu::ComputePipeline, ActData, Vec<(u32, wgpu::Buffer)>) = match kind {
            GpuBlockKind::F16 | GpuBlockKind::BF16 | GpuBlockKind::F32 => {
                let f = self.gpu.storage("rounded float activations", total * 4)?;
                let pipeline = if kind == GpuBlockKind::F16 { &self.gpu.block.quant_f16 } else { &self.gpu.block.quant_bf16 };
                (pipeline, ActData::Float(f.clone()), vec![(0, x), (4, params), (5, f)])
            }
            GpuBlockKind::Q6K | GpuBlockKind::Q4K => {
                let q = self.gpu.storage("Q8_K activations", total)?;
                let d = self.gpu.storage("Q8_K activation scales", blocks as u64 * 4)?;
                (&self.gpu.block.quant_q8k, ActData::Q8 { q: q.clone(), d: d.clone(), s: None, block: 256 }, vec![(0, x), (1, q), (2, d), (4, params)])
            }
            _ => {
                let q = self.gpu.storage("Q8 activations", total)?;
                let d = self.gpu.storage("Q8 activation scales", blocks as u64 * 4)?;
                // The entry point always binds the sums; for Q8_0 they stay unwritten and unused.
                let s = self.gpu.storage("Q8_1 activation sums", blocks as u64 * 4)?;
                let acts = ActData::Q8 { q: q.clone(), d: d.clone(), s: (kind == GpuBlockKind::Q4_1).then(|| s.clone()), block: 32 };
                (&self.gpu.block.quant_q8, acts, vec![(0, x), (1, q), (2, d), (3, s), (4, params)])
            }
        };
        // Explicit binding numbers: each entry point uses a different subset of the module's.
        let entries: Vec<wgpu::BindGroupEntry> = entries.iter().map(|(binding, b)| wgpu::BindGroupEntry { binding: *binding, resource: b.as_entire_binding() }).collect();
        let bg = self.gpu.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &pipeline.get_bind_group_layout(0), entries: &entries });
        self.dispatch(pipeline, vec![(bg, gx, 1, 1)]);
        Ok(GpuBlockActs { n, cols, data: acts })
    }

    /// Records `y = W x` for each token of `x` (`n x rows` out): Q8_0 and Q4_0 weights take Q8_0 activations, Q4_1 takes Q8_1
    /// (with sums), F16 takes f16-rounded floats, as on the CPU.
    pub fn gemm_block(&mut self, w: &GpuBlockMatrix, x: &GpuBlockActs) -> Result<GpuVec> {
        if x.cols != w.cols {
            return Err(GpuError::Shape(format!("{:?} GEMV takes {} values, got {}", w.kind, w.cols, x.cols)));
        }
        let gpu = self.gpu;
        let pipeline = gpu.block.get(w.kind);
        let z = gpu.token_groups(x.n)?;
        let y = gpu.storage("block GEMM output", (x.n * w.rows) as u64 * 4)?;
        let mut runs = Vec::with_capacity(w.chunks.len());
        for c in &w.chunks {
            let buffers: Vec<&wgpu::Buffer> = match (&x.data, w.kind) {
                (ActData::Q8 { q, d, block: 32, .. }, GpuBlockKind::Q8_0 | GpuBlockKind::Q4_0) => vec![&c.weights, q, d, &y, &c.params],
                (ActData::Q8 { q, d, s: Some(s), block: 32 }, GpuBlockKind::Q4_1) => vec![&c.weights, q, d, s, &y, &c.params],
                (ActData::Q8 { q, d, block: 256, .. }, GpuBlockKind::Q6K | GpuBlockKind::Q4K) => vec![&c.weights, q, d, &y, &c.params],
                (ActData::Float(v), GpuBlockKind::F16 | GpuBlockKind::F32 | GpuBlockKind::BF16) => vec![&c.weights, v, &y, &c.params],
                _ => return Err(GpuError::Shape(format!("{:?} weights need {} activations", w.kind, act_name(w.kind)))),
            };
            runs.push((gpu.bind_group(pipeline, &buffers), c.grid.0, c.grid.1, z));
        }
        self.dispatch(pipeline, runs);
        Ok(GpuVec::from_parts(y, x.n * w.rows))
    }
}

fn act_name(kind: GpuBlockKind) -> &'static str {
    match kind {
        GpuBlockKind::Q8_0 | GpuBlockKind::Q4_0 => "Q8_0",
        GpuBlockKind::Q4_1 => "Q8_1 (with block sums)",
        GpuBlockKind::F16 => "f16-rounded float",
        GpuBlockKind::BF16 => "bf16-rounded float",
        GpuBlockKind::F32 => "float",
        GpuBlockKind::Q6K | GpuBlockKind::Q4K => "Q8_K",
    }
}

/// Appends one GGUF row of `kind` in the device layout: per block, one word of f16 scale
/// bits (Q4_1: d low, m high) and the quantized bytes as little-endian words; Q6_K blocks'
/// 208 bytes of values and scales then a word with d; F16 rows as they are, zero-padded to a
/// whole word.
fn repack_row(kind: GpuBlockKind, row: &[u8], out: &mut Vec<u32>) {
    let word = |b: &[u8]| {
        let mut w = [0u8; 4];
        w[..b.len()].copy_from_slice(b);
        u32::from_le_bytes(w)
    };
    if matches!(kind, GpuBlockKind::F16 | GpuBlockKind::BF16 | GpuBlockKind::F32) {
        out.extend(row.chunks(4).map(word));
        return;
    }
    if kind == GpuBlockKind::Q6K {
        for blk in row.chunks_exact(210) {
            out.extend(blk[..208].chunks_exact(4).map(word));
            out.push(word(&blk[208..]));
        }
        return;
    }
    let sb = kind.scale_bytes();
    for blk in row.chunks_exact(kind.block_bytes()) {
        out.push(word(&blk[..sb]));
        out.extend(blk[sb..].chunks_exact(4).map(word));
    }
}
