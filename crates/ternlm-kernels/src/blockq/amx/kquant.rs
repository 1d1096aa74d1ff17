//! The AMX level's K-quants (Q4_K, Q6_K).
//!
//! **K-quants (llama.cpp's `acc_C<block_q8_K, …>` order).** Per 256-block, exact integers
//! first: Q4_K `I = Σ_j sc_j · Σ q·x` over its 8 sub-blocks of 32 and `M = Σ_j m_j ·
//! (bsums[2j] + bsums[2j + 1])`, then `acc = fma(I, d8·d, acc)` and `acc = fma(M, (-d8)·dmin,
//! acc)`; Q6_K `I = Σ_k sc_k · Σ (q - 32)·x` over its 16 sub-blocks of 16, then
//! `acc = fma(I, d8·d, acc)`. One token and tiles alike; [`dot_k_order`] is the twin.
//!
//! **K panels**, as many bytes as the 16 blocks they replace (2304 for Q4_K, 3360 for Q6_K):
//! 32 nibble lines as in the 32-wide panels (all 256 columns, unsigned values), then Q4_K's packed scale
//! bytes as 3 lines of 32-bit words (one per row) and 16 f16 `d` and `dmin`; Q6_K's high
//! 2-bit pairs in 16 lines, its int8 scales in 4 lines, and 16 f16 `d`. Decode (fewer than
//! 5 tokens) runs `vpdpbusd` per sub-block and scales it with `vpmulld` (Q4_K's minima by
//! `vpdpwssd`; Q6_K's `-32` as `-32·Σx` in each sub-block's start). Tiles avoid a scale
//! step per sub-block: each panel is unpacked once per row group into `w = sc·(q - off)`
//! (int16, |w| <= 4096), split exactly as `w = 64·h + l` (`h` int8, `l` in `0..64`), so a
//! block's `I = 64·Σ h·x + Σ l·x` takes 8 full `TDPBSSD`s (4 chunks of 64 columns, `h` and
//! `l`) per 16 tokens and 16 rows, and one epilogue per block.

use std::arch::x86_64::*;

use super::{GROUP, PanelBytes, TOKENS, prefetch_ahead, store};
use crate::act_quant::QuantActs;
use crate::blockq::BlockKind;
use crate::sync_out::SyncOut;
use crate::tile_config::TileConfig;

/// The K-quant types this level repacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KQuant {
    Q4K,
    Q6K,
}

impl KQuant {
    pub(crate) fn of(kind: BlockKind) -> Option<Self> {
        match kind {
            BlockKind::Q4K => Some(Self::Q4K),
            BlockKind::Q6K => Some(Self::Q6K),
            _ => None,
        }
    }

    fn block_bytes(self) -> usize {
        match self {
            Self::Q4K => 144,
            Self::Q6K => 210,
        }
    }

    /// Bytes of one panel: exactly the 16 blocks it replaces.
    fn panel_bytes(self) -> usize {
        GROUP * self.block_bytes()
    }
}

/// Q4_K panel: 32 nibble lines, then the 12 packed scale bytes of each row as 3 lines of
/// 32-bit words (line `i`: word `i` of every row), then 16 f16 `d` and 16 f16 `dmin`.
const Q4K_SC: usize = 2048;
const Q4K_D: usize = Q4K_SC + 192;
const Q4K_DMIN: usize = Q4K_D + 32;
/// Q6_K panel: 32 nibble lines (the low 4 bits), 16 lines of high 2-bit pairs (line `h`
/// covers column groups `4h..4h + 4`, group `4h + s` in bits `2s..2s + 2` of each byte),
/// 4 lines of the int8 scales (line `i`: scales `4i..4i + 4` of every row), 16 f16 `d`.
const Q6K_HI: usize = 2048;
const Q6K_SC: usize = Q6K_HI + 1024;
const Q6K_D: usize = Q6K_SC + 256;

/// The 256 values of a K-quant block in element order, unsigned (Q4_K `0..16`, Q6_K
/// `q + 32`, `0..64`).
fn kblock_values(kind: KQuant, blk: &[u8]) -> [u8; 256] {
    let mut v = [0u8; 256];
    match kind {
        KQuant::Q4K => {
            for p in 0..4 {
                for l in 0..32 {
                    let q = blk[16 + 32 * p + l];
                    v[64 * p + l] = q & 0xF;
                    v[64 * p + 32 + l] = q >> 4;
                }
            }
        }
        KQuant::Q6K => {
            for (o, &q) in v.iter_mut().zip(crate::blockq::q6k_values(blk).iter()) {
                *o = (q + 32) as u8;
            }
        }
    }
    v
}

/// A K-quant matrix repacked into panels of 16 rows by one 256-block (see the module doc).
#[derive(Debug)]
pub(crate) struct KPanels {
    kind: KQuant,
    bytes: PanelBytes,
}

impl KPanels {
    /// Repacks `rows` rows of `row_bytes` from `w`.
    pub(crate) fn new(kind: KQuant, w: &[u8], rows: usize, row_bytes: usize) -> Self {
        let bytes = PanelBytes::new(w, rows, row_bytes, kind.block_bytes(), kind.panel_bytes(), |panel, m, blk| {
            let v = kblock_values(kind, blk);
            // Nibble line l: columns 8l..8l + 4 low, the next four high.
            for l in 0..32 {
                for e in 0..4 {
                    panel[64 * l + 4 * m + e] = (v[8 * l + e] & 0xF) | ((v[8 * l + 4 + e] & 0xF) << 4);
                }
            }
            match kind {
                KQuant::Q4K => {
                    for i in 0..3 {
                        panel[Q4K_SC + 64 * i + 4 * m..][..4].copy_from_slice(&blk[4 + 4 * i..8 + 4 * i]);
                    }
                    panel[Q4K_D + 2 * m..][..2].copy_from_slice(&blk[0..2]);
                    panel[Q4K_DMIN + 2 * m..][..2].copy_from_slice(&blk[2..4]);
                }
                KQuant::Q6K => {
                    for h in 0..16 {
                        for e in 0..4 {
                            let mut byte = 0u8;
                            for s in 0..4 {
                                byte |= ((v[16 * h + 4 * s + e] >> 4) & 3) << (2 * s);
                            }
                            panel[Q6K_HI + 64 * h + 4 * m + e] = byte;
                        }
                    }
                    for i in 0..4 {
                        panel[Q6K_SC + 64 * i + 4 * m..][..4].copy_from_slice(&blk[192 + 4 * i..196 + 4 * i]);
                    }
                    panel[Q6K_D + 2 * m..][..2].copy_from_slice(&blk[208..210]);
                }
            }
        });
        Self { kind, bytes }
    }

    fn panel(&self, g: usize, b: usize) -> *const u8 {
        self.bytes.panel(g, b)
    }
}

/// This level's scalar twin for the K-quants: `W[r] · x[t]` in llama.cpp's AMX order (see
/// the module doc), from the matrix's own bytes (`w` is row `r`).
pub(crate) fn dot_k_order(kind: KQuant, w: &[u8], a: &QuantActs, t: usize) -> f32 {
    let (q8, d8) = (a.row(t), a.row_d(t));
    let nb = a.k / 256;
    let bsums = &a.bsums[t * nb * 16..(t + 1) * nb * 16];
    let f16_at = |b: &[u8], i: usize| half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(kind.block_bytes()).enumerate() {
        let v = kblock_values(kind, blk);
        let x = &q8[b * 256..b * 256 + 256];
        let dot = |lo: usize, len: usize, offset: i32| -> i32 { v[lo..lo + len].iter().zip(&x[lo..lo + len]).map(|(&w, &x)| (i32::from(w) - offset) * i32::from(x)).sum() };
        match kind {
            KQuant::Q4K => {
                let (mut isum, mut msum) = (0i32, 0i32);
                for j in 0..8 {
                    let (sc, mn) = crate::blockq::q4k_scale_min(j, &blk[4..16]);
                    isum += i32::from(sc) * dot(32 * j, 32, 0);
                    msum += i32::from(mn) * (bsums[b * 16 + 2 * j] + bsums[b * 16 + 2 * j + 1]);
                }
                // acc_C<block_q8_K, block_q4_K>: vd = d1·d0, vdm = (-d1)·dmin.
                acc = (isum as f32).mul_add(d8[b] * f16_at(blk, 0), acc);
                acc = (msum as f32).mul_add(-d8[b] * f16_at(blk, 2), acc);
            }
            KQuant::Q6K => {
                let mut isum = 0i32;
                for k in 0..16 {
                    isum += i32::from(blk[192 + k] as i8) * dot(16 * k, 16, 32);
                }
                // acc_C<block_q8_K, block_q6_K>: vd = d1·d0.
                acc = (isum as f32).mul_add(d8[b] * f16_at(blk, 208), acc);
            }
        }
    }
    acc
}

/// Batches of at least this many tokens run the K-quants on tiles.
const K_MIN_TILE_TOKENS: usize = 5;

/// `out[t * out_rows + r]` for rows `rows` and every token of `a`, from K-quant `panels`.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL/VNNI and F16C, and, for batches of at least
/// [`K_MIN_TILE_TOKENS`], the AMX level (AMX-INT8 granted to this process).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn k_rows(p: &KPanels, rows: std::ops::Range<usize>, a: &QuantActs, out: SyncOut, out_rows: usize) {
    let nb = p.bytes.nb;
    assert!(a.k == nb * 256 && a.block_len == 256 && a.q.len() >= a.n * a.k && a.d.len() >= a.n * nb && a.bsums.len() >= a.n * nb * 16);
    assert!(rows.end <= out_rows && out_rows.div_ceil(GROUP) * nb * p.kind.panel_bytes() <= p.bytes.len());
    if rows.is_empty() || a.n == 0 {
        return;
    }
    let groups = rows.start / GROUP..rows.end.div_ceil(GROUP);
    // Q4_K: each token's 32-column sums `Σx` of every block as 4 int16 pairs, `[(t · nb +
    // b) · 4 + i]` = sub-blocks `2i` (low half) and `2i + 1`, the pairs `vpdpwssd` meets the
    // minima with (each within int16: 32 · 127).
    let mut bps = Vec::new();
    if p.kind == KQuant::Q4K {
        bps = a.bsums[..a.n * nb * 16]
            .chunks_exact(4)
            .map(|s| {
                let (lo, hi) = (s[0] + s[1], s[2] + s[3]);
                (u32::from(lo as u16) | ((hi as u32) << 16)) as i32
            })
            .collect();
    }
    // SAFETY: the caller vouches for the CPU; the asserts above bound every panel and
    // activation the kernels read.
    unsafe {
        if a.n >= K_MIN_TILE_TOKENS {
            match p.kind {
                KQuant::Q4K => k_tiles::<false>(p, groups, &rows, a, &bps, out, out_rows),
                KQuant::Q6K => k_tiles::<true>(p, groups, &rows, a, &bps, out, out_rows),
            }
        } else {
            for g in groups {
                let mut t = 0;
                while t < a.n {
                    match (p.kind, a.n - t) {
                        (KQuant::Q4K, 1) => q4k_vectors::<1>(p, g, t, &rows, a, &bps, out, out_rows),
                        (KQuant::Q4K, 2) => q4k_vectors::<2>(p, g, t, &rows, a, &bps, out, out_rows),
                        (KQuant::Q4K, 3) => q4k_vectors::<3>(p, g, t, &rows, a, &bps, out, out_rows),
                        (KQuant::Q4K, _) => q4k_vectors::<4>(p, g, t, &rows, a, &bps, out, out_rows),
                        (KQuant::Q6K, 1) => q6k_vectors::<1>(p, g, t, &rows, a, out, out_rows),
                        (KQuant::Q6K, 2) => q6k_vectors::<2>(p, g, t, &rows, a, out, out_rows),
                        (KQuant::Q6K, 3) => q6k_vectors::<3>(p, g, t, &rows, a, out, out_rows),
                        (KQuant::Q6K, _) => q6k_vectors::<4>(p, g, t, &rows, a, out, out_rows),
                    }
                    t += 4;
                }
            }
        }
    }
}

/// Byte `j` of every 32-bit lane of `u`, zero-extended.
#[inline(always)]
unsafe fn byte_lane(u: __m512i, j: usize) -> __m512i {
    // SAFETY: register-only intrinsics; the caller runs with AVX-512 F.
    unsafe { _mm512_and_si512(_mm512_srlv_epi32(u, _mm512_set1_epi32(8 * j as i32)), _mm512_set1_epi32(0xFF)) }
}

/// A Q4_K panel's scales and minima, rows in lanes (ggml's `utmp` shuffle on each row's
/// three words): bytes of `[0]` scales 0..4, `[1]` scales 4..8, `[2]` minima 0..4, `[3]`
/// minima 4..8 (see `blockq::q4k_scale_min`).
#[inline(always)]
unsafe fn q4k_scales(panel: *const u8) -> [__m512i; 4] {
    // SAFETY: the caller bounds the panel and runs with AVX-512 F.
    unsafe {
        let s0 = _mm512_loadu_si512(panel.add(Q4K_SC) as *const _);
        let s1 = _mm512_loadu_si512(panel.add(Q4K_SC + 64) as *const _);
        let s2 = _mm512_loadu_si512(panel.add(Q4K_SC + 128) as *const _);
        let (k1, k2, k3) = (_mm512_set1_epi32(0x3f3f_3f3f), _mm512_set1_epi32(0x0f0f_0f0f), _mm512_set1_epi32(0x0303_0303));
        // (No closures here: they would not inherit the caller's target features.)
        let hi0 = _mm512_slli_epi32::<4>(_mm512_and_si512(_mm512_srli_epi32::<6>(s0), k3));
        let hi1 = _mm512_slli_epi32::<4>(_mm512_and_si512(_mm512_srli_epi32::<6>(s1), k3));
        [_mm512_and_si512(s0, k1), _mm512_or_si512(_mm512_and_si512(s2, k2), hi0), _mm512_and_si512(s1, k1), _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32::<4>(s2), k2), hi1)]
    }
}

/// The minima as int16 pairs `(m[2i], m[2i + 1])`, rows in lanes, from [`q4k_scales`].
#[inline(always)]
unsafe fn q4k_min_pairs(u: &[__m512i; 4]) -> [__m512i; 4] {
    // SAFETY: register-only intrinsics; the caller runs with AVX-512 F.
    unsafe {
        let (lo, hi) = (_mm512_set1_epi32(0xFF), _mm512_set1_epi32(0xFF00));
        let mut pairs = [_mm512_setzero_si512(); 4];
        for (i, pair) in pairs.iter_mut().enumerate() {
            let x = _mm512_srlv_epi32(u[2 + i / 2], _mm512_set1_epi32(16 * (i % 2) as i32));
            *pair = _mm512_or_si512(_mm512_and_si512(x, lo), _mm512_slli_epi32::<8>(_mm512_and_si512(x, hi)));
        }
        pairs
    }
}

/// Column group `4k + s` (`s` in `0..4`) of a Q6_K panel's sub-block `k`: 16 rows by 4
/// columns of 6-bit values, from the nibble lines `2k`, `2k + 1` and high line `k`.
#[inline(always)]
unsafe fn q6k_groups(panel: *const u8, k: usize) -> [__m512i; 4] {
    // SAFETY: the caller bounds the panel and runs with AVX-512 F/BW.
    unsafe {
        let lo4 = _mm512_set1_epi8(0xF);
        let n0 = _mm512_loadu_si512(panel.add(128 * k) as *const _);
        let n1 = _mm512_loadu_si512(panel.add(128 * k + 64) as *const _);
        let hb = _mm512_loadu_si512(panel.add(Q6K_HI + 64 * k) as *const _);
        let (m03, m0c, m30) = (_mm512_set1_epi8(0x03), _mm512_set1_epi8(0x0C), _mm512_set1_epi8(0x30));
        [
            _mm512_or_si512(_mm512_and_si512(n0, lo4), _mm512_slli_epi16::<4>(_mm512_and_si512(hb, m03))),
            _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(n0), lo4), _mm512_slli_epi16::<2>(_mm512_and_si512(hb, m0c))),
            _mm512_or_si512(_mm512_and_si512(n1, lo4), _mm512_and_si512(hb, m30)),
            _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(n1), lo4), _mm512_and_si512(_mm512_srli_epi16::<2>(hb), m30)),
        ]
    }
}

/// Tokens `t0..t0 + T` against Q4_K row group `g` on 512-bit VNNI (rows in lanes): each
/// sub-block's exact sums, times its scale, summed over the block; the minima's sum by
/// `vpdpwssd`; then the two FMAs.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn q4k_vectors<const T: usize>(p: &KPanels, g: usize, t0: usize, rows: &std::ops::Range<usize>, a: &QuantActs, bps: &[i32], out: SyncOut, out_rows: usize) {
    let (nb, k) = (p.bytes.nb, a.k);
    let lo4 = _mm512_set1_epi8(0xF);
    let mut acc = [_mm512_setzero_ps(); T];
    let pb = p.kind.panel_bytes();
    for b in 0..nb {
        let panel = p.panel(g, b);
        prefetch_ahead(panel, pb, 2 * pb);
        // SAFETY: `panel` is one whole panel; each token's 256 activations of block `b` lie
        // inside `a.q`, its pairs inside `bps` (both asserted by `k_rows`).
        unsafe {
            let u = q4k_scales(panel);
            let mut isum = [_mm512_setzero_si512(); T];
            for j in 0..8 {
                let mut s = [_mm512_setzero_si512(); T];
                for l in 4 * j..4 * j + 4 {
                    let bytes = _mm512_loadu_si512(panel.add(64 * l) as *const _);
                    let (lo, hi) = (_mm512_and_si512(bytes, lo4), _mm512_and_si512(_mm512_srli_epi16::<4>(bytes), lo4));
                    for (i, s) in s.iter_mut().enumerate() {
                        let x = a.q.as_ptr().add((t0 + i) * k + 256 * b + 8 * l) as *const i32;
                        *s = _mm512_dpbusd_epi32(*s, lo, _mm512_set1_epi32(x.read_unaligned()));
                        *s = _mm512_dpbusd_epi32(*s, hi, _mm512_set1_epi32(x.add(1).read_unaligned()));
                    }
                }
                let sc = byte_lane(u[j / 4], j % 4);
                for (isum, s) in isum.iter_mut().zip(s) {
                    *isum = _mm512_add_epi32(*isum, _mm512_mullo_epi32(s, sc));
                }
            }
            let mp = q4k_min_pairs(&u);
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(panel.add(Q4K_D) as *const __m256i));
            let dmin = _mm512_cvtph_ps(_mm256_loadu_si256(panel.add(Q4K_DMIN) as *const __m256i));
            for (i, acc) in acc.iter_mut().enumerate() {
                let t = t0 + i;
                let bp = bps.as_ptr().add((t * nb + b) * 4);
                let mut m = _mm512_setzero_si512();
                for (q, mp) in mp.iter().enumerate() {
                    m = _mm512_dpwssd_epi32(m, *mp, _mm512_set1_epi32(*bp.add(q)));
                }
                let d8 = a.d[t * nb + b];
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[i]), _mm512_mul_ps(_mm512_set1_ps(d8), dw), *acc);
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(m), _mm512_mul_ps(_mm512_set1_ps(-d8), dmin), *acc);
            }
        }
    }
    for (i, acc) in acc.into_iter().enumerate() {
        store(acc, g, t0 + i, rows, out, out_rows);
    }
}

/// Tokens `t0..t0 + T` against Q6_K row group `g` on 512-bit VNNI (rows in lanes): each
/// 16-column sub-block's exact sum of `q·x` less `32·Σx`, times its scale, summed over the
/// block; then one FMA.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn q6k_vectors<const T: usize>(p: &KPanels, g: usize, t0: usize, rows: &std::ops::Range<usize>, a: &QuantActs, out: SyncOut, out_rows: usize) {
    let (nb, k) = (p.bytes.nb, a.k);
    let mut acc = [_mm512_setzero_ps(); T];
    let pb = p.kind.panel_bytes();
    for b in 0..nb {
        let panel = p.panel(g, b);
        prefetch_ahead(panel, pb, 2 * pb);
        // SAFETY: `panel` is one whole panel; each token's 256 activations and 16 sums of
        // block `b` lie inside `a.q` and `a.bsums` (asserted by `k_rows`).
        unsafe {
            let mut isum = [_mm512_setzero_si512(); T];
            let mut scl = _mm512_setzero_si512();
            for kk in 0..16 {
                if kk % 4 == 0 {
                    scl = _mm512_loadu_si512(panel.add(Q6K_SC + 16 * kk) as *const _);
                }
                let w = q6k_groups(panel, kk);
                // The sub-block's int8 scale, sign-extended.
                let sc = _mm512_srai_epi32::<24>(_mm512_sllv_epi32(scl, _mm512_set1_epi32(24 - 8 * (kk % 4) as i32)));
                for (i, isum) in isum.iter_mut().enumerate() {
                    let t = t0 + i;
                    let x = a.q.as_ptr().add(t * k + 256 * b + 16 * kk) as *const i32;
                    let mut s = _mm512_set1_epi32(-32 * *a.bsums.as_ptr().add(t * nb * 16 + b * 16 + kk));
                    for (e, w) in w.iter().enumerate() {
                        s = _mm512_dpbusd_epi32(s, *w, _mm512_set1_epi32(x.add(e).read_unaligned()));
                    }
                    *isum = _mm512_add_epi32(*isum, _mm512_mullo_epi32(s, sc));
                }
            }
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(panel.add(Q6K_D) as *const __m256i));
            for (i, acc) in acc.iter_mut().enumerate() {
                let d8 = a.d[(t0 + i) * nb + b];
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[i]), _mm512_mul_ps(_mm512_set1_ps(d8), dw), *acc);
            }
        }
    }
    for (i, acc) in acc.into_iter().enumerate() {
        store(acc, g, t0 + i, rows, out, out_rows);
    }
}

/// One column group (16 rows by 4 columns, unsigned values `q` in `0..64`) scaled by its
/// sub-block's scale into `w = sc·(q - off)` (int16, |w| <= 4096) and split exactly as
/// `w = 64·h + l` with `l` in `0..64`: `h` (int8) to `dh`, `l` to `dl`, both in VNNI order.
/// `sce`/`sco` hold the scale under even/odd bytes of each 16-bit pair, `off` is `sc·off`
/// in every 16-bit lane.
#[inline(always)]
unsafe fn prescale(q: __m512i, sce: __m512i, sco: __m512i, off: __m512i, dh: *mut u8, dl: *mut u8) {
    // SAFETY: the caller bounds the 64 bytes at `dh` and `dl` and runs with AVX-512 BW.
    unsafe {
        const ODD: u64 = 0xAAAA_AAAA_AAAA_AAAA;
        // Each 16-bit lane of `maddubs` holds one product (the other byte meets a zero).
        let e = _mm512_sub_epi16(_mm512_maddubs_epi16(q, sce), off);
        let o = _mm512_sub_epi16(_mm512_maddubs_epi16(q, sco), off);
        // h: e >> 6 in even bytes, bits 6..14 of o (o >> 6, which fits a byte) in odd ones.
        let h = _mm512_mask_blend_epi8(ODD, _mm512_srai_epi16::<6>(e), _mm512_slli_epi16::<2>(o));
        let l = _mm512_and_si512(_mm512_mask_blend_epi8(ODD, e, _mm512_slli_epi16::<8>(o)), _mm512_set1_epi8(0x3F));
        _mm512_storeu_si512(dh as *mut _, h);
        _mm512_storeu_si512(dl as *mut _, l);
    }
}

/// The scale byte in every 32-bit lane of `sc8` placed under even bytes (`sce`) and odd
/// bytes (`sco`) of both 16-bit halves.
#[inline(always)]
unsafe fn scale_pairs(sc8: __m512i) -> (__m512i, __m512i) {
    // SAFETY: register-only intrinsics; the caller runs with AVX-512 F.
    unsafe {
        let sce = _mm512_or_si512(sc8, _mm512_slli_epi32::<16>(sc8));
        (sce, _mm512_slli_epi32::<8>(sce))
    }
}

/// One panel unpacked into the tiles' B operands: for each of the 4 chunks of 64 columns
/// (2 KiB at `dst + 2048c`) 16 lines of `h`, then 16 lines of `l` (see [`prescale`]).
#[inline(always)]
unsafe fn k_unpack<const Q6: bool>(panel: *const u8, dst: *mut u8) {
    // SAFETY: the caller bounds the panel and the 8 KiB at `dst`, and runs with AVX-512
    // F/BW.
    unsafe {
        let at = |grp: usize| dst.add(2048 * (grp / 16) + 64 * (grp % 16));
        if Q6 {
            let mut scl = _mm512_setzero_si512();
            for kk in 0..16 {
                if kk % 4 == 0 {
                    scl = _mm512_loadu_si512(panel.add(Q6K_SC + 16 * kk) as *const _);
                }
                let (sce, sco) = scale_pairs(byte_lane(scl, kk % 4));
                // 32·sc in each 16-bit lane: the scale byte sits in the high half of `sco`.
                let off = _mm512_srai_epi16::<3>(sco);
                for (s, w) in q6k_groups(panel, kk).into_iter().enumerate() {
                    let d = at(4 * kk + s);
                    prescale(w, sce, sco, off, d, d.add(1024));
                }
            }
        } else {
            let u = q4k_scales(panel);
            let lo4 = _mm512_set1_epi8(0xF);
            for j in 0..8 {
                let (sce, sco) = scale_pairs(byte_lane(u[j / 4], j % 4));
                for l in 4 * j..4 * j + 4 {
                    let bytes = _mm512_loadu_si512(panel.add(64 * l) as *const _);
                    let (d0, d1) = (at(2 * l), at(2 * l + 1));
                    prescale(_mm512_and_si512(bytes, lo4), sce, sco, _mm512_setzero_si512(), d0, d0.add(1024));
                    prescale(_mm512_and_si512(_mm512_srli_epi16::<4>(bytes), lo4), sce, sco, _mm512_setzero_si512(), d1, d1.add(1024));
                }
            }
        }
    }
}

/// Every token against K-quant row groups `groups` on AMX tiles (`Q6`: Q6_K, else Q4_K).
/// Per row group and block: the panel unpacked once ([`k_unpack`]); then per pair of token
/// tiles, 4 chunks of 64 columns of `TDPBSSD` into 4 C tiles (2 token tiles by `h`, `l`),
/// stored and scaled one step later (a tile store is slow to reach vector loads) into
/// float accumulators that live in memory across blocks.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn k_tiles<const Q6: bool>(p: &KPanels, groups: std::ops::Range<usize>, rows: &std::ops::Range<usize>, a: &QuantActs, bps: &[i32], out: SyncOut, out_rows: usize) {
    let (nb, k, n) = (p.bytes.nb, a.k, a.n);
    let full_tiles = n / TOKENS;
    let n_tiles = n.div_ceil(TOKENS);
    // The last token tile, zero-padded to 16 tokens, when the batch does not fill it.
    let mut tail = crate::aligned::AlignedBytes::new();
    if !n.is_multiple_of(TOKENS) {
        tail.resize(TOKENS * k);
        for (d, &s) in tail.as_mut_slice().iter_mut().zip(&a.q[full_tiles * TOKENS * k..n * k]) {
            *d = s as u8;
        }
    }
    // Two unpacked blocks (consecutive blocks never share one) and two steps' C tiles.
    let mut ub = crate::aligned::AlignedBytes::new();
    ub.resize(2 * 8192);
    let mut cbuf = crate::aligned::AlignedBytes::new();
    cbuf.resize(2 * 4096);
    let mut facc = vec![[0f32; GROUP]; n];
    let abase = |tt: usize| if tt < full_tiles { a.q.as_ptr().wrapping_add(tt * TOKENS * k) as *const u8 } else { tail.as_slice().as_ptr() };
    let ubp = ub.as_mut_slice().as_mut_ptr();
    let cb = cbuf.as_mut_slice().as_mut_ptr();
    // SAFETY: the caller vouches for AMX; the tiles are configured first. Every A load reads
    // 16 rows of 64 bytes `k` apart inside `a.q` (a full tile) or `tail` (16 rows of k),
    // every B load 16 lines of 64 bytes inside one unpacked block of `ub`, every C store
    // 1 KiB inside `cbuf`.
    unsafe {
        // Every tile 16 rows of 64 bytes (C: 16 tokens by 16 rows of int32; A: 16 tokens by
        // 64 activations; B: 16 lines of 4 columns by 16 rows).
        TileConfig::FULL.load();
        for g in groups {
            for f in facc.iter_mut() {
                *f = [0f32; GROUP];
            }
            let mut pending: Option<(usize, usize, usize, usize)> = None;
            let mut step = 0;
            for b in 0..nb {
                let panel = p.panel(g, b);
                let ublk = ubp.add(8192 * (b % 2));
                k_unpack::<Q6>(panel, ublk);
                let mut tt = 0;
                while tt < n_tiles {
                    let count = if tt + 1 < n_tiles { 2 } else { 1 };
                    let cs = cb.add(4096 * (step % 2));
                    std::arch::asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
                    for c in 0..4 {
                        let (a0, bh) = (abase(tt).add(256 * b + 64 * c), ublk.add(2048 * c));
                        if count == 2 {
                            std::arch::asm!(
                                "tileloadd tmm4, [{a0} + {lda}*1]",
                                "tileloadd tmm6, [{bh} + {s}*1]",
                                "tdpbssd tmm0, tmm4, tmm6",
                                "tileloadd tmm5, [{a1} + {lda}*1]",
                                "tdpbssd tmm2, tmm5, tmm6",
                                "tileloadd tmm7, [{bl} + {s}*1]",
                                "tdpbssd tmm1, tmm4, tmm7",
                                "tdpbssd tmm3, tmm5, tmm7",
                                a0 = in(reg) a0, a1 = in(reg) abase(tt + 1).add(256 * b + 64 * c), lda = in(reg) k,
                                bh = in(reg) bh, bl = in(reg) bh.add(1024), s = in(reg) 64usize,
                                options(nostack, readonly)
                            );
                        } else {
                            std::arch::asm!(
                                "tileloadd tmm4, [{a0} + {lda}*1]",
                                "tileloadd tmm6, [{bh} + {s}*1]",
                                "tileloadd tmm7, [{bl} + {s}*1]",
                                "tdpbssd tmm0, tmm4, tmm6",
                                "tdpbssd tmm1, tmm4, tmm7",
                                a0 = in(reg) a0, lda = in(reg) k, bh = in(reg) bh, bl = in(reg) bh.add(1024), s = in(reg) 64usize,
                                options(nostack, readonly)
                            );
                        }
                    }
                    std::arch::asm!(
                        "tilestored [{c} + {s}*1], tmm0",
                        "tilestored [{c1} + {s}*1], tmm1",
                        c = in(reg) cs, c1 = in(reg) cs.add(1024), s = in(reg) 64usize,
                        options(nostack)
                    );
                    if count == 2 {
                        std::arch::asm!(
                            "tilestored [{c} + {s}*1], tmm2",
                            "tilestored [{c1} + {s}*1], tmm3",
                            c = in(reg) cs.add(2048), c1 = in(reg) cs.add(3072), s = in(reg) 64usize,
                            options(nostack)
                        );
                    }
                    if let Some((pb, ptt, pcount, pstep)) = pending {
                        k_epilogue::<Q6>(&mut facc, p.panel(g, pb), pb, ptt, pcount, cb.add(4096 * (pstep % 2)), a, bps);
                    }
                    pending = Some((b, tt, count, step));
                    step += 1;
                    tt += count;
                }
            }
            if let Some((pb, ptt, pcount, pstep)) = pending {
                k_epilogue::<Q6>(&mut facc, p.panel(g, pb), pb, ptt, pcount, cb.add(4096 * (pstep % 2)), a, bps);
            }
            for (t, f) in facc.iter().enumerate() {
                store(_mm512_loadu_ps(f.as_ptr()), g, t, rows, out, out_rows);
            }
        }
        std::arch::asm!("tilerelease", options(nostack, nomem));
    }
}

/// Scales the C tiles of one step of [`k_tiles`] (block `b`, `count` token tiles from `tt`,
/// stored at `cs`: `h` then `l` of each) into the float accumulators `facc`, llama.cpp's
/// `acc_C` for the type: `fma(I, d8·d, acc)`, then (Q4_K) `fma(M, (-d8)·dmin, acc)`.
///
/// # Safety
/// As [`k_tiles`]; `panel` is a whole panel and `cs` holds `count` pairs of C tiles.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn k_epilogue<const Q6: bool>(facc: &mut [[f32; GROUP]], panel: *const u8, b: usize, tt: usize, count: usize, cs: *const u8, a: &QuantActs, bps: &[i32]) {
    let (n, nb) = (a.n, a.k / 256);
    // SAFETY: `panel` and `cs` are bounded by the caller; token indices stay below `n`
    // (`a.d` and `bps` bounded by `k_rows`' asserts).
    unsafe {
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(panel.add(if Q6 { Q6K_D } else { Q4K_D }) as *const __m256i));
        let dmin = if Q6 { _mm512_setzero_ps() } else { _mm512_cvtph_ps(_mm256_loadu_si256(panel.add(Q4K_DMIN) as *const __m256i)) };
        let mp = if Q6 { [_mm512_setzero_si512(); 4] } else { q4k_min_pairs(&q4k_scales(panel)) };
        for i in 0..count {
            let c = cs.add(2048 * i);
            for j in 0..TOKENS.min(n - (tt + i) * TOKENS) {
                let t = (tt + i) * TOKENS + j;
                let ch = _mm512_load_si512(c.add(64 * j) as *const _);
                let cl = _mm512_load_si512(c.add(1024 + 64 * j) as *const _);
                let isum = _mm512_add_epi32(_mm512_slli_epi32::<6>(ch), cl);
                let d8 = a.d[t * nb + b];
                let fp = facc[t].as_mut_ptr();
                let mut f = _mm512_loadu_ps(fp);
                f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(_mm512_set1_ps(d8), dw), f);
                if !Q6 {
                    let bp = bps.as_ptr().add((t * nb + b) * 4);
                    let mut m = _mm512_setzero_si512();
                    for (q, mp) in mp.iter().enumerate() {
                        m = _mm512_dpwssd_epi32(m, *mp, _mm512_set1_epi32(*bp.add(q)));
                    }
                    f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(m), _mm512_mul_ps(_mm512_set1_ps(-d8), dmin), f);
                }
                _mm512_storeu_ps(fp, f);
            }
        }
    }
}
