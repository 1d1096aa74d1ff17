//! A linear layer in whatever form its weights take: ternary (repacked at load into the
//! kernel's layout, BitLinear arithmetic) or a ggml block/float type (used in place from the
//! mmap). Activations are prepared once per input and may be shared by layers that consume
//! the same format (Q, K and V; gate and up).

use std::sync::{Arc, Mutex};

use ternlm_format::dequant::{dequantize_row, i2s_scale, unpack_ternary_row};
use ternlm_format::{GgufFile, TensorInfo, TensorType};
use ternlm_kernels::ThreadPool;
use ternlm_kernels::act_quant::{ActFormat, QuantActs};
use ternlm_kernels::blockq::{BlockKind, BlockMatrix, PreparedActs, WeightBytes};
use ternlm_kernels::huge_buf::HugeBuf;
use ternlm_kernels::int8::Int8Matrix;
use ternlm_kernels::isa::Isa;
use ternlm_kernels::ternary::{TernaryLayout, TernaryMatrix};

use crate::error::{ModelError, Result, bad_tensor};

#[derive(Clone, Debug)]
pub enum Linear {
    Ternary(TernaryMatrix),
    Block(BlockMatrix),
    /// An output head repacked to int8 rows (`LoadOptions::int8_head`).
    Int8(Int8Matrix),
}

/// The activation form a linear layer consumes; equal keys can share one [`Prepared`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    Quant(ActFormat),
    Float(BlockKind),
}

/// Activations prepared for one or more linear layers of the same [`InputKind`].
#[derive(Debug, Default)]
pub struct Prepared {
    kind: Option<InputKind>,
    acts: PreparedActs,
}

pub fn block_kind(ty: TensorType) -> Option<BlockKind> {
    Some(match ty {
        TensorType::F32 => BlockKind::F32,
        TensorType::F16 => BlockKind::F16,
        TensorType::BF16 => BlockKind::BF16,
        TensorType::Q4_0 => BlockKind::Q4_0,
        TensorType::Q4_1 => BlockKind::Q4_1,
        TensorType::Q8_0 => BlockKind::Q8_0,
        TensorType::Q4K => BlockKind::Q4K,
        TensorType::Q6K => BlockKind::Q6K,
        TensorType::TQ1_0 | TensorType::TQ2_0 | TensorType::I2S => return None,
    })
}

impl Linear {
    /// Loads tensor `name`, which must be `cols` wide (inputs) and `rows` tall (outputs).
    pub fn load(file: &Arc<GgufFile>, pool: &ThreadPool, name: &str, cols: usize, rows: usize) -> Result<Self> {
        let info = file.view().require_tensor(name)?;
        if info.dims != [cols as u64, rows as u64] {
            return Err(bad_tensor(name, format!("has shape {}, expected [{cols}, {rows}]", info.shape_string())));
        }
        Self::from_tensor(file, pool, info)
    }

    /// Loads a 2-D tensor as it is shaped in the file.
    pub fn from_tensor(file: &Arc<GgufFile>, pool: &ThreadPool, info: &TensorInfo) -> Result<Self> {
        if info.dims.len() != 2 {
            return Err(bad_tensor(&info.name, format!("has shape {}, expected a matrix", info.shape_string())));
        }
        let (cols, rows) = (info.dims[0] as usize, info.dims[1] as usize);
        if info.ty.is_ternary() {
            return load_ternary(file, pool, info, rows, cols).map(Self::Ternary);
        }
        let kind = block_kind(info.ty).ok_or_else(|| bad_tensor(&info.name, format!("type {} is not a linear type", info.ty)))?;
        let owner: Arc<dyn AsRef<[u8]> + Send + Sync> = file.clone();
        let range = info.offset as usize..(info.offset + info.size) as usize;
        let data = WeightBytes::new(owner, range).map_err(|e| bad_tensor(&info.name, e.0))?;
        BlockMatrix::new(kind, rows, cols, data).map(Self::Block).map_err(|e| bad_tensor(&info.name, e.0))
    }

    pub fn rows(&self) -> usize {
        match self {
            Self::Ternary(m) => m.rows(),
            Self::Block(m) => m.rows(),
            Self::Int8(m) => m.rows(),
        }
    }

    pub fn cols(&self) -> usize {
        match self {
            Self::Ternary(m) => m.cols(),
            Self::Block(m) => m.cols(),
            Self::Int8(m) => m.cols(),
        }
    }

    /// The weights' kind as reports name it (`q4_1`, `ternary`, `ternary-1.6`, `int8`) and
    /// the kernel level its products run at while `level` is in use, as reports print it.
    pub fn kernel(&self, level: Isa) -> (&'static str, &'static str) {
        match self {
            Self::Ternary(m) if m.layout() == TernaryLayout::Bits1_6 => ("ternary-1.6", level.name()),
            Self::Ternary(_) => ("ternary", level.name()),
            Self::Block(m) => (m.kind().name(), m.kind().kernel_level(level).name()),
            Self::Int8(_) => ("int8", level.name()),
        }
    }

    /// Bytes of weights one pass over this layer reads.
    pub fn bytes(&self) -> usize {
        match self {
            Self::Ternary(m) => m.bytes(),
            Self::Block(m) => m.bytes(),
            Self::Int8(m) => m.bytes(),
        }
    }

    pub fn input_kind(&self) -> InputKind {
        match self {
            Self::Ternary(_) => InputKind::Quant(TernaryMatrix::ACT_FORMAT),
            Self::Int8(_) => InputKind::Quant(Int8Matrix::ACT_FORMAT),
            Self::Block(m) => match m.kind().act_format() {
                Some(f) => InputKind::Quant(f),
                None => InputKind::Float(m.kind()),
            },
        }
    }

    /// Prepares `x` for this layer unless `prep` already holds it in the right form.
    /// Call [`Prepared::invalidate`] when `x` changes.
    pub fn prepare(&self, x: &[f32], prep: &mut Prepared) {
        let kind = self.input_kind();
        if prep.kind == Some(kind) {
            return;
        }
        match self {
            Self::Ternary(_) | Self::Int8(_) => prep.acts.quant.quantize(TernaryMatrix::ACT_FORMAT, x, self.cols()),
            Self::Block(m) => m.prepare(x, &mut prep.acts),
        }
        prep.kind = Some(kind);
    }

    /// `out = x · Wᵀ` for the activations in `prep` (`n x cols` in, `n x rows` out).
    pub fn apply(&self, pool: &ThreadPool, prep: &Prepared, out: &mut [f32]) {
        debug_assert_eq!(prep.kind, Some(self.input_kind()));
        match self {
            Self::Ternary(m) => m.gemm(pool, &prep.acts.quant, out),
            Self::Int8(m) => m.gemm(pool, &prep.acts.quant, out),
            Self::Block(m) => m.gemm(pool, &prep.acts, out),
        }
    }

    /// Stores a ternary layer in `layout` when it applies (the 1.6-bit layout needs one scale
    /// per matrix); other layers are left as they are.
    pub fn relayout(&mut self, pool: &ThreadPool, layout: TernaryLayout) {
        if let Self::Ternary(m) = self
            && let Some(r) = m.relayout(pool, layout)
        {
            *m = r;
        }
    }

    /// Repacks a float or block-quantized layer into int8 rows with per-row scales (for the
    /// output head); ternary and already-int8 layers are returned as they are.
    pub fn to_int8(self, pool: &ThreadPool) -> Self {
        let Self::Block(m) = self else { return self };
        let Some(ty) = tensor_type(m.kind()) else { return Self::Block(m) };
        let (rows, cols) = (m.rows(), m.cols());
        // Rows were bounds-checked when the matrix was built, so dequantizing cannot fail;
        // should it, the layer stays as it was rather than turning into zeros.
        let mut probe = vec![0f32; cols];
        if dequantize_row(ty, m.row_data(rows - 1), cols, cols, 0, "output", &mut probe).is_err() {
            return Self::Block(m);
        }
        let q = Int8Matrix::quantize(pool, rows, cols, &|r, buf| {
            if dequantize_row(ty, m.row_data(r), cols, cols, 0, "output", buf).is_err() {
                buf.fill(0.0);
            }
        });
        Self::Int8(q)
    }

    /// Prepare (reusing `prep` if it already holds `x` in this layer's form) and apply: for
    /// layers that share an input, after one [`Prepared::invalidate`].
    pub fn forward_shared(&self, pool: &ThreadPool, x: &[f32], prep: &mut Prepared, out: &mut [f32]) {
        self.prepare(x, prep);
        self.apply(pool, prep, out);
    }

    /// Prepare and apply in one call, for inputs that feed a single layer.
    pub fn forward(&self, pool: &ThreadPool, x: &[f32], prep: &mut Prepared, out: &mut [f32]) {
        prep.invalidate();
        self.forward_shared(pool, x, prep, out);
    }
}

fn tensor_type(kind: BlockKind) -> Option<TensorType> {
    Some(match kind {
        BlockKind::F32 => TensorType::F32,
        BlockKind::F16 => TensorType::F16,
        BlockKind::BF16 => TensorType::BF16,
        BlockKind::Q4_0 => TensorType::Q4_0,
        BlockKind::Q4_1 => TensorType::Q4_1,
        BlockKind::Q8_0 => TensorType::Q8_0,
        BlockKind::Q4K => TensorType::Q4K,
        BlockKind::Q6K => TensorType::Q6K,
    })
}

impl Prepared {
    pub fn invalidate(&mut self) {
        self.kind = None;
    }

    /// The quantized activations, for inspection in tests.
    pub fn quant(&self) -> &QuantActs {
        &self.acts.quant
    }
}

/// Repacks every row of a ternary tensor into the kernel layout, in parallel. TQ2_0 and
/// I2_S already group trits the kernel's way, so their rows are copied group by group (I2_S
/// with its 2-bit fields reversed); TQ1_0 is unpacked trit by trit.
fn load_ternary(file: &GgufFile, pool: &ThreadPool, info: &TensorInfo, rows: usize, cols: usize) -> Result<TernaryMatrix> {
    let data = file.data(info);
    let n = info.n_elements() as usize;
    let row_bytes = TernaryMatrix::packed_row_bytes(cols);
    let block_len = if info.ty == TensorType::I2S { cols } else { 256 };
    let blocks_per_row = cols / block_len;
    let rows_per_task = 64usize;
    let mut packed = HugeBuf::zeroed(rows * row_bytes);
    let mut scales = vec![0f32; rows * blocks_per_row];
    let first_error: Mutex<Option<ModelError>> = Mutex::new(None);
    let i2s_scale = if info.ty == TensorType::I2S { Some(i2s_scale(data, n, &info.name)?) } else { None };
    let src_row_bytes = info.ty.row_bytes(cols).ok_or_else(|| bad_tensor(&info.name, format!("rows of {cols} are not whole {} blocks", info.ty)))?;
    let scale_chunks: Vec<Mutex<&mut [f32]>> = scales.chunks_mut(rows_per_task * blocks_per_row).map(Mutex::new).collect();
    pool.for_each_chunk_mut(&mut packed, rows_per_task * row_bytes, &|task, out| {
        let mut trits = vec![0i8; cols];
        let mut my_scales = scale_chunks[task].lock().unwrap_or_else(|e| e.into_inner());
        for (i, row_out) in out.chunks_exact_mut(row_bytes).enumerate() {
            let row = task * rows_per_task + i;
            let my = &mut my_scales[i * blocks_per_row..(i + 1) * blocks_per_row];
            let done = match (info.ty, data.get(row * src_row_bytes..(row + 1) * src_row_bytes)) {
                (TensorType::TQ2_0, Some(src)) => src.chunks_exact(66).enumerate().try_for_each(|(b, blk)| {
                    my[b] = half::f16::from_le_bytes([blk[64], blk[65]]).to_f32();
                    TernaryMatrix::pack_group(&blk[..32], false, &mut row_out[b * 64..])?;
                    TernaryMatrix::pack_group(&blk[32..64], false, &mut row_out[b * 64 + 32..])
                }),
                (TensorType::I2S, Some(src)) => {
                    my[0] = i2s_scale.unwrap_or(0.0);
                    src.chunks_exact(32).enumerate().try_for_each(|(g, grp)| TernaryMatrix::pack_group(grp, true, &mut row_out[g * 32..]))
                }
                _ => match unpack_ternary_row(info.ty, data, cols, n, row, &info.name, &mut trits) {
                    Ok(s) => {
                        TernaryMatrix::pack_row(&trits, row_out);
                        my.copy_from_slice(&s.scales);
                        Ok(())
                    }
                    Err(e) => {
                        first_error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e.into());
                        return;
                    }
                },
            };
            if let Err(e) = done {
                first_error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(bad_tensor(&info.name, format!("row {row}: {e}")));
                return;
            }
        }
    });
    drop(scale_chunks);
    if let Some(e) = first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    if scales.iter().any(|s| !s.is_finite()) {
        return Err(bad_tensor(&info.name, "holds a non-finite scale"));
    }
    file.release(info);
    TernaryMatrix::from_parts(rows, cols, packed, block_len, scales).map_err(|e| bad_tensor(&info.name, e.0))
}
