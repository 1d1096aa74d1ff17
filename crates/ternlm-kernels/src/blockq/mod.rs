//! Weights in ggml's block-quantized and float layouts, used in place (straight from the
//! mmap), and their products with activations quantized the way llama.cpp pairs them:
//! Q4_0 and Q8_0 with Q8_0, Q4_1 with Q8_1, Q4_K and Q6_K with Q8_K; F16 and BF16 weights
//! meet activations rounded to the same type; F32 is plain.

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

use std::ops::Range;
use std::sync::Arc;

use half::{bf16, f16};

use crate::act_quant::{ActFormat, QuantActs};
use crate::isa::Isa;
use crate::pool::{LineSplit, ThreadPool};
use crate::sync_out::SyncOut;
use crate::ternary::ShapeError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
    Q4K,
    Q6K,
}

impl BlockKind {
    pub fn block_len(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q8_0 => 32,
            Self::Q4K | Self::Q6K => 256,
        }
    }

    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
            Self::Q4K => 144,
            Self::Q6K => 210,
        }
    }

    /// ggml's name for the type, lowercase (`q4_1`, `q6_k`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::BF16 => "bf16",
            Self::Q4_0 => "q4_0",
            Self::Q4_1 => "q4_1",
            Self::Q8_0 => "q8_0",
            Self::Q4K => "q4_k",
            Self::Q6K => "q6_k",
        }
    }

    /// The level whose code runs this type's products while `level` is in use: at the
    /// AVX-512 level BF16/F32 rows run the AVX2 kernels (see `rows_avx512`).
    pub fn kernel_level(self, level: Isa) -> Isa {
        match (level, self) {
            (Isa::Amx, Self::Q4_0 | Self::Q4_1 | Self::Q8_0 | Self::Q4K | Self::Q6K) => Isa::Amx,
            (Isa::Amx, _) => self.kernel_level(Isa::Avx512),
            (Isa::Avx512, Self::BF16 | Self::F32) => Isa::Avx2,
            _ => level,
        }
    }

    /// The activation format this weight type's dot product consumes (`None`: float).
    pub fn act_format(self) -> Option<ActFormat> {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => None,
            Self::Q4_0 | Self::Q8_0 => Some(ActFormat::Q8_0),
            Self::Q4_1 => Some(ActFormat::Q8_1),
            Self::Q4K | Self::Q6K => Some(ActFormat::Q8K),
        }
    }
}

/// Shared ownership of weight bytes that live elsewhere (an mmap, or a buffer of our own).
#[derive(Clone)]
pub struct WeightBytes {
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    range: Range<usize>,
}

impl WeightBytes {
    pub fn new(owner: Arc<dyn AsRef<[u8]> + Send + Sync>, range: Range<usize>) -> Result<Self, ShapeError> {
        let len = (*owner).as_ref().len();
        if range.start > range.end || range.end > len {
            return Err(ShapeError(format!("byte range {range:?} exceeds the {len}-byte buffer")));
        }
        Ok(Self { owner, range })
    }

    pub fn from_vec(v: Vec<u8>) -> Self {
        let len = v.len();
        Self { owner: Arc::new(v), range: 0..len }
    }

    pub fn bytes(&self) -> &[u8] {
        &(*self.owner).as_ref()[self.range.clone()]
    }
}

impl std::fmt::Debug for WeightBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeightBytes({} bytes)", self.range.len())
    }
}

/// A `rows x cols` matrix in a ggml block layout, row-major.
#[derive(Clone, Debug)]
pub struct BlockMatrix {
    kind: BlockKind,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: WeightBytes,
    /// The AMX level's copy of the weights (Q4_0, Q4_1, Q8_0, Q4_K, Q6_K), made at its first
    /// use there.
    #[cfg(target_arch = "x86_64")]
    panels: std::sync::OnceLock<Option<Arc<amx::Repacked>>>,
}

impl BlockMatrix {
    pub fn new(kind: BlockKind, rows: usize, cols: usize, data: WeightBytes) -> Result<Self, ShapeError> {
        if cols == 0 || !cols.is_multiple_of(kind.block_len()) {
            return Err(ShapeError(format!("{cols} columns are not a multiple of the {kind:?} block {}", kind.block_len())));
        }
        let row_bytes = cols / kind.block_len() * kind.block_bytes();
        let need = rows.checked_mul(row_bytes).ok_or_else(|| ShapeError("matrix size overflows".into()))?;
        if data.bytes().len() < need {
            return Err(ShapeError(format!("{kind:?} matrix {rows}x{cols} needs {need} bytes, has {}", data.bytes().len())));
        }
        Ok(Self {
            kind,
            rows,
            cols,
            row_bytes,
            data,
            #[cfg(target_arch = "x86_64")]
            panels: std::sync::OnceLock::new(),
        })
    }

    pub fn kind(&self) -> BlockKind {
        self.kind
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn bytes(&self) -> usize {
        self.rows * self.row_bytes
    }

    /// Every row's bytes, in the file's layout (for uploading to another device).
    pub fn data(&self) -> &[u8] {
        &self.data.bytes()[..self.rows * self.row_bytes]
    }

    pub fn row_data(&self, r: usize) -> &[u8] {
        &self.data.bytes()[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Prepares activations `x` (`n` rows of `cols`) for [`Self::gemm`].
    pub fn prepare(&self, x: &[f32], acts: &mut PreparedActs) {
        self.prepare_at(crate::isa::active(), x, acts);
    }

    /// [`Self::prepare`] at a given ISA level (every level gives the same bits).
    pub fn prepare_at(&self, level: Isa, x: &[f32], acts: &mut PreparedActs) {
        match self.kind.act_format() {
            Some(f) => {
                acts.quant.quantize_at(level, f, x, self.cols);
                acts.float.clear();
            }
            None => {
                acts.float.clear();
                acts.float.extend(x.iter().map(|&v| match self.kind {
                    BlockKind::F16 => f16::from_f32(v).to_f32(),
                    BlockKind::BF16 => bf16::from_f32(v).to_f32(),
                    _ => v,
                }));
                acts.quant.n = x.len() / self.cols;
                acts.quant.k = self.cols;
            }
        }
    }

    /// `out[t * rows + r] = W[r] · x[t]` for activations made by [`Self::prepare`].
    pub fn gemm(&self, pool: &ThreadPool, acts: &PreparedActs, out: &mut [f32]) {
        self.gemm_at(crate::isa::active(), pool, acts, out);
    }

    /// [`Self::gemm`] at a given ISA level, which must not exceed [`Isa::detect`] (tests and
    /// benchmarks compare the levels).
    pub fn gemm_at(&self, isa: Isa, pool: &ThreadPool, acts: &PreparedActs, out: &mut [f32]) {
        assert!(isa <= Isa::detect(), "{} is not available on this CPU", isa.name());
        let n = acts.quant.n;
        assert_eq!(acts.quant.k, self.cols, "activation width does not match the weights");
        assert_eq!(out.len(), n * self.rows);
        let split = LineSplit::new(out.as_ptr(), self.rows, pool.n_threads() * 4, 16);
        let out = SyncOut::new(out);
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Amx
            && let Some(panels) = self.panels.get_or_init(|| amx::Repacked::new(self.kind, self.data.bytes(), self.rows, self.row_bytes).map(Arc::new))
        {
            // Tasks take whole 16-row groups (as if the output started on a cache line): a
            // group split between two tasks would be computed by both.
            let split = LineSplit::new(std::ptr::null(), self.rows, pool.n_threads() * 4, amx::GROUP);
            match &**panels {
                amx::Repacked::Q32(panels) => {
                    let offs = amx::offset_sums(panels.kind(), &acts.quant);
                    // SAFETY: `isa` is at most the detected level (asserted above), and the AMX
                    // level implies AVX-512 VNNI and a process granted AMX-INT8.
                    pool.for_each(split.count(), &|p| unsafe { amx::rows(panels, split.range(p), &acts.quant, &offs, out, self.rows) });
                }
                // SAFETY: as above.
                amx::Repacked::K(panels) => pool.for_each(split.count(), &|p| unsafe { amx::k_rows(panels, split.range(p), &acts.quant, out, self.rows) }),
            }
            return;
        }
        pool.for_each(split.count(), &|p| {
            let rows = split.range(p);
            match isa {
                Isa::Scalar => self.rows_portable(rows, acts, out),
                // SAFETY: `isa` is at most the detected level (asserted above), so the CPU has
                // every feature the level's copy was compiled with.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { self.rows_avx2(rows, acts, out) },
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 | Isa::Amx => unsafe { self.rows_avx512(rows, acts, out) },
                #[cfg(not(target_arch = "x86_64"))]
                _ => self.rows_portable(rows, acts, out),
            }
        });
    }

    /// The scalar twin of `level`'s kernels: the products in exactly the order `level`
    /// computes them (ggml's vec-dot order, except the AMX level's Q4_0/Q4_1/Q8_0/Q4_K/Q6_K:
    /// see `amx`). Tests and the self-check compare each level with its twin.
    pub fn gemm_twin(&self, level: Isa, pool: &ThreadPool, acts: &PreparedActs, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if level == Isa::Amx {
            let mut fill = |dot: &dyn Fn(&[u8], usize) -> f32| {
                assert_eq!(out.len(), acts.quant.n * self.rows);
                for r in 0..self.rows {
                    for t in 0..acts.quant.n {
                        out[t * self.rows + r] = dot(self.row_data(r), t);
                    }
                }
            };
            if let Some(kind) = self.q32() {
                return fill(&|w, t| amx::dot_tile_order(kind, w, &acts.quant, t));
            }
            if let Some(kind) = amx::KQuant::of(self.kind) {
                return fill(&|w, t| amx::dot_k_order(kind, w, &acts.quant, t));
            }
        }
        let _ = level;
        self.gemm_at(Isa::Scalar, pool, acts, out);
    }

    /// The kernel body, written so the compiler vectorizes it; compiled once per ISA level.
    #[inline(always)]
    fn rows_portable(&self, rows: std::ops::Range<usize>, acts: &PreparedActs, out: SyncOut) {
        for r in rows {
            let w = self.row_data(r);
            for t in 0..acts.quant.n {
                out.set(t * self.rows + r, self.dot(w, acts, t));
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn rows_avx2(&self, rows: std::ops::Range<usize>, acts: &PreparedActs, out: SyncOut) {
        use avx2 as k;
        let q = &acts.quant;
        if let Some(kind) = self.q32() {
            // SAFETY: this function runs with AVX2, FMA and F16C enabled; the kernel checks
            // its bounds itself.
            unsafe { k::q32_rows_avx2(kind, self.data.bytes(), self.row_bytes, rows, q, out, self.rows) };
            return;
        }
        if self.kind == BlockKind::Q6K {
            // SAFETY: as above.
            unsafe {
                if q.n == 1 {
                    k::gemv_q6k(self.data.bytes(), self.row_bytes, rows, q, 0, out, self.rows);
                } else {
                    // A batch reads each row once for all its tokens; each output is the
                    // same dot product either way.
                    k::gemm_q6k(self.data.bytes(), self.row_bytes, rows, q, out, self.rows);
                }
            }
            return;
        }
        if self.kind == BlockKind::F16 {
            // SAFETY: as above.
            unsafe { crate::f16_rows::avx2::gemm(self.data.bytes(), self.row_bytes, rows, &acts.float, self.cols, q.n, out, self.rows) };
            return;
        }
        for r in rows {
            let w = self.row_data(r);
            for t in 0..q.n {
                out.set(t * self.rows + r, self.dot(w, acts, t));
            }
        }
    }

    /// AVX-512 CPUs run the 32-wide block types and the K-quants with VNNI (their batches are
    /// bound by arithmetic) and the AVX2 kernels for the rest (with the wider level's code
    /// generation for the portable ones): those dot products are bound by memory, not by
    /// vector width.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn rows_avx512(&self, rows: std::ops::Range<usize>, acts: &PreparedActs, out: SyncOut) {
        if self.kind == BlockKind::F16 {
            // SAFETY: the AVX-512 level implies AVX2, FMA and F16C (see `Isa::detect`).
            unsafe { crate::f16_rows::avx512::gemm(self.data.bytes(), self.row_bytes, rows, &acts.float, self.cols, acts.quant.n, out, self.rows) };
            return;
        }
        match (self.kind, self.q32()) {
            // SAFETY: this function runs with the AVX-512 level's features, all the kernel
            // needs; it checks its bounds itself. (The K-quants' batches are bound by
            // arithmetic, and their AVX-512 kernels also keep up with memory in decode.)
            (BlockKind::Q4K, _) => unsafe { avx512::q4k_rows(self.data.bytes(), self.row_bytes, rows, &acts.quant, out, self.rows) },
            // SAFETY: as above.
            (BlockKind::Q6K, _) => unsafe { avx512::q6k_rows(self.data.bytes(), self.row_bytes, rows, &acts.quant, out, self.rows) },
            // SAFETY: as above.
            (_, Some(kind)) => unsafe { avx512::q32_rows_avx512(kind, self.data.bytes(), self.row_bytes, rows, &acts.quant, out, self.rows) },
            // SAFETY: the AVX-512 level implies AVX2, FMA and F16C (see `Isa::detect`).
            (_, None) => unsafe { self.rows_avx2(rows, acts, out) },
        }
    }

    /// The hand-written kernels' name for this matrix's type, if it is a 32-wide block type.
    #[cfg(target_arch = "x86_64")]
    fn q32(&self) -> Option<avx2::Q32> {
        avx2::Q32::of(self.kind)
    }

    #[inline(always)]
    fn dot(&self, w: &[u8], acts: &PreparedActs, t: usize) -> f32 {
        let k = self.cols;
        match self.kind {
            BlockKind::F32 => dot_f32(w, &acts.float[t * k..(t + 1) * k]),
            BlockKind::F16 => crate::f16_rows::dot_row(w, &acts.float[t * k..(t + 1) * k]),
            BlockKind::BF16 => dot_bf16(w, &acts.float[t * k..(t + 1) * k]),
            BlockKind::Q4_0 => dot_q4_0(w, &acts.quant, t),
            BlockKind::Q4_1 => dot_q4_1(w, &acts.quant, t),
            BlockKind::Q8_0 => dot_q8_0(w, &acts.quant, t),
            BlockKind::Q4K => dot_q4k(w, &acts.quant, t),
            BlockKind::Q6K => dot_q6k(w, &acts.quant, t),
        }
    }
}

/// Activations prepared for a [`BlockMatrix`]: quantized, or rounded floats.
#[derive(Clone, Debug, Default)]
pub struct PreparedActs {
    pub quant: QuantActs,
    pub float: Vec<f32>,
}

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

#[inline(always)]
fn dot_f32(w: &[u8], x: &[f32]) -> f32 {
    let mut acc = 0f64;
    for (c, &v) in w.chunks_exact(4).zip(x) {
        acc += f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * v);
    }
    acc as f32
}

#[inline(always)]
fn dot_bf16(w: &[u8], x: &[f32]) -> f32 {
    let mut acc = 0f64;
    for (c, &v) in w.chunks_exact(2).zip(x) {
        acc += f64::from(bf16::from_le_bytes([c[0], c[1]]).to_f32() * v);
    }
    acc as f32
}

/// ggml's AVX2 float order for 32-wide blocks: each block's products are summed exactly into
/// 8 int32 lanes (lane `l` holds elements `4l..4l + 4`), each lane accumulates
/// `fma(block scale, lane, acc)` across blocks, and [`hsum_float_8`] folds the lanes at the end.
/// The hand-written AVX2 kernels compute exactly this, and matching ggml keeps logits within
/// rounding of llama.cpp's.
#[inline(always)]
fn lanes8(w: &[i16; 32], x: &[i8; 32]) -> [i32; 8] {
    let mut l = [0i32; 8];
    for i in 0..32 {
        l[i / 4] += i32::from(w[i]) * i32::from(x[i]);
    }
    l
}

#[inline(always)]
fn fma_lanes(acc: &mut [f32; 8], d: f32, lanes: [i32; 8]) {
    for (a, v) in acc.iter_mut().zip(lanes) {
        *a = d.mul_add(v as f32, *a);
    }
}

/// ggml's `hsum_float_8`: upper half plus lower half, then pairs, then the last two.
#[inline(always)]
pub(crate) fn hsum_float_8(a: [f32; 8]) -> f32 {
    let t = [a[4] + a[0], a[5] + a[1], a[6] + a[2], a[7] + a[3]];
    (t[0] + t[2]) + (t[1] + t[3])
}

/// 32 nibbles (`qs[j]` low = weight j, high = weight j + 16) minus `offset`.
#[inline(always)]
fn nibbles(qs: &[u8], offset: i16) -> [i16; 32] {
    let mut w = [0i16; 32];
    for j in 0..16 {
        w[j] = i16::from(qs[j] & 0xF) - offset;
        w[j + 16] = i16::from(qs[j] >> 4) - offset;
    }
    w
}

#[inline(always)]
fn dot_q4_0(w: &[u8], a: &QuantActs, t: usize) -> f32 {
    let (q8, d8) = (a.row(t), a.row_d(t));
    let mut acc = [0f32; 8];
    for (b, blk) in w.chunks_exact(18).enumerate() {
        let x: &[i8; 32] = q8[b * 32..b * 32 + 32].try_into().expect("32-value block");
        fma_lanes(&mut acc, f16_at(blk, 0) * d8[b], lanes8(&nibbles(&blk[2..18], 8), x));
    }
    hsum_float_8(acc)
}

#[inline(always)]
fn dot_q4_1(w: &[u8], a: &QuantActs, t: usize) -> f32 {
    let (q8, d8) = (a.row(t), a.row_d(t));
    let per = a.k / 32;
    let s8 = &a.s[t * per..(t + 1) * per];
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for (b, blk) in w.chunks_exact(20).enumerate() {
        summs += f16_at(blk, 2) * s8[b];
        let x: &[i8; 32] = q8[b * 32..b * 32 + 32].try_into().expect("32-value block");
        fma_lanes(&mut acc, f16_at(blk, 0) * d8[b], lanes8(&nibbles(&blk[4..20], 0), x));
    }
    hsum_float_8(acc) + summs
}

#[inline(always)]
fn dot_q8_0(w: &[u8], a: &QuantActs, t: usize) -> f32 {
    let (q8, d8) = (a.row(t), a.row_d(t));
    let mut acc = [0f32; 8];
    for (b, blk) in w.chunks_exact(34).enumerate() {
        let x: &[i8; 32] = q8[b * 32..b * 32 + 32].try_into().expect("32-value block");
        let mut wq = [0i16; 32];
        for (d, &v) in wq.iter_mut().zip(&blk[2..34]) {
            *d = i16::from(v as i8);
        }
        fma_lanes(&mut acc, f16_at(blk, 0) * d8[b], lanes8(&wq, x));
    }
    hsum_float_8(acc)
}

#[inline(always)]
fn dot_q4k(w: &[u8], a: &QuantActs, t: usize) -> f32 {
    let (q8, d8) = (a.row(t), a.row_d(t));
    let per = a.k / 256;
    let bsums = &a.bsums[t * per * 16..(t + 1) * per * 16];
    let mut sum = 0f32;
    for (b, blk) in w.chunks_exact(144).enumerate() {
        let x = &q8[b * 256..b * 256 + 256];
        let scales = &blk[4..16];
        let qs = &blk[16..144];
        let mut acc = 0i32;
        let mut mins = 0i32;
        for j in 0..8 {
            let (sc, m) = q4k_scale_min(j, scales);
            let q = &qs[(j / 2) * 32..(j / 2) * 32 + 32];
            let xs = &x[j * 32..j * 32 + 32];
            let isum: i32 = if j % 2 == 0 { q.iter().zip(xs).map(|(&q, &v)| i32::from(q & 0xF) * i32::from(v)).sum() } else { q.iter().zip(xs).map(|(&q, &v)| i32::from(q >> 4) * i32::from(v)).sum() };
            acc += i32::from(sc) * isum;
            mins += i32::from(m) * (bsums[b * 16 + 2 * j] + bsums[b * 16 + 2 * j + 1]);
        }
        let d = f16_at(blk, 0) * d8[b];
        let dmin = f16_at(blk, 2) * d8[b];
        sum += d * acc as f32 - dmin * mins as f32;
    }
    sum
}

#[inline(always)]
fn q4k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 { (s[j] & 63, s[j + 4] & 63) } else { ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4)) }
}

/// Q6_K in ggml's AVX2 order: per block, 8 exact int32 lanes (lane `l` holds elements
/// `4l..4l + 4` of every 32-element run, times their sub-block scales), then one FMA per lane
/// with the block scale, folded by [`hsum_float_8`] at the end.
#[inline(always)]
fn dot_q6k(w: &[u8], a: &QuantActs, t: usize) -> f32 {
    let (q8, d8) = (a.row(t), a.row_d(t));
    let mut acc = [0f32; 8];
    for (b, blk) in w.chunks_exact(210).enumerate() {
        let x = &q8[b * 256..b * 256 + 256];
        let sc = &blk[192..208];
        let q = q6k_values(blk);
        let mut lanes = [0i32; 8];
        for (i, (&qv, &xv)) in q.iter().zip(x).enumerate() {
            lanes[(i % 32) / 4] += i32::from(sc[i / 16] as i8) * i32::from(qv) * i32::from(xv);
        }
        fma_lanes(&mut acc, d8[b] * f16_at(blk, 208), lanes);
    }
    hsum_float_8(acc)
}

/// The 256 values (`q - 32`) of a Q6_K block in element order.
#[inline(always)]
fn q6k_values(blk: &[u8]) -> [i8; 256] {
    let (ql, qh) = (&blk[0..128], &blk[128..192]);
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KINDS: [BlockKind; 8] = [BlockKind::F32, BlockKind::F16, BlockKind::BF16, BlockKind::Q4_0, BlockKind::Q4_1, BlockKind::Q8_0, BlockKind::Q4K, BlockKind::Q6K];

    /// A `rows x blocks` matrix of `kind` (16 columns per block for the float kinds) filled
    /// from `seed`: random bytes with every f16 scale slot made finite and small (of either
    /// sign), or floats in -1..1.
    pub(super) fn random_matrix(kind: BlockKind, rows: usize, blocks: usize, seed: u64) -> BlockMatrix {
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let cols = blocks * if kind.block_len() == 1 { 16 } else { kind.block_len() };
        let row_bytes = cols / kind.block_len() * kind.block_bytes();
        let mut data: Vec<u8> = (0..rows * row_bytes).map(|_| next() as u8).collect();
        if !matches!(kind, BlockKind::F32 | BlockKind::F16 | BlockKind::BF16) {
            let scale_at: &[usize] = match kind {
                BlockKind::Q4_1 | BlockKind::Q4K => &[0, 2],
                BlockKind::Q6K => &[208],
                _ => &[0],
            };
            for blk in data.chunks_exact_mut(kind.block_bytes()) {
                for &at in scale_at {
                    blk[at..at + 2].copy_from_slice(&f16::from_f32((next() % 200) as f32 / 1000.0 - 0.1).to_le_bytes());
                }
            }
        } else {
            let w = if kind == BlockKind::F32 { 4 } else { 2 };
            for (i, c) in data.chunks_exact_mut(w).enumerate() {
                let v = (((i as u64 * 2654435761) ^ seed) % 200) as f32 / 100.0 - 1.0;
                match kind {
                    BlockKind::F32 => c.copy_from_slice(&v.to_le_bytes()),
                    BlockKind::F16 => c.copy_from_slice(&f16::from_f32(v).to_le_bytes()),
                    _ => c.copy_from_slice(&bf16::from_f32(v).to_le_bytes()),
                }
            }
        }
        BlockMatrix::new(kind, rows, cols, WeightBytes::from_vec(data)).unwrap()
    }

    /// `n` rows of `cols` activations in -10..10 from `seed`.
    fn random_acts(n: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n * cols)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 2001) as f32 / 100.0 - 10.0
            })
            .collect()
    }

    /// The bits of `out`: `==` on floats would take -0 for 0 and fail on equal NaNs.
    fn bits(out: &[f32]) -> Vec<u32> {
        out.iter().map(|v| v.to_bits()).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Every ISA level's copy of the kernel gives bit-identical results to its scalar
        /// twin: integer sums are exact and float sums keep their order. Rows and tokens reach
        /// past the kernels' row tiles, token groups and token chunks, with ragged tails.
        #[test]
        fn isa_levels_agree_exactly(
            kind in prop::sample::select(KINDS.to_vec()),
            rows in 1usize..40,
            blocks in 1usize..5,
            n in prop_oneof![1usize..20, 20usize..72],
            seed in any::<u64>(),
        ) {
            let m = random_matrix(kind, rows, blocks, seed);
            let mut acts = PreparedActs::default();
            m.prepare(&random_acts(n, m.cols(), seed), &mut acts);
            let pool = ThreadPool::new(2);
            for level in Isa::available() {
                let mut reference = vec![0f32; n * rows];
                m.gemm_twin(level, &pool, &acts, &mut reference);
                let mut out = vec![0f32; n * rows];
                m.gemm_at(level, &pool, &acts, &mut out);
                prop_assert_eq!(bits(&out), bits(&reference), "{} differs from its scalar twin for {:?}", level.name(), kind);
            }
        }

        /// A token's outputs do not depend on the tokens it is computed with, at any level:
        /// lossless speculative decoding and continuous batching rely on a k-token step
        /// giving each token exactly what a step of that token alone gives.
        #[test]
        fn a_tokens_outputs_do_not_depend_on_its_batch(
            kind in prop::sample::select(KINDS.to_vec()),
            rows in 1usize..40,
            blocks in 1usize..5,
            k in 1usize..=20,
            seed in any::<u64>(),
        ) {
            let m = random_matrix(kind, rows, blocks, seed);
            let x = random_acts(k, m.cols(), seed);
            let pool = ThreadPool::new(2);
            for level in Isa::available() {
                let mut acts = PreparedActs::default();
                m.prepare(&x, &mut acts);
                let mut batch = vec![0f32; k * rows];
                m.gemm_at(level, &pool, &acts, &mut batch);
                for t in 0..k {
                    m.prepare(&x[t * m.cols()..(t + 1) * m.cols()], &mut acts);
                    let mut one = vec![0f32; rows];
                    m.gemm_at(level, &pool, &acts, &mut one);
                    prop_assert_eq!(bits(&one), bits(&batch[t * rows..(t + 1) * rows]), "{}: token {} of {} differs alone for {:?}", level.name(), t, k, kind);
                }
            }
        }
    }

    /// The K-quants at every level against their twins on shapes that reach the AMX level's
    /// edges: ragged row groups, token tiles (16) and tile pairs (32), several 256-blocks,
    /// and every decode width below the tile threshold.
    #[test]
    fn k_quants_agree_with_their_twins_at_tile_edges() {
        let pool = ThreadPool::new(2);
        for (i, kind) in [BlockKind::Q4K, BlockKind::Q6K].into_iter().enumerate() {
            for (rows, blocks, n) in [(17, 3, 1), (33, 2, 2), (31, 1, 3), (16, 2, 4), (47, 3, 5), (16, 2, 16), (49, 2, 17), (35, 3, 33), (18, 4, 48), (64, 2, 72)] {
                let seed = (i * 1000 + rows * 31 + n) as u64;
                let m = random_matrix(kind, rows, blocks, seed);
                let mut acts = PreparedActs::default();
                m.prepare(&random_acts(n, m.cols(), seed), &mut acts);
                for level in Isa::available() {
                    let mut reference = vec![0f32; n * rows];
                    m.gemm_twin(level, &pool, &acts, &mut reference);
                    let mut out = vec![0f32; n * rows];
                    m.gemm_at(level, &pool, &acts, &mut out);
                    assert_eq!(bits(&out), bits(&reference), "{} differs from its twin for {kind:?} {rows}x{blocks} n={n}", level.name());
                }
            }
        }
    }

    /// Dequantizes by brute force: dot with unit activations is impossible through int8, so
    /// compare against f32 math on the dequantized block with the same quantized activations.
    fn check(kind: BlockKind, block: Vec<u8>, deq: &[f32]) {
        let cols = kind.block_len();
        let m = BlockMatrix::new(kind, 1, cols, WeightBytes::from_vec(block)).unwrap();
        let x: Vec<f32> = (0..cols).map(|i| ((i * 37 % 17) as f32 - 8.0) / 3.0).collect();
        let mut acts = PreparedActs::default();
        m.prepare(&x, &mut acts);
        let mut out = [0f32];
        m.gemm(&ThreadPool::new(1), &acts, &mut out);
        let xq: Vec<f32> = (0..cols).map(|i| f32::from(acts.quant.q[i]) * acts.quant.d[i / acts.quant.block_len]).collect();
        let want: f32 = deq.iter().zip(&xq).map(|(a, b)| a * b).sum();
        assert!((out[0] - want).abs() < 1e-2 * want.abs().max(1.0), "{kind:?}: {} vs {want}", out[0]);
    }

    #[test]
    fn q4_1_against_dequantized_math() {
        let mut b = vec![0u8; 20];
        b[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b[2..4].copy_from_slice(&f16::from_f32(-2.0).to_le_bytes());
        for j in 0..16 {
            b[4 + j] = (j as u8) | ((15 - j as u8) << 4);
        }
        let deq: Vec<f32> = (0..32).map(|i| if i < 16 { i as f32 * 0.5 - 2.0 } else { (31 - i) as f32 * 0.5 - 2.0 }).collect();
        check(BlockKind::Q4_1, b, &deq);
    }

    #[test]
    fn q6k_against_dequantized_math() {
        let mut b = vec![0u8; 210];
        for (i, v) in b.iter_mut().enumerate().take(208) {
            *v = (i * 97 % 251) as u8;
        }
        b[208..210].copy_from_slice(&f16::from_f32(0.01).to_le_bytes());
        // Reference dequantization written from the layout, independent of the kernel.
        let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
        let mut deq = vec![0f32; 256];
        for n in 0..2 {
            for l in 0..32 {
                let is = l / 16;
                let g = |v: u8| f32::from(v as i8 - 32);
                let q1 = g((ql[n * 64 + l] & 0xF) | ((qh[n * 32 + l] & 3) << 4));
                let q2 = g((ql[n * 64 + l + 32] & 0xF) | (((qh[n * 32 + l] >> 2) & 3) << 4));
                let q3 = g((ql[n * 64 + l] >> 4) | (((qh[n * 32 + l] >> 4) & 3) << 4));
                let q4 = g((ql[n * 64 + l + 32] >> 4) | (((qh[n * 32 + l] >> 6) & 3) << 4));
                let s = |i: usize| 0.01f32 * f32::from(sc[n * 8 + i] as i8);
                deq[n * 128 + l] = s(is) * q1;
                deq[n * 128 + l + 32] = s(is + 2) * q2;
                deq[n * 128 + l + 64] = s(is + 4) * q3;
                deq[n * 128 + l + 96] = s(is + 6) * q4;
            }
        }
        check(BlockKind::Q6K, b, &deq);
    }
}
