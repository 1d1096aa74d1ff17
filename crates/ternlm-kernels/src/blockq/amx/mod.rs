//! The AMX level for Q4_0, Q4_1, Q8_0 and (in [`kquant`]) Q4_K and Q6_K: weights repacked once
//! into panels of 16 rows by one block, multiplied on AMX-INT8 tiles for batches and with
//! AVX-512 VNNI on whole 512-bit vectors for a few tokens.
//!
//! **Numerics (llama.cpp's AMX backend order).** Each output sums its blocks in order as
//! `acc = fma(isum_b, dw_b · dx_b, acc)` (Q4_1 then adds `fma(m_b, s_b, acc)`), with `isum_b`
//! the exact integer product of one block: the order llama.cpp's `ggml-cpu/amx` kernels use
//! on these CPUs, for one token and for tiles alike, so a token's outputs stay independent
//! of its batch. Other levels keep ggml's 8-lane vec-dot order ([`super::lanes8`]);
//! [`dot_tile_order`] is this level's scalar twin.
//!
//! **Panels.** For row group `g` (16 rows, zero-padded at the end) and block `b`, one panel:
//! the 16 rows' values in the VNNI order both `vpdpbusd` and `TDPBSUD`'s B operand take (a
//! 64-byte line per 4 columns, 4 bytes per row), then 16 f16 scales (and 16 f16 mins for
//! Q4_1): 320 bytes for Q4_1 and 544 for Q8_0, as many as the 16 blocks they replace. Q4
//! lines hold two 4-column groups as nibbles (low: columns `8i..8i + 4`, high: the next
//! four); Q8_0 values are stored plus 128 (unsigned), and every product subtracts
//! `offset · Σx` (8 for Q4_0's `q - 8`, 128 for Q8_0, 0 for Q4_1) to stay exact.
//!
//! **Tiles.** A (16 tokens by 32 int8 activations) is loaded straight from the quantized
//! rows; B (8 lines of 64 bytes) from the panel, unpacked first for the nibble types once
//! per row group for every token tile; C is 16 tokens by 16 rows of int32, stored and scaled
//! into 16 vector accumulators per block. Inline assembly (`ldtilecfg`, `tileloadd`,
//! `tdpbsud`, `tilestored`), written against Intel's instruction reference; run only at the
//! AMX level, whose self-check compares it with [`dot_tile_order`] first.
//!
//!
//! The K-quants (Q4_K, Q6_K) are in [`kquant`].

use std::arch::x86_64::*;

use super::BlockKind;
use super::avx2::Q32;
use crate::act_quant::QuantActs;
use crate::sync_out::SyncOut;
use crate::tile_config::TileConfig;

mod kquant;

pub(crate) use kquant::{KPanels, KQuant, dot_k_order, k_rows};

/// Rows per panel (the lanes of a 512-bit int32 vector, the columns of a C tile).
pub(crate) const GROUP: usize = 16;
/// Tokens per A tile.
const TOKENS: usize = 16;
const LAG: usize = 2;
/// How far ahead of the panel being multiplied decode prefetches, in bytes.
const PREFETCH: usize = 4096;
/// Batches of at least this many tokens run on tiles; fewer run on vectors.
pub(crate) const MIN_TILE_TOKENS: usize = 5;

impl Q32 {
    /// Bytes of one panel.
    fn panel_bytes(self) -> usize {
        match self {
            Q32::Q4_0 => 256 + 32,
            Q32::Q4_1 => 256 + 64,
            Q32::Q8_0 => 512 + 32,
        }
    }

    /// Where the 16 f16 scales start in a panel (the mins follow for Q4_1).
    fn scales_at(self) -> usize {
        if self == Q32::Q8_0 { 512 } else { 256 }
    }

    /// What the stored unsigned values exceed the signed ones by.
    fn offset(self) -> i32 {
        match self {
            Q32::Q4_0 => 8,
            Q32::Q4_1 => 0,
            Q32::Q8_0 => 128,
        }
    }

    fn block_bytes(self) -> usize {
        match self {
            Q32::Q4_0 => 18,
            Q32::Q4_1 => 20,
            Q32::Q8_0 => 34,
        }
    }
}

/// The 32 values of one block as the panel stores them (unsigned: `q` for the nibble
/// types, `q + 128` for Q8_0), its scale's f16 bits and (Q4_1) its min's.
fn block_values(kind: Q32, blk: &[u8]) -> ([u8; 32], [u8; 2], [u8; 2]) {
    let mut v = [0u8; 32];
    let d = [blk[0], blk[1]];
    match kind {
        Q32::Q8_0 => {
            for (o, &q) in v.iter_mut().zip(&blk[2..34]) {
                *o = q ^ 0x80;
            }
            (v, d, [0; 2])
        }
        _ => {
            let qs = if kind == Q32::Q4_1 { &blk[4..20] } else { &blk[2..18] };
            for j in 0..16 {
                v[j] = qs[j] & 0xF;
                v[j + 16] = qs[j] >> 4;
            }
            (v, d, if kind == Q32::Q4_1 { [blk[2], blk[3]] } else { [0; 2] })
        }
    }
}

/// Repacked weights, group-major: for each 16-row group, `nb` panels of `pb` bytes.
pub(crate) struct PanelBytes {
    pub(crate) nb: usize,
    pb: usize,
    /// In huge pages where the OS gives them: decode streams these bytes every token, and a
    /// TLB miss per 4 KiB page left its speed at the mercy of where the pages fell.
    bytes: crate::huge_buf::HugeBuf,
}

impl PanelBytes {
    /// Repacks `rows` rows of `row_bytes` (blocks of `bb` bytes) from `w`: `fill(panel, m,
    /// block)` writes row `m` of a group's block into the block's panel (rows past the end
    /// stay zero).
    pub(crate) fn new(w: &[u8], rows: usize, row_bytes: usize, bb: usize, pb: usize, fill: impl Fn(&mut [u8], usize, &[u8])) -> Self {
        let nb = row_bytes / bb;
        let mut bytes = crate::huge_buf::HugeBuf::zeroed(rows.div_ceil(GROUP) * nb * pb);
        for (i, panel) in bytes.chunks_exact_mut(pb).enumerate() {
            let (g, b) = (i / nb, i % nb);
            for m in 0..GROUP.min(rows.saturating_sub(g * GROUP)) {
                fill(panel, m, &w[(g * GROUP + m) * row_bytes + b * bb..][..bb]);
            }
        }
        Self { nb, pb, bytes }
    }

    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Panel `b` of group `g`.
    pub(crate) fn panel(&self, g: usize, b: usize) -> *const u8 {
        self.bytes[(g * self.nb + b) * self.pb..][..self.pb].as_ptr()
    }
}

impl std::fmt::Debug for PanelBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PanelBytes({} bytes)", self.bytes.len())
    }
}

/// A Q4_0/Q4_1/Q8_0 matrix repacked into panels (see the module doc).
#[derive(Debug)]
pub(crate) struct Panels {
    kind: Q32,
    bytes: PanelBytes,
}

impl Panels {
    /// Repacks `rows` rows of `row_bytes` from `w`.
    pub(crate) fn new(kind: Q32, w: &[u8], rows: usize, row_bytes: usize) -> Self {
        let bytes = PanelBytes::new(w, rows, row_bytes, kind.block_bytes(), kind.panel_bytes(), |panel, m, blk| {
            let (v, d, mn) = block_values(kind, blk);
            if kind == Q32::Q8_0 {
                for q in 0..8 {
                    panel[q * 64 + 4 * m..][..4].copy_from_slice(&v[4 * q..4 * q + 4]);
                }
            } else {
                for i in 0..4 {
                    for e in 0..4 {
                        panel[i * 64 + 4 * m + e] = v[8 * i + e] | (v[8 * i + 4 + e] << 4);
                    }
                }
            }
            let s = kind.scales_at();
            panel[s + 2 * m..][..2].copy_from_slice(&d);
            if kind == Q32::Q4_1 {
                panel[s + 32 + 2 * m..][..2].copy_from_slice(&mn);
            }
        });
        Self { kind, bytes }
    }

    pub(crate) fn kind(&self) -> Q32 {
        self.kind
    }

    fn panel(&self, g: usize, b: usize) -> *const u8 {
        self.bytes.panel(g, b)
    }
}

/// This level's scalar twin: `W[r] · x[t]` in the order the AMX level computes it (see the
/// module doc), from the matrix's own bytes (`w` is row `r`).
pub(crate) fn dot_tile_order(kind: Q32, w: &[u8], a: &QuantActs, t: usize) -> f32 {
    let (q8, d8) = (a.row(t), a.row_d(t));
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(kind.block_bytes()).enumerate() {
        let (v, d, m) = block_values(kind, blk);
        let isum: i32 = v.iter().zip(&q8[b * 32..b * 32 + 32]).map(|(&w, &x)| (i32::from(w) - kind.offset()) * i32::from(x)).sum();
        let dw = half::f16::from_le_bytes(d).to_f32();
        acc = (isum as f32).mul_add(dw * d8[b], acc);
        if kind == Q32::Q4_1 {
            acc = half::f16::from_le_bytes(m).to_f32().mul_add(a.s[t * (a.k / 32) + b], acc);
        }
    }
    acc
}

/// `Σx` of every token's every block, scaled by the kind's offset and negated: the start
/// of each block's integer sum.
pub(crate) fn offset_sums(kind: Q32, a: &QuantActs) -> Vec<i32> {
    if kind.offset() == 0 {
        return Vec::new();
    }
    a.q.chunks_exact(32).map(|x| -kind.offset() * x.iter().map(|&v| i32::from(v)).sum::<i32>()).collect()
}

/// `out[t * out_rows + r]` for rows `rows` and every token of `a`, from `panels`.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL/VNNI and F16C, and, for batches of at least
/// [`MIN_TILE_TOKENS`], the AMX level (AMX-INT8 granted to this process).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn rows(p: &Panels, rows: std::ops::Range<usize>, a: &QuantActs, offs: &[i32], out: SyncOut, out_rows: usize) {
    assert!(a.k == p.bytes.nb * 32 && a.block_len == 32 && a.q.len() >= a.n * a.k && a.d.len() >= a.n * p.bytes.nb);
    assert!((p.kind != Q32::Q4_1 || a.s.len() >= a.n * p.bytes.nb) && (offs.is_empty() || offs.len() == a.n * p.bytes.nb));
    assert!(rows.end <= out_rows && out_rows.div_ceil(GROUP) * p.bytes.nb * p.kind.panel_bytes() <= p.bytes.len());
    if rows.is_empty() {
        return;
    }
    let groups = rows.start / GROUP..rows.end.div_ceil(GROUP);
    // SAFETY: the caller vouches for the CPU; the asserts above bound every panel and
    // activation the kernels read.
    unsafe {
        if a.n >= MIN_TILE_TOKENS {
            match p.kind {
                Q32::Q4_0 => tiles::<0>(p, groups, &rows, a, offs, out, out_rows),
                Q32::Q4_1 => tiles::<1>(p, groups, &rows, a, offs, out, out_rows),
                Q32::Q8_0 => tiles::<2>(p, groups, &rows, a, offs, out, out_rows),
            }
        } else {
            for g in groups {
                let mut t = 0;
                while t < a.n {
                    match a.n - t {
                        1 => vectors::<1>(p, g, t, &rows, a, offs, out, out_rows),
                        2 => vectors::<2>(p, g, t, &rows, a, offs, out, out_rows),
                        3 => vectors::<3>(p, g, t, &rows, a, offs, out, out_rows),
                        _ => vectors::<4>(p, g, t, &rows, a, offs, out, out_rows),
                    }
                    t += 4;
                }
            }
        }
    }
}

/// Decode streams panels in order; the hardware prefetcher alone leaves it well short of
/// the bandwidth (at 1 thread and at 2), so the stream `distance` bytes on is fetched a
/// panel's worth of lines (`pb` bytes) per panel.
#[inline(always)]
pub(crate) fn prefetch_ahead(panel: *const u8, pb: usize, distance: usize) {
    let ahead = panel.wrapping_add(distance);
    for line in (0..pb).step_by(64) {
        // SAFETY: a prefetch never faults and has no architectural effect, wherever it points.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line) as *const i8) };
    }
}

/// Writes lanes of `acc` (rows `16g..`) that fall in `rows` for token `t`.
#[inline(always)]
fn store(acc: __m512, g: usize, t: usize, rows: &std::ops::Range<usize>, out: SyncOut, out_rows: usize) {
    let mut lanes = [0f32; GROUP];
    // SAFETY: an unaligned store into a local array of 16 floats.
    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc) };
    let lo = (g * GROUP).max(rows.start);
    let hi = (g * GROUP + GROUP).min(rows.end);
    out.fill(t * out_rows + lo, hi - lo, |j| lanes[lo - g * GROUP + j]);
}

/// Tokens `t0..t0 + T` against row group `g` on 512-bit VNNI: each block's 16 rows' exact
/// sums in one vector (rows in lanes), then the scale epilogue.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn vectors<const T: usize>(p: &Panels, g: usize, t0: usize, rows: &std::ops::Range<usize>, a: &QuantActs, offs: &[i32], out: SyncOut, out_rows: usize) {
    let kind = p.kind;
    let nb = p.bytes.nb;
    let lo4 = _mm512_set1_epi8(0xF);
    let mut acc = [_mm512_setzero_ps(); T];
    let pb = kind.panel_bytes();
    for b in 0..nb {
        let panel = p.panel(g, b);
        // SAFETY: `panel` is one whole panel (see `Panels::panel`); each token's 32
        // activations of block `b` lie inside `a.q` (k = 32 nb, asserted by `rows`). A
        // prefetch never faults, wherever it points.
        unsafe {
            prefetch_ahead(panel, pb, PREFETCH);
            let mut w = [_mm512_setzero_si512(); 8];
            if kind == Q32::Q8_0 {
                for (q, wq) in w.iter_mut().enumerate() {
                    *wq = _mm512_loadu_si512(panel.add(64 * q) as *const _);
                }
            } else {
                for i in 0..4 {
                    let bytes = _mm512_loadu_si512(panel.add(64 * i) as *const _);
                    w[2 * i] = _mm512_and_si512(bytes, lo4);
                    w[2 * i + 1] = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), lo4);
                }
            }
            let sat = kind.scales_at();
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(panel.add(sat) as *const __m256i));
            let mw = if kind == Q32::Q4_1 { _mm512_cvtph_ps(_mm256_loadu_si256(panel.add(sat + 32) as *const __m256i)) } else { _mm512_setzero_ps() };
            for (j, acc) in acc.iter_mut().enumerate() {
                let t = t0 + j;
                let x = a.q.as_ptr().add(t * a.k + 32 * b) as *const i32;
                let start = if offs.is_empty() { 0 } else { offs[t * nb + b] };
                let mut sum = _mm512_set1_epi32(start);
                for (q, wq) in w.iter().enumerate() {
                    sum = _mm512_dpbusd_epi32(sum, *wq, _mm512_set1_epi32(x.add(q).read_unaligned()));
                }
                let scale = _mm512_mul_ps(dw, _mm512_set1_ps(a.d[t * nb + b]));
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, *acc);
                if kind == Q32::Q4_1 {
                    *acc = _mm512_fmadd_ps(mw, _mm512_set1_ps(a.s[t * nb + b]), *acc);
                }
            }
        }
    }
    for (j, acc) in acc.into_iter().enumerate() {
        store(acc, g, t0 + j, rows, out, out_rows);
    }
}

/// Tiles: tmm0 C (16 rows of 64 bytes), tmm1 A (16 rows of 32 bytes), tmm2 B (8 rows of 64
/// bytes), and tmm3-5 the same shapes for odd blocks.
const CONFIG: TileConfig = TileConfig::new([(16, 64), (16, 32), (8, 64), (16, 64), (16, 32), (8, 64), (0, 0), (0, 0)]);

#[repr(C, align(64))]
struct CTile([i32; TOKENS * GROUP]);

/// Every token against row groups `groups` on AMX tiles; `K` is the kind (0 Q4_0, 1 Q4_1,
/// 2 Q8_0), a constant so each kind's epilogue is compiled without branches.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tiles<const K: u8>(p: &Panels, groups: std::ops::Range<usize>, rows: &std::ops::Range<usize>, a: &QuantActs, offs: &[i32], out: SyncOut, out_rows: usize) {
    let kind = p.kind;
    let (nb, k) = (p.bytes.nb, a.k);
    let lo4 = _mm512_set1_epi8(0xF);
    // B operands of one row group (every block), unpacked once for all token tiles.
    let mut unpacked = crate::aligned::AlignedBytes::new();
    if kind != Q32::Q8_0 {
        unpacked.resize(nb * 512);
    }
    // The last token tile, zero-padded to 16 tokens, when the batch does not fill it.
    let full_tiles = a.n / TOKENS;
    let mut tail = crate::aligned::AlignedBytes::new();
    if !a.n.is_multiple_of(TOKENS) {
        tail.resize(TOKENS * k);
        let rest = &a.q[full_tiles * TOKENS * k..];
        for (d, &s) in tail.as_mut_slice().iter_mut().zip(rest) {
            *d = s as u8;
        }
    }
    let mut c = [CTile([0; TOKENS * GROUP]), CTile([0; TOKENS * GROUP]), CTile([0; TOKENS * GROUP])];
    // Each token tile's per-token scales, block-major, so a block's 16 are adjacent; padding
    // tokens of a ragged tile borrow the last token's (their outputs are dropped).
    let n_tiles = a.n.div_ceil(TOKENS);
    let (mut dts, mut sts) = (vec![0f32; n_tiles * nb * TOKENS], vec![0f32; if K == 1 { n_tiles * nb * TOKENS } else { 0 }]);
    let mut ots = vec![0i32; if K == 1 { 0 } else { n_tiles * nb * TOKENS }];
    for tt in 0..n_tiles {
        for j in 0..TOKENS {
            let t = (tt * TOKENS + j).min(a.n - 1);
            for b in 0..nb {
                let at = (tt * nb + b) * TOKENS + j;
                dts[at] = a.d[t * nb + b];
                if K == 1 {
                    sts[at] = a.s[t * nb + b];
                } else {
                    ots[at] = offs[t * nb + b];
                }
            }
        }
    }
    // SAFETY: the caller vouches for AMX; the tiles are configured first. Every A load reads
    // 16 rows of 32 bytes `k` apart inside `a.q` (a full tile) or `tail` (16 rows of k), every
    // B load 8 lines of 64 bytes inside a panel or `unpacked`, every C store 1 KiB into one
    // part of `c`. The scale reads take 16 values inside `dts`, `sts` or `ots` at a tile's
    // block.
    unsafe {
        CONFIG.load();
        for g in groups {
            if kind != Q32::Q8_0 {
                let dst = unpacked.as_mut_slice().as_mut_ptr();
                for b in 0..nb {
                    let panel = p.panel(g, b);
                    for i in 0..4 {
                        let bytes = _mm512_loadu_si512(panel.add(64 * i) as *const _);
                        _mm512_storeu_si512(dst.add(b * 512 + 128 * i) as *mut _, _mm512_and_si512(bytes, lo4));
                        _mm512_storeu_si512(dst.add(b * 512 + 128 * i + 64) as *mut _, _mm512_and_si512(_mm512_srli_epi16(bytes, 4), lo4));
                    }
                }
            }
            for tt in 0..n_tiles {
                let abase = if tt < full_tiles { a.q.as_ptr().add(tt * TOKENS * k) as *const u8 } else { tail.as_slice().as_ptr() };
                let n_here = TOKENS.min(a.n - tt * TOKENS);
                let mut acc = [_mm512_setzero_ps(); TOKENS];
                // Block b's tiles are multiplied while block b - LAG's sums are scaled from
                // another part of `c` (a tile store is slow to reach vector loads), on
                // alternating tile registers so consecutive blocks do not wait for each other.
                for b in 0..nb + LAG {
                    if b < nb {
                        let bsrc = if K == 2 { p.panel(g, b) } else { unpacked.as_slice().as_ptr().add(b * 512) };
                        let (a_at, c_at) = (abase.add(32 * b), c[b % (LAG + 1)].0.as_mut_ptr());
                        if b % 2 == 0 {
                            std::arch::asm!(
                                "tilezero tmm0",
                                "tileloadd tmm1, [{a} + {lda}*1]",
                                "tileloadd tmm2, [{b} + {ldb}*1]",
                                "tdpbsud tmm0, tmm1, tmm2",
                                "tilestored [{c} + {ldb}*1], tmm0",
                                a = in(reg) a_at, lda = in(reg) k, b = in(reg) bsrc, ldb = in(reg) 64usize, c = in(reg) c_at,
                                options(nostack)
                            );
                        } else {
                            std::arch::asm!(
                                "tilezero tmm3",
                                "tileloadd tmm4, [{a} + {lda}*1]",
                                "tileloadd tmm5, [{b} + {ldb}*1]",
                                "tdpbsud tmm3, tmm4, tmm5",
                                "tilestored [{c} + {ldb}*1], tmm3",
                                a = in(reg) a_at, lda = in(reg) k, b = in(reg) bsrc, ldb = in(reg) 64usize, c = in(reg) c_at,
                                options(nostack)
                            );
                        }
                    }
                    if b >= LAG {
                        let b = b - LAG;
                        let panel = p.panel(g, b);
                        let sat = if K == 2 { 512 } else { 256 };
                        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(panel.add(sat) as *const __m256i));
                        let mw = if K == 1 { _mm512_cvtph_ps(_mm256_loadu_si256(panel.add(sat + 32) as *const __m256i)) } else { _mm512_setzero_ps() };
                        let cs = c[b % (LAG + 1)].0.as_ptr();
                        let at = (tt * nb + b) * TOKENS;
                        let (dt, st, ot) = (dts.as_ptr().add(at), sts.as_ptr().add(at), ots.as_ptr().add(at));
                        for (j, acc) in acc.iter_mut().enumerate() {
                            let mut sum = _mm512_load_si512(cs.add(j * GROUP) as *const _);
                            if K != 1 {
                                sum = _mm512_add_epi32(sum, _mm512_set1_epi32(*ot.add(j)));
                            }
                            let scale = _mm512_mul_ps(dw, _mm512_set1_ps(*dt.add(j)));
                            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, *acc);
                            if K == 1 {
                                *acc = _mm512_fmadd_ps(mw, _mm512_set1_ps(*st.add(j)), *acc);
                            }
                        }
                    }
                }
                for (j, acc) in acc.into_iter().enumerate().take(n_here) {
                    store(acc, g, tt * TOKENS + j, rows, out, out_rows);
                }
            }
        }
        std::arch::asm!("tilerelease", options(nostack, nomem));
    }
}

/// The AMX level's copy of a block matrix's weights.
#[derive(Debug)]
pub(crate) enum Repacked {
    Q32(Panels),
    K(KPanels),
}

impl Repacked {
    /// The repacked copy of a Q4_0/Q4_1/Q8_0/Q4_K/Q6_K matrix (`None` for the other types,
    /// which this level runs as the AVX-512 level does).
    pub(crate) fn new(kind: BlockKind, w: &[u8], rows: usize, row_bytes: usize) -> Option<Self> {
        match Q32::of(kind) {
            Some(q32) => Some(Self::Q32(Panels::new(q32, w, rows, row_bytes))),
            None => KQuant::of(kind).map(|k| Self::K(KPanels::new(k, w, rows, row_bytes))),
        }
    }
}
