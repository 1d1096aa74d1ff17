//! Ternary weights in the kernel's packed layout and their product with per-token int8
//! activations (BitLinear): `y = (Σ q·t) · scale / s`, with exact int32 sums per scale block.
//!
//! Layout: rows one after another, `cols / 4` bytes each. The first `kc = cols - cols % 128`
//! trits of a row are in groups of 128 in 32 bytes, byte `j` holding trits `j`, `j + 32`,
//! `j + 64`, `j + 96` at bit shifts 0, 2, 4, 6: one shift and one mask give 32 trits in
//! activation order, so SIMD kernels never shuffle. A ragged tail (`cols % 128`) is stored
//! 4 trits per byte in order. Each trit is stored as the code `t + 1` in {0, 1, 2}: the
//! kernels multiply unsigned codes by signed activations (`maddubs`/`vpdpbusd`) and subtract
//! the activations' group sums ([`QuantActs::bsums`]) once per block.
//!
//! Decode (one token) streams the packed rows through [`Kernels::gemv_raw`], unpacking in
//! registers. A few tokens (a short batch of decoding sequences, a speculative verification
//! step: up to [`BATCH_MAX_TOKENS`]) stream the packed rows the same way, once for all of
//! them ([`Kernels::gemv_batch_raw`]): the weights are read from memory and unpacked once per
//! step, however many tokens it carries. Prefill (more tokens) either reads the 2-bit rows directly,
//! unpacking each group in registers once for a tile of tokens ([`Kernels::gemm_packed_raw`],
//! AVX2), or unpacks a tile of rows once into codes and reuses it for every token
//! ([`Kernels::gemm_raw`]: the scalar reference, AVX-512 and the 1.6-bit layout). The scalar
//! level is the reference the others are tested against.
//!
//! Every path computes a token's integer sums exactly and turns them into outputs with the
//! same float operations in the same order, so a token's outputs are bit-identical whatever
//! path and batch size compute them: greedy speculative verification and continuous batching
//! rely on it.

/// Calls `$tile::<R, T>(args...)` for a register tile of `$nr` rows (1 or 2) by `$nt` tokens
/// (1 to 4), the shapes [`for_each_tile`] produces; each ISA level passes its own tile.
macro_rules! dispatch_tile {
    ($tile:ident, $nr:expr, $nt:expr, $($arg:expr),*) => {
        match ($nr, $nt) {
            (2, 4) => $tile::<2, 4>($($arg),*),
            (2, 3) => $tile::<2, 3>($($arg),*),
            (2, 2) => $tile::<2, 2>($($arg),*),
            (2, _) => $tile::<2, 1>($($arg),*),
            (_, 4) => $tile::<1, 4>($($arg),*),
            (_, 3) => $tile::<1, 3>($($arg),*),
            (_, 2) => $tile::<1, 2>($($arg),*),
            (_, _) => $tile::<1, 1>($($arg),*),
        }
    };
}

/// Calls `$kernel::<R, T>(args...)` for a register pass of `$r` rows over `$nt` tokens (1 to
/// [`BATCH_PASS_TOKENS`]), the batch kernels' token groups.
macro_rules! dispatch_tokens {
    ($kernel:ident, $r:literal, $nt:expr, $($arg:expr),*) => {
        match $nt {
            8 => $kernel::<$r, 8>($($arg),*),
            7 => $kernel::<$r, 7>($($arg),*),
            6 => $kernel::<$r, 6>($($arg),*),
            5 => $kernel::<$r, 5>($($arg),*),
            4 => $kernel::<$r, 4>($($arg),*),
            3 => $kernel::<$r, 3>($($arg),*),
            2 => $kernel::<$r, 2>($($arg),*),
            _ => $kernel::<$r, 1>($($arg),*),
        }
    };
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod scalar;

use std::cell::RefCell;

use crate::act_quant::{ActFormat, PER_TOKEN_GROUP, QuantActs};
use crate::aligned::AlignedBytes;
use crate::huge_buf::HugeBuf;
use crate::isa::{self, Isa};
use crate::pool::{LineSplit, ThreadPool, split_range};
use crate::sync_out::SyncOut;

/// Trits per interleaved group (32 bytes).
pub const GROUP: usize = 128;
/// Trits per group of the 1.6-bit layout (32 bytes, 5 trits per byte).
pub const GROUP16: usize = 160;

/// How a [`TernaryMatrix`] stores its trits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TernaryLayout {
    /// 2 bits per trit, groups of 128 (see the module docs). Fastest to unpack.
    #[default]
    Bits2,
    /// 1.6 bits per trit: groups of 160 trits in 32 bytes, byte `j` holding trits `j + 32n`
    /// (n = 0..5) as base-3 digits scaled into the byte the way TQ1_0 stores them, so digit
    /// `n` is `((byte · 3^n) mod 256 · 3) >> 8`. Decode reads 20% fewer bytes and does about
    /// twice the arithmetic; it pays where memory, not arithmetic, limits decode. Only for
    /// matrices with one scale; a ragged tail (`cols % 160`) stays 2-bit.
    Bits1_6,
}
/// Rows a prefill task reads at once: 16 outputs fill a 64-byte cache line, and tasks start on
/// the output's lines ([`LineSplit`]), so no two threads write one line (a tile of 8 was
/// measured much slower from that false sharing, as were 16-row tiles across lines).
const GEMM_ROW_TILE: usize = 16;
/// Fewer tokens than this go through the 1.6-bit decode kernel, token by token.
const GEMM_MIN_TOKENS: usize = 4;
/// Up to this many tokens stream the packed rows once for all of them
/// ([`Kernels::gemv_batch_raw`]); more go through the prefill tiles. Measured at AVX-512 on
/// 2B-4T shapes (one thread): the batch kernel takes 0.55x the time of the tiles over unpacked
/// codes at 8 tokens, 0.75x at 64, and breaks even at 128, which stays with the tiles.
const BATCH_MAX_TOKENS: usize = 64;
/// Tokens a batch kernel carries in registers at once; more take further passes over the row
/// while it is in L1.
pub(crate) const BATCH_PASS_TOKENS: usize = 8;

#[derive(Clone, Debug)]
pub struct TernaryMatrix {
    rows: usize,
    cols: usize,
    packed: HugeBuf,
    /// Elements per scale block within a row (`cols` when one scale covers the row).
    block_len: usize,
    /// `rows * cols / block_len` scales, or one when the whole tensor shares a scale.
    scales: Vec<f32>,
    layout: TernaryLayout,
}

/// Why packed parts do not make a matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError(pub String);

impl std::fmt::Display for ShapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ShapeError {}

/// The raw-sum kernels of one ISA level. `raw` receives `Σ code·x` per row (and token) and
/// per scale block over the first `kc` columns; `block` divides `kc` and is a multiple of
/// [`GROUP`].
pub(crate) trait Kernels {
    /// `raw[r * nb + b]` for `n_rows` packed rows starting at `w`, one token `x`.
    fn gemv_raw(w: &[u8], row_bytes: usize, n_rows: usize, kc: usize, block: usize, x: &[i8], raw: &mut [i32]);
    /// The 1.6-bit layout's decode: `raw[r]` = `Σ code·x` over the first `kc16` columns
    /// (whole groups of [`GROUP16`]) of `n_rows` rows, one token.
    fn gemv16_raw(w: &[u8], row_bytes: usize, n_rows: usize, kc16: usize, x: &[i8], raw: &mut [i32]);
    /// A few tokens at once: `raw[(t * n_rows + r) * nb + b]` for `n_rows` rows in the 2-bit
    /// layout (`row_bytes` apart) and `n_tok` tokens (`ldx` apart), streaming each row once
    /// and applying every group to all the tokens while it is in registers.
    #[allow(clippy::too_many_arguments)]
    fn gemv_batch_raw(w: &[u8], row_bytes: usize, n_rows: usize, xs: &[i8], ldx: usize, n_tok: usize, kc: usize, block: usize, raw: &mut [i32]);
    /// `raw[(t * n_rows + r) * nb + b]` for `n_rows` rows of unpacked codes (`ld` apart) and
    /// `n_tok` tokens (`ldx` apart).
    #[allow(clippy::too_many_arguments)]
    fn gemm_raw(codes: &[u8], ld: usize, n_rows: usize, xs: &[i8], ldx: usize, n_tok: usize, kc: usize, block: usize, raw: &mut [i32]);

    /// Unpacks one 2-bit row into codes ([`TernaryMatrix::unpack_codes`]), compiled for this
    /// level's vectors (prefill unpacks every row once per call).
    fn unpack_codes(row: &[u8], cols: usize, codes: &mut [u8]) {
        TernaryMatrix::unpack_codes(row, cols, codes);
    }

    /// Whether prefill at this level reads 2-bit rows straight through
    /// [`Self::gemm_packed_raw`] rather than unpacking them into codes for [`Self::gemm_raw`].
    const PACKED_GEMM: bool = false;
    /// As [`Self::gemm_raw`], from `n_rows` rows in the 2-bit layout (`row_bytes` apart).
    /// The default is the scalar reference.
    #[allow(clippy::too_many_arguments)]
    fn gemm_packed_raw(w: &[u8], row_bytes: usize, n_rows: usize, xs: &[i8], ldx: usize, n_tok: usize, kc: usize, block: usize, raw: &mut [i32]) {
        let nb = kc / block;
        let mut one = vec![0i32; n_rows * nb];
        for t in 0..n_tok {
            scalar::Scalar::gemv_raw(w, row_bytes, n_rows, kc, block, &xs[t * ldx..], &mut one);
            raw[t * n_rows * nb..(t + 1) * n_rows * nb].copy_from_slice(&one);
        }
    }
}

thread_local! {
    /// Per-thread prefill scratch (unpacked codes, raw sums); pool threads live as long as
    /// the pool, so this is allocated once per thread, not per call.
    static SCRATCH: RefCell<(AlignedBytes, Vec<i32>)> = const { RefCell::new((AlignedBytes::new(), Vec::new())) };
    /// The caller's cache-line-aligned copy of a prefill batch's activations.
    static ACTS: RefCell<AlignedBytes> = const { RefCell::new(AlignedBytes::new()) };
    /// The caller's copy of a prefill batch's activations in AMX tile order.
    static AMX_ACTS: std::cell::Cell<AlignedBytes> = const { std::cell::Cell::new(AlignedBytes::new()) };
}

impl TernaryMatrix {
    /// Bytes one packed row of `cols` trits takes.
    pub fn packed_row_bytes(cols: usize) -> usize {
        cols.div_ceil(4)
    }

    /// Packs one row of trits (each in {-1, 0, 1}) into `out` in the kernel layout.
    pub fn pack_row(trits: &[i8], out: &mut [u8]) {
        out.fill(0);
        let kc = trits.len() / GROUP * GROUP;
        for (i, &t) in trits.iter().enumerate() {
            debug_assert!((-1..=1).contains(&t));
            let code = (t + 1) as u8 & 3;
            if i < kc {
                let (g, j) = (i / GROUP, i % GROUP);
                out[g * 32 + j % 32] |= code << (2 * (j / 32));
            } else {
                let k = i - kc;
                out[kc / 4 + k / 4] |= code << (2 * (k % 4));
            }
        }
    }

    /// Copies one group (128 trits) that is already grouped our way, byte `j` holding trits
    /// `j + 32·s` as codes: at shift `2s` (TQ2_0's order) or, with `reversed`, at shift
    /// `6 - 2s` (I2_S's order). Fails on the invalid code 3. This is the fast path that
    /// makes loading a multi-gigabyte file a memory copy rather than a per-trit loop.
    pub fn pack_group(src: &[u8], reversed: bool, out: &mut [u8]) -> Result<(), ShapeError> {
        let (src, out) = (&src[..32], &mut out[..32]);
        let mut bad = 0u8;
        for (o, &b) in out.iter_mut().zip(src) {
            bad |= b & (b >> 1) & 0x55;
            *o = if reversed { ((b & 0x03) << 6) | ((b & 0x0C) << 2) | ((b & 0x30) >> 2) | ((b & 0xC0) >> 6) } else { b };
        }
        if bad != 0 {
            return Err(ShapeError("a group holds the invalid 2-bit code 3 (ternary codes are 0, 1, 2)".into()));
        }
        Ok(())
    }

    /// Codes (`t + 1`) of row bytes `row`, in column order, into `codes`.
    #[inline(always)]
    fn unpack_codes(row: &[u8], cols: usize, codes: &mut [u8]) {
        let kc = cols / GROUP * GROUP;
        for (bytes, out) in row[..kc / 4].chunks_exact(32).zip(codes[..kc].chunks_exact_mut(GROUP)) {
            for (s, part) in out.chunks_exact_mut(32).enumerate() {
                for (o, &b) in part.iter_mut().zip(bytes) {
                    *o = (b >> (2 * s)) & 3;
                }
            }
        }
        for k in 0..cols - kc {
            codes[kc + k] = (row[kc / 4 + k / 4] >> (2 * (k % 4))) & 3;
        }
    }

    /// Assembles a matrix from rows packed with [`Self::pack_row`]. `scales` holds either one
    /// scale for the whole tensor or `cols / block_len` per row.
    pub fn from_parts(rows: usize, cols: usize, packed: impl Into<HugeBuf>, block_len: usize, scales: Vec<f32>) -> Result<Self, ShapeError> {
        let packed: HugeBuf = packed.into();
        if rows == 0 || cols == 0 || !cols.is_multiple_of(4) {
            return Err(ShapeError(format!("ternary matrix {rows}x{cols}: columns must be a positive multiple of 4")));
        }
        if block_len == 0 || !cols.is_multiple_of(block_len) {
            return Err(ShapeError(format!("scale block {block_len} does not divide {cols} columns")));
        }
        if packed.len() != rows * Self::packed_row_bytes(cols) {
            return Err(ShapeError(format!("packed data is {} bytes, expected {}", packed.len(), rows * cols / 4)));
        }
        let per_row = rows * (cols / block_len);
        if scales.len() != 1 && scales.len() != per_row {
            return Err(ShapeError(format!("{} scales for {per_row} blocks", scales.len())));
        }
        if scales.iter().any(|s| !s.is_finite()) {
            return Err(ShapeError("a weight scale is not finite".into()));
        }
        // One shared scale needs no per-block partial sums.
        let (block_len, scales) = if scales.windows(2).all(|w| w[0] == w[1]) { (cols, vec![scales[0]]) } else { (block_len, scales) };
        Ok(Self { rows, cols, packed, block_len, scales, layout: TernaryLayout::Bits2 })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes the kernel reads per full pass over the weights.
    pub fn bytes(&self) -> usize {
        self.packed.len() + self.scales.len() * 4
    }

    pub const ACT_FORMAT: ActFormat = ActFormat::PerToken;

    fn row_bytes(&self) -> usize {
        match self.layout {
            TernaryLayout::Bits2 => Self::packed_row_bytes(self.cols),
            TernaryLayout::Bits1_6 => {
                let kc16 = self.cols / GROUP16 * GROUP16;
                kc16 / 5 + (self.cols - kc16) / 4
            }
        }
    }

    pub fn layout(&self) -> TernaryLayout {
        self.layout
    }

    /// The rows as [`Self::from_parts`] takes them (packed rows, scale block length, scales),
    /// for uploading to another device; `None` in the 1.6-bit layout.
    pub fn parts(&self) -> Option<(&[u8], usize, &[f32])> {
        (self.layout == TernaryLayout::Bits2).then(|| (&self.packed[..], self.block_len, &self.scales[..]))
    }

    /// Codes of row `r` in column order, whatever the layout.
    fn row_codes(&self, r: usize, codes: &mut [u8]) {
        let rb = self.row_bytes();
        let row = &self.packed[r * rb..(r + 1) * rb];
        match self.layout {
            TernaryLayout::Bits2 => Self::unpack_codes(row, self.cols, codes),
            TernaryLayout::Bits1_6 => {
                let kc16 = self.cols / GROUP16 * GROUP16;
                for (bytes, out) in row[..kc16 / 5].chunks_exact(32).zip(codes[..kc16].chunks_exact_mut(GROUP16)) {
                    for (j, &b) in bytes.iter().enumerate() {
                        for n in 0..5 {
                            out[32 * n + j] = trit16(b, n);
                        }
                    }
                }
                for k in 0..self.cols - kc16 {
                    codes[kc16 + k] = (row[kc16 / 5 + k / 4] >> (2 * (k % 4))) & 3;
                }
            }
        }
    }

    /// Unpacks row `r` into `trits`.
    pub fn unpack_row(&self, r: usize, trits: &mut [i8]) {
        let mut codes = vec![0u8; self.cols];
        self.row_codes(r, &mut codes);
        for (t, c) in trits.iter_mut().zip(codes) {
            *t = c as i8 - 1;
        }
    }

    /// The same matrix in `layout`, repacked in parallel; `None` when the layout does not
    /// apply (the 1.6-bit layout needs one scale for the whole matrix).
    pub fn relayout(&self, pool: &ThreadPool, layout: TernaryLayout) -> Option<Self> {
        if layout == self.layout {
            return Some(self.clone());
        }
        if layout == TernaryLayout::Bits1_6 && self.scales.len() != 1 {
            return None;
        }
        let mut m = Self { packed: HugeBuf::zeroed(0), layout, ..self.clone_meta() };
        let rb = m.row_bytes();
        let mut packed = HugeBuf::zeroed(self.rows * rb);
        let rows_per_task = 64;
        pool.for_each_chunk_mut(&mut packed, rows_per_task * rb, &|task, out| {
            let mut codes = vec![0u8; self.cols];
            for (i, dst) in out.chunks_exact_mut(rb).enumerate() {
                self.row_codes(task * rows_per_task + i, &mut codes);
                pack_codes(layout, &codes, dst);
            }
        });
        m.packed = packed;
        Some(m)
    }

    fn clone_meta(&self) -> Self {
        Self { rows: self.rows, cols: self.cols, packed: HugeBuf::zeroed(0), block_len: self.block_len, scales: self.scales.clone(), layout: self.layout }
    }

    /// How the SIMD kernels see the row: the grouped part's length and its scale blocks.
    /// `None` when per-block scales do not fall on group boundaries (only the scalar path
    /// handles those).
    fn simd_split(&self) -> Option<(usize, usize)> {
        let kc = self.cols / GROUP * GROUP;
        if self.scales.len() == 1 {
            Some((kc, kc.max(GROUP)))
        } else if self.block_len.is_multiple_of(GROUP) {
            Some((kc, self.block_len))
        } else {
            None
        }
    }

    /// `out[t * rows + r] = Σ_i W[r, i] · x[t, i]` for every token row `t` of `acts`, which
    /// must be quantized per token. Runs at the active ISA level.
    pub fn gemm(&self, pool: &ThreadPool, acts: &QuantActs, out: &mut [f32]) {
        self.gemm_at(isa::active(), pool, acts, out);
    }

    /// [`Self::gemm`] at a given ISA level, which must not exceed the CPU's (tests compare
    /// levels).
    pub fn gemm_at(&self, level: Isa, pool: &ThreadPool, acts: &QuantActs, out: &mut [f32]) {
        assert!(level <= Isa::detect(), "ISA level {level:?} is beyond this CPU");
        assert_eq!(acts.k, self.cols, "activation width does not match the weights");
        assert_eq!(acts.block_len, self.cols, "ternary kernels take per-token activations");
        assert_eq!(out.len(), acts.n * self.rows);
        match (level, self.simd_split()) {
            #[cfg(target_arch = "x86_64")]
            (Isa::Amx, Some(split)) => self.run::<avx512::Avx512>(pool, acts, out, split, true),
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx512, Some(split)) => self.run::<avx512::Avx512>(pool, acts, out, split, false),
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx2, Some(split)) => self.run::<avx2::Avx2>(pool, acts, out, split, false),
            (_, Some(split)) => self.run::<scalar::Scalar>(pool, acts, out, split, false),
            (_, None) => self.run_unaligned(pool, acts, out),
        }
    }

    /// Token `t`'s activation sum over scale block `b` (of `nb`): what the raw sums over codes
    /// `t + 1` hold beyond `Σ t·q`.
    #[inline]
    fn block_xsum(&self, acts: &QuantActs, t: usize, b: usize, nb: usize, kc: usize, block: usize) -> i32 {
        if nb == 1 && kc == self.cols {
            return acts.tsum[t];
        }
        let groups = self.cols.div_ceil(PER_TOKEN_GROUP);
        let gpb = block / GROUP;
        acts.bsums[t * groups + b * gpb..t * groups + (b + 1) * gpb].iter().sum()
    }

    /// Token `t`'s activation sum over the ragged column tail (from column `kc < cols`).
    #[inline]
    fn tail_xsum(&self, acts: &QuantActs, t: usize, kc: usize) -> i32 {
        acts.bsums[t * self.cols.div_ceil(PER_TOKEN_GROUP) + kc / GROUP]
    }

    /// Combines a row's raw sums into its output: subtract the token's activation sums per
    /// block (`xs`, codes are `t + 1`), add the ragged tail's (`tail`: its dot product less its
    /// activations' sum, 0 without one) to the last block, scale per block, divide by the
    /// token's multiplier.
    #[inline]
    fn finish(&self, r: usize, raw: &[i32], xs: &[i32], tail: i32, inv: f32) -> f32 {
        let mut y = 0f32;
        let nb = raw.len();
        for (b, (&rs, &x)) in raw.iter().zip(xs).enumerate() {
            let mut isum = rs - x;
            if b + 1 == nb {
                isum += tail;
            }
            let scale = if self.scales.len() == 1 { self.scales[0] } else { self.scales[r * nb + b] };
            y += isum as f32 * scale;
        }
        if nb == 0 {
            // Narrower than one group: the whole row is tail.
            y = tail as f32 * self.scales[0];
        }
        y / inv
    }

    /// Writes the outputs of rows `r0..r0 + n_rows` for every token from their raw sums
    /// (`raw[(t * n_rows + i) * nb + b]`) and ragged-tail sums (`tail(i, t)`). Every path
    /// ends here (the AMX tiles' epilogue repeats its float steps), so a token's outputs come
    /// from the same float operations whatever path and batch computed its (exact) integer
    /// sums.
    #[allow(clippy::too_many_arguments)]
    fn store(&self, out: SyncOut, acts: &QuantActs, r0: usize, n_rows: usize, raw: &[i32], nb: usize, kc: usize, block: usize, tail: impl Fn(usize, usize) -> i32) {
        if nb == 1 && kc == self.cols && self.scales.len() == 1 {
            // The common case (one scale, no ragged tail), without the general bookkeeping of
            // `finish` (same arithmetic).
            let scale = self.scales[0];
            for t in 0..acts.n {
                let (xsum, inv) = (acts.tsum[t], acts.inv[t]);
                let raw = &raw[t * n_rows..(t + 1) * n_rows];
                out.fill(t * self.rows + r0, n_rows, |i| (raw[i] - xsum) as f32 * scale / inv);
            }
            return;
        }
        let mut xs = Vec::with_capacity(nb);
        for t in 0..acts.n {
            // A token's block sums once for all its rows, not per output (summing them per
            // output took a third of per-block-scaled prefill at the avx512 level).
            xs.clear();
            xs.extend((0..nb).map(|b| self.block_xsum(acts, t, b, nb, kc, block)));
            let tail_x = if kc < self.cols { Some(self.tail_xsum(acts, t, kc)) } else { None };
            for i in 0..n_rows {
                let at = (t * n_rows + i) * nb;
                let tail = tail_x.map_or(0, |x| tail(i, t) - x);
                out.set(t * self.rows + r0 + i, self.finish(r0 + i, &raw[at..at + nb], &xs, tail, acts.inv[t]));
            }
        }
    }

    /// The AMX epilogue's per-token constants for a product: each token's activation sum
    /// over each scale block (`[token tile][block][token]`, as [`Self::finish`] takes them)
    /// and its multiplier, padded to whole pairs of token tiles (zero sums, unit multipliers).
    #[cfg(target_arch = "x86_64")]
    fn amx_token_sums(&self, acts: &QuantActs, kc: usize, block: usize) -> (Vec<i32>, Vec<f32>) {
        let (n, nb) = (acts.n, kc / block);
        let tiles = n.div_ceil(amx::TILE).next_multiple_of(2);
        let mut xsum = vec![0i32; tiles * nb * amx::TILE];
        for t in 0..n {
            for b in 0..nb {
                xsum[((t / amx::TILE) * nb + b) * amx::TILE + t % amx::TILE] = self.block_xsum(acts, t, b, nb, kc, block);
            }
        }
        let mut inv = vec![1f32; tiles * amx::TILE];
        inv[..n].copy_from_slice(&acts.inv[..n]);
        (xsum, inv)
    }

    /// The AMX epilogue's ragged-tail terms for a task's `n_rows` rows (`[token tile][row]
    /// [token]`), as [`Self::finish`] adds them to the last block; empty without a tail.
    #[cfg(target_arch = "x86_64")]
    fn amx_tail_sums(&self, acts: &QuantActs, n_rows: usize, kc: usize, tail: &impl Fn(usize, usize) -> i32) -> Vec<i32> {
        if kc == self.cols {
            return Vec::new();
        }
        let tiles = acts.n.div_ceil(amx::TILE).next_multiple_of(2);
        let mut extra = vec![0i32; tiles * amx::ROWS * amx::TILE];
        for t in 0..acts.n {
            let tail_x = self.tail_xsum(acts, t, kc);
            for i in 0..n_rows {
                extra[((t / amx::TILE) * amx::ROWS + i) * amx::TILE + t % amx::TILE] = tail(i, t) - tail_x;
            }
        }
        extra
    }

    /// The kernels of `K`; with `amx`, prefill's tiles of unpacked codes are multiplied on
    /// AMX tiles instead of `K::gemm_raw` (the same exact sums).
    fn run<K: Kernels>(&self, pool: &ThreadPool, acts: &QuantActs, out: &mut [f32], (kc, block): (usize, usize), amx: bool) {
        let n = acts.n;
        if n < GEMM_MIN_TOKENS && self.layout == TernaryLayout::Bits1_6 {
            self.decode16::<K>(pool, acts, out);
            return;
        }
        let nb = if kc == 0 { 0 } else { kc / block };
        let rb = self.row_bytes();
        let first_out = out.as_ptr();
        let out = SyncOut::new(out);
        // Decode and short batches: rows stream once, split among threads in runs of output
        // lines.
        let decode_split = || LineSplit::new(first_out, self.rows, pool.n_threads() * 16, 16);
        let packed_tail = |w: &[u8], i: usize, t: usize| scalar::tail_dot(&w[i * rb + kc / 4..(i + 1) * rb], &acts.row(t)[kc..]);
        if n == 1 {
            let split = decode_split();
            pool.for_each(split.count(), &|p| {
                let range = split.range(p);
                if range.is_empty() {
                    return;
                }
                SCRATCH.with_borrow_mut(|(_, raw)| {
                    raw.resize(range.len() * nb, 0);
                    let w = &self.packed[range.start * rb..range.end * rb];
                    K::gemv_raw(w, rb, range.len(), kc, block, acts.row(0), raw);
                    self.store(out, acts, range.start, range.len(), raw, nb, kc, block, |i, t| packed_tail(w, i, t));
                });
            });
            return;
        }
        // Rows of codes and of activations start on cache lines, so no vector load splits.
        let ld = self.cols.next_multiple_of(64);
        ACTS.with_borrow_mut(|xa| {
            xa.resize(n * ld);
            for (t, dst) in xa.as_mut_slice().chunks_exact_mut(ld).enumerate() {
                for (d, &q) in dst.iter_mut().zip(acts.row(t)) {
                    *d = q as u8;
                }
            }
            // SAFETY: i8 and u8 have the same size and alignment; any byte is a valid i8.
            let xs: &[i8] = unsafe { std::slice::from_raw_parts(xa.as_slice().as_ptr() as *const i8, n * ld) };
            if n <= BATCH_MAX_TOKENS && self.layout == TernaryLayout::Bits2 {
                let split = decode_split();
                pool.for_each(split.count(), &|p| {
                    let range = split.range(p);
                    if range.is_empty() {
                        return;
                    }
                    SCRATCH.with_borrow_mut(|(_, raw)| {
                        raw.resize(range.len() * n * nb, 0);
                        let w = &self.packed[range.start * rb..range.end * rb];
                        K::gemv_batch_raw(w, rb, range.len(), xs, ld, n, kc, block, raw);
                        self.store(out, acts, range.start, range.len(), raw, nb, kc, block, |i, t| packed_tail(w, i, t));
                    });
                });
                return;
            }
            let amx = amx && kc > 0;
            // AMX multiplies 32 rows at a time (two code tiles share each activation tile).
            #[cfg(target_arch = "x86_64")]
            let row_tile = if amx { amx::ROWS } else { GEMM_ROW_TILE };
            #[cfg(not(target_arch = "x86_64"))]
            let row_tile = GEMM_ROW_TILE;
            let tiles = LineSplit::new(first_out, self.rows, self.rows.div_ceil(row_tile), row_tile);
            let packed = !amx && K::PACKED_GEMM && self.layout == TernaryLayout::Bits2;
            // AMX takes the activations in its tile order, packed once for every row tile
            // (into a buffer kept between calls: a fresh one costs page faults every time).
            let mut amx_buf = AMX_ACTS.take();
            // The AMX epilogue's per-token constants, padded to whole pairs of token tiles.
            let (mut amx_xsum, mut amx_inv) = (Vec::new(), Vec::new());
            #[cfg(target_arch = "x86_64")]
            if amx {
                amx::pack_acts(xs, ld, n, kc, &mut amx_buf);
                (amx_xsum, amx_inv) = self.amx_token_sums(acts, kc, block);
            }
            let amx_acts = amx_buf.as_slice();
            pool.for_each(tiles.count(), &|tile| {
                let rows = tiles.range(tile);
                let (r0, n_rows) = (rows.start, rows.len());
                for t in 0..n {
                    out.prefetch(t * self.rows + r0);
                }
                SCRATCH.with_borrow_mut(|(codes, raw)| {
                    raw.resize(row_tile * n * nb, 0);
                    let raw = &mut raw[..n_rows * n * nb];
                    let w = &self.packed[r0 * rb..(r0 + n_rows) * rb];
                    if packed {
                        K::gemm_packed_raw(w, rb, n_rows, xs, ld, n, kc, block, raw);
                        self.store(out, acts, r0, n_rows, raw, nb, kc, block, |i, t| packed_tail(w, i, t));
                    } else {
                        codes.resize(row_tile * ld);
                        let codes = codes.as_mut_slice();
                        for i in 0..n_rows {
                            let dst = &mut codes[i * ld..i * ld + self.cols];
                            match self.layout {
                                TernaryLayout::Bits2 => K::unpack_codes(&self.packed[(r0 + i) * rb..(r0 + i + 1) * rb], self.cols, dst),
                                TernaryLayout::Bits1_6 => self.row_codes(r0 + i, dst),
                            }
                        }
                        let codes_tail = |i: usize, t: usize| {
                            let c = &codes[i * ld + kc..i * ld + self.cols];
                            c.iter().zip(&acts.row(t)[kc..]).map(|(&c, &q)| i32::from(c) * i32::from(q)).sum()
                        };
                        #[cfg(target_arch = "x86_64")]
                        if amx {
                            let extra = self.amx_tail_sums(acts, n_rows, kc, &codes_tail);
                            let shared = self.scales.len() == 1;
                            let scales = if shared { &self.scales[..] } else { &self.scales[r0 * nb..(r0 + n_rows) * nb] };
                            let ep = amx::Epilogue { nb, xsum: &amx_xsum, inv: &amx_inv, scales, shared, extra: &extra };
                            // SAFETY: `amx` is only set at the AMX level, which `Isa::detect`
                            // grants only where the CPU and the OS let this process use AMX.
                            unsafe { amx::gemm_scaled(codes, ld, n_rows, amx_acts, n, kc, block, &ep, out, self.rows, r0) };
                            return;
                        }
                        K::gemm_raw(codes, ld, n_rows, xs, ld, n, kc, block, raw);
                        self.store(out, acts, r0, n_rows, raw, nb, kc, block, codes_tail);
                    }
                });
            });
            AMX_ACTS.set(amx_buf);
        });
    }

    /// Decode in the 1.6-bit layout (one shared scale): raw sums over whole 160-groups, the
    /// 2-bit tail in scalar code.
    fn decode16<K: Kernels>(&self, pool: &ThreadPool, acts: &QuantActs, out: &mut [f32]) {
        let rb = self.row_bytes();
        let kc16 = self.cols / GROUP16 * GROUP16;
        let split = LineSplit::new(out.as_ptr(), self.rows, pool.n_threads() * 16, 16);
        let out = SyncOut::new(out);
        let scale = self.scales[0];
        pool.for_each(split.count(), &|p| {
            let range = split.range(p);
            if range.is_empty() {
                return;
            }
            SCRATCH.with_borrow_mut(|(_, raw)| {
                raw.resize(range.len(), 0);
                let w = &self.packed[range.start * rb..range.end * rb];
                for t in 0..acts.n {
                    let x = acts.row(t);
                    K::gemv16_raw(w, rb, range.len(), kc16, x, raw);
                    for (i, r) in range.clone().enumerate() {
                        let tail = scalar::tail_dot(&w[i * rb + kc16 / 5..(i + 1) * rb], &x[kc16..]);
                        out.set(t * self.rows + r, (raw[i] + tail - acts.tsum[t]) as f32 * scale / acts.inv[t]);
                    }
                }
            });
        });
    }

    /// The reference path for scale blocks that do not align with groups: unpack each row
    /// and sum per block.
    fn run_unaligned(&self, pool: &ThreadPool, acts: &QuantActs, out: &mut [f32]) {
        let out = SyncOut::new(out);
        let parts = pool.n_threads() * 4;
        let nb = self.cols / self.block_len;
        pool.for_each(parts, &|p| {
            let mut trits = vec![0i8; self.cols];
            for r in split_range(self.rows, parts, 4, p) {
                self.unpack_row(r, &mut trits);
                for t in 0..acts.n {
                    let x = acts.row(t);
                    let mut y = 0f32;
                    for (b, (wb, xb)) in trits.chunks_exact(self.block_len).zip(x.chunks_exact(self.block_len)).enumerate() {
                        let isum: i32 = wb.iter().zip(xb).map(|(&w, &q)| i32::from(w) * i32::from(q)).sum();
                        y += isum as f32 * self.scales[r * nb + b];
                    }
                    out.set(t * self.rows + r, y / acts.inv[t]);
                }
            }
        });
    }
}

/// The bounds every SIMD decode kernel relies on: `n_rows` packed rows of `row_bytes` holding
/// `kc` grouped columns in blocks of `block`, one token of at least `kc` values, `raw` room
/// for every row's block sums.
pub(crate) fn check_gemv(w: &[u8], row_bytes: usize, n_rows: usize, kc: usize, block: usize, x: &[i8], raw: &[i32]) {
    assert!(w.len() >= n_rows.saturating_sub(1) * row_bytes + kc / 4 && x.len() >= kc && raw.len() >= n_rows * (kc / block));
    assert!(row_bytes >= kc / 4 && block.is_multiple_of(GROUP) && kc.is_multiple_of(block));
}

/// The bounds every SIMD batch kernel relies on: those of [`check_gemv`] for the rows, `n_tok`
/// tokens `ldx` apart, `raw` room for every token's rows.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_batch(w: &[u8], row_bytes: usize, n_rows: usize, xs: &[i8], ldx: usize, n_tok: usize, kc: usize, block: usize, raw: &[i32]) {
    check_gemv(w, row_bytes, n_rows, kc, block, xs, raw);
    assert!(n_tok == 0 || xs.len() >= (n_tok - 1) * ldx + kc);
    assert!(raw.len() >= n_rows * n_tok * (kc / block));
}

/// Splits `n_tok` tokens into register passes of at most [`BATCH_PASS_TOKENS`], as even as
/// they go (9 tokens are 5 + 4, not 8 + 1: each pass unpacks the row again, and a short pass
/// pays that for few tokens), calling `pass(t0, nt)`.
pub(crate) fn for_each_pass(n_tok: usize, mut pass: impl FnMut(usize, usize)) {
    let passes = n_tok.div_ceil(BATCH_PASS_TOKENS);
    let mut t0 = 0;
    for p in 0..passes {
        let nt = n_tok / passes + usize::from(p < n_tok % passes);
        pass(t0, nt);
        t0 += nt;
    }
}

/// The bounds every SIMD prefill kernel relies on (`step`: columns per vector step).
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_gemm(codes: &[u8], ld: usize, n_rows: usize, xs: &[i8], ldx: usize, n_tok: usize, kc: usize, block: usize, raw: &[i32], step: usize) {
    assert!(n_rows == 0 || codes.len() >= (n_rows - 1) * ld + kc);
    assert!(n_tok == 0 || xs.len() >= (n_tok - 1) * ldx + kc);
    assert!(raw.len() >= n_rows * n_tok * (kc / block) && block.is_multiple_of(step) && kc.is_multiple_of(block));
}

/// Walks `n_rows x n_tok` in prefill register tiles of at most 2 rows by 4 tokens (tokens
/// outer, so a tile's activations stay in L1 across the rows), calling `tile(r, t, nr, nt)`.
pub(crate) fn for_each_tile(n_rows: usize, n_tok: usize, mut tile: impl FnMut(usize, usize, usize, usize)) {
    for t in (0..n_tok).step_by(4) {
        for r in (0..n_rows).step_by(2) {
            tile(r, t, (n_rows - r).min(2), (n_tok - t).min(4));
        }
    }
}

/// Digit `n` (0..5) of a 1.6-bit byte, as a code in {0, 1, 2}.
#[inline(always)]
pub(crate) fn trit16(b: u8, n: usize) -> u8 {
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    ((u16::from(b.wrapping_mul(POW3[n])) * 3) >> 8) as u8
}

/// Packs a row of codes (column order) into `layout`.
fn pack_codes(layout: TernaryLayout, codes: &[u8], out: &mut [u8]) {
    let cols = codes.len();
    out.fill(0);
    match layout {
        TernaryLayout::Bits2 => {
            let trits: Vec<i8> = codes.iter().map(|&c| c as i8 - 1).collect();
            TernaryMatrix::pack_row(&trits, out);
        }
        TernaryLayout::Bits1_6 => {
            let kc16 = cols / GROUP16 * GROUP16;
            for (g, group) in codes[..kc16].chunks_exact(GROUP16).enumerate() {
                for j in 0..32 {
                    let v = (0..5).fold(0u16, |v, n| v * 3 + u16::from(group[32 * n + j]));
                    out[g * 32 + j] = (v * 256).div_ceil(243) as u8;
                }
            }
            for (k, &c) in codes[kc16..].iter().enumerate() {
                out[kc16 / 5 + k / 4] |= c << (2 * (k % 4));
            }
        }
    }
}

#[cfg(test)]
mod tests;
