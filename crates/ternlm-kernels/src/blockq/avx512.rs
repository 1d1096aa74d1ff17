//! AVX-512 VNNI kernels for the block types: the 32-wide ones (Q4_0, Q4_1, Q8_0) and the
//! K-quants (Q4_K, Q6_K), each bit-identical to its scalar twin in `blockq`.
//!
//! 32-wide types: `vpdpbusd` on 256-bit vectors multiplies unsigned bytes by signed ones and
//! adds each group of four into an int32 lane: the lanes `maddubs` + `madd` give (exact sums
//! of the same products, with no int16 stage), in one instruction instead of two.
//! Everything around the lanes is the AVX2 level's code ([`super::avx2::q32_rows`]),
//! compiled here with AVX-512 VL, whose 32 vector registers hold the batch kernel's 16
//! accumulators and whose broadcast operands fold each token's scale into its FMA.
//!
//! K-quants: 512-bit `vpmaddubsw` then `vpdpwssd` with the sub-block scales form a block's
//! exact integer lanes for one (row, token) output along 64 columns at a time; the float
//! steps, whose order the scalar code fixes per output, run with the outputs in lanes (Q4_K:
//! 16 outputs per register after summing each output's lanes, [`q4k_rows`]; Q6_K: ggml's 8
//! lanes of two outputs per register, [`q6k_rows`]). Decode and batches share the kernels;
//! a batch unpacks each row's blocks once per group of up to 16 tokens.

// Register tiles are indexed by row and token on purpose: the index form is what maps onto
// the tile's registers.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::avx2::{Q32, Q32Dot, Unpacked, q32_rows};
use crate::act_quant::QuantActs;
use crate::sync_out::SyncOut;

pub(crate) struct Vnni;

impl Q32Dot for Vnni {
    /// 32 vector registers: 16 accumulators and the block's operands.
    const GROUP: usize = 16;

    #[inline(always)]
    unsafe fn lanes<const K: u8>(w: Unpacked, x: *const i8) -> __m256i {
        // SAFETY: the caller bounds the 32 bytes at `x` and runs with AVX-512 VL and VNNI.
        // Signed weights carry their sign over to the activations (`|w|·sign(x, w)`), as at
        // the AVX2 level: offsetting them to unsigned instead costs a correction per token.
        unsafe {
            let xv = _mm256_loadu_si256(x as *const __m256i);
            let xv = if K == 1 { xv } else { _mm256_sign_epi8(xv, w[1]) };
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), w[0], xv)
        }
    }
}

/// [`q32_rows`] at the AVX-512 level.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn q32_rows_avx512(kind: Q32, w: &[u8], row_bytes: usize, rows: std::ops::Range<usize>, a: &QuantActs, out: SyncOut, out_rows: usize) {
    // SAFETY: this function runs with everything `Vnni` needs (AVX2, FMA, F16C, AVX-512 VL
    // and VNNI).
    unsafe { q32_rows::<Vnni>(kind, w, row_bytes, rows, a, out, out_rows) }
}

/// How far ahead of the current block the one-row-at-a-time K-quant kernels prefetch, in
/// bytes (as at the AVX2 level).
const PREFETCH: usize = 1024;
/// Tokens a K-quant batch takes per pass over its rows, so that their activations stay in
/// cache while every row meets them.
const KQ_CHUNK: usize = 64;
/// Bytes of weight rows a K-quant batch meets each group of tokens with before the next
/// group: the band stays in L1/L2 while a group's activations (16 tokens) stay in L1.
const ROW_BAND: usize = 16 * 1024;
/// Outputs one K-quant tile holds: one int32 or f32 lane each in a 512-bit register.
const LANES: usize = 16;

/// A Q4_K tile's token side for one block, a lane per output (see [`q4k_tile`]).
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Q4kToks {
    /// The token's activation scale.
    d8: [f32; LANES],
    /// `[i]`: the token's sums of sub-blocks `2i` and `2i + 1` (each `Σq` over 32 values,
    /// within int16) packed as two int16, the pair `vpdpwssd` meets the minima with.
    bp: [[i32; LANES]; 4],
}

/// Per-thread scratch of the K-quant kernels.
#[derive(Default)]
struct KScratch {
    /// `[group · nb + block]`.
    q4k: Vec<Q4kToks>,
    /// `[(group · nb + block) · 8 + pair]`: tokens `2·pair` and `2·pair + 1` of the group's
    /// activation scales, 8 lanes each (see [`q6k_tile`]).
    q6k: Vec<[f32; LANES]>,
    /// A chunk's activations moved to unsigned (`x + 128`) for [`q6k_tile`].
    xu: Vec<u8>,
    /// `[block · 4 + p]`: decode's `-32·Σx` over each 4 values (see [`q6k_decode`]).
    x4: Vec<__m512i>,
}

thread_local! {
    static K_SCRATCH: std::cell::RefCell<KScratch> = std::cell::RefCell::new(KScratch::default());
}

/// Sums each of 16 vectors' lanes: lane `i` of the result is the sum of `v[i]`'s lanes, in
/// 15 adds and 30 shuffles instead of 16 reductions of 8 steps each.
#[inline(always)]
unsafe fn reduce16(v: [__m512i; LANES]) -> __m512i {
    // SAFETY: register-only intrinsics; the caller runs with AVX-512 F.
    unsafe {
        // Pairs: 128-bit chunk c of each holds two partial sums of each of its two vectors.
        // (Loops, not closures: a closure does not inherit the caller's target features and
        // may be left out of line, with every intrinsic a call.)
        let mut a = [_mm512_setzero_si512(); 8];
        for i in 0..8 {
            a[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]));
        }
        // Quads: chunk c of b[i] holds chunk c's sums of v[4i..4i + 4], in order.
        let mut b = [_mm512_setzero_si512(); 4];
        for i in 0..4 {
            b[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_epi64(a[2 * i], a[2 * i + 1]));
        }
        // Then the four chunks of each quad, two at a time.
        let c0 = _mm512_add_epi32(_mm512_shuffle_i32x4::<0x88>(b[0], b[1]), _mm512_shuffle_i32x4::<0xDD>(b[0], b[1]));
        let c1 = _mm512_add_epi32(_mm512_shuffle_i32x4::<0x88>(b[2], b[3]), _mm512_shuffle_i32x4::<0xDD>(b[2], b[3]));
        _mm512_add_epi32(_mm512_shuffle_i32x4::<0x88>(c0, c1), _mm512_shuffle_i32x4::<0xDD>(c0, c1))
    }
}

/// The f16 at `p` converted and broadcast to 16 lanes.
#[inline(always)]
unsafe fn f16_splat16(p: *const u8) -> __m512 {
    // SAFETY: the caller bounds the two bytes at `p` and runs with AVX-512 F.
    unsafe { _mm512_cvtph_ps(_mm256_set1_epi16((p as *const i16).read_unaligned())) }
}

/// Indices for `vpermw` that spread 16-bit scales over a 512-bit register of int16 pairs:
/// `Q4K_SC[p]` puts scale `2p` under elements `0..32` and `2p + 1` under `32..64` (two
/// 32-element sub-blocks), `Q6K_SC[p]` scales `4p..4p + 4` under 16 elements each.
const fn scale_index(per: usize, first: usize) -> [u16; 32] {
    let mut m = [0u16; 32];
    let mut i = 0;
    while i < 32 {
        m[i] = (first + i / per) as u16;
        i += 1;
    }
    m
}
static Q4K_SC: [[u16; 32]; 4] = [scale_index(16, 0), scale_index(16, 2), scale_index(16, 4), scale_index(16, 6)];
static Q6K_SC: [[u16; 32]; 4] = [scale_index(8, 0), scale_index(8, 4), scale_index(8, 8), scale_index(8, 12)];

/// A Q4_K block's 6-bit scales and minima unpacked (ggml's `utmp` shuffle): bytes `0..8` are
/// the 8 sub-blocks' scales, bytes `8..16` their minima (see `blockq::q4k_scale_min`).
#[inline(always)]
unsafe fn q4k_scale_bytes(blk: *const u8) -> [u32; 4] {
    // SAFETY: the caller bounds the block's 144 bytes.
    let s: [u32; 3] = std::array::from_fn(|i| unsafe { (blk.add(4 + 4 * i) as *const u32).read_unaligned() });
    let (k1, k2, k3) = (0x3f3f_3f3f, 0x0f0f_0f0f, 0x0303_0303);
    [s[0] & k1, (s[2] & k2) | (((s[0] >> 6) & k3) << 4), s[1] & k1, ((s[2] >> 4) & k2) | (((s[1] >> 6) & k3) << 4)]
}

/// The minima pairs `(m[2i], m[2i + 1])` as int16 pairs, from [`q4k_scale_bytes`].
#[inline(always)]
fn q4k_min_pairs(u: [u32; 4]) -> [u32; 4] {
    let pair = |x: u32| (x & 0xFF) | ((x & 0xFF00) << 8);
    [pair(u[2]), pair(u[2] >> 16), pair(u[3]), pair(u[3] >> 16)]
}

/// A Q4_K block's weights (0..15) and scales, a register per two sub-blocks: `w[p]` holds
/// sub-block `2p` (low nibbles of `qs[32p..32p + 32]`) then `2p + 1` (their high nibbles),
/// which meet the 64 contiguous activations at `64p`; `s[p]` their scales as int16.
#[inline(always)]
unsafe fn q4k_block(blk: *const u8, u: [u32; 4]) -> ([__m512i; 4], [__m512i; 4]) {
    // SAFETY: the caller bounds the block's 144 bytes and runs with AVX-512 F and BW.
    unsafe {
        let m4 = _mm512_set1_epi8(0x0F);
        let (mut w, mut s) = ([_mm512_setzero_si512(); 4], [_mm512_setzero_si512(); 4]);
        let sm = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_set_epi32(u[3] as i32, u[2] as i32, u[1] as i32, u[0] as i32)));
        for p in 0..4 {
            let q = _mm256_loadu_si256(blk.add(16 + 32 * p) as *const __m256i);
            w[p] = _mm512_and_si512(_mm512_inserti64x4::<1>(_mm512_castsi256_si512(q), _mm256_srli_epi16::<4>(q)), m4);
            s[p] = _mm512_permutexvar_epi16(_mm512_loadu_si512(Q4K_SC[p].as_ptr() as *const _), sm);
        }
        (w, s)
    }
}

/// One Q4_K block against the 256 activations at `x`: 16 int32 lanes whose sum is the
/// block's `Σ scale·Σ q·x` (pairs of products within int16: 2·15·128).
#[inline(always)]
unsafe fn q4k_dot(w: &[__m512i; 4], s: &[__m512i; 4], x: *const i8) -> __m512i {
    // SAFETY: the caller bounds the 256 bytes at `x` and runs with AVX-512 BW and VNNI.
    unsafe {
        let mut acc = _mm512_setzero_si512();
        for p in 0..4 {
            let xv = _mm512_loadu_si512(x.add(64 * p) as *const _);
            acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(w[p], xv), s[p]);
        }
        acc
    }
}

/// `out.set(t·out_rows + r, W[r] · x[t])` for every row in `rows` of a Q4_K matrix and every
/// token of `a`, bit for bit `blockq::dot_q4k`. Tiles of up to 16 (row, token) outputs, one
/// lane each: the integer block sums are formed along the columns (each output's in a
/// register of its own), summed across their lanes together ([`reduce16`]), and the float
/// steps then run on the tile's 16 lanes at once, each lane in the scalar order. Decode takes
/// 16 rows per tile, batches of up to 8 tokens fewer rows, larger batches one row and up to
/// 16 tokens (each row's blocks unpacked once per group).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn q4k_rows(w: &[u8], row_bytes: usize, rows: std::ops::Range<usize>, a: &QuantActs, out: SyncOut, out_rows: usize) {
    let (n, k) = (a.n, a.k);
    let nb = k / 256;
    assert!(k == nb * 256 && row_bytes >= nb * 144 && w.len() >= rows.end * row_bytes);
    assert!(a.q.len() >= n * k && a.d.len() >= n * nb && a.bsums.len() >= n * nb * 16);
    assert!(rows.end <= out_rows && out_rows.checked_mul(n).is_some());
    if rows.is_empty() || n == 0 {
        return;
    }
    // Taken out rather than borrowed in a closure: a closure would not inherit this
    // function's target features.
    let mut sc = K_SCRATCH.take();
    // Balanced chunks and groups: 65 tokens run as 33 + 32, and 17 as 9 + 8.
    let chunk = n.div_ceil(n.div_ceil(KQ_CHUNK));
    for c0 in (0..n).step_by(chunk) {
        let cn = (n - c0).min(chunk);
        let groups = cn.div_ceil(LANES);
        let size = cn.div_ceil(groups);
        // Rows per tile: as many as fill the lanes with the group's tokens.
        let r_tile = match size {
            1 => 16,
            2 => 8,
            3 | 4 => 4,
            5..=8 => 2,
            _ => 1,
        };
        sc.q4k.clear();
        sc.q4k.resize(groups * nb, Q4kToks::default());
        for g in 0..groups {
            let (t0, tg) = (c0 + g * size, size.min(cn - g * size));
            for b in 0..nb {
                let e = &mut sc.q4k[g * nb + b];
                for l in 0..LANES {
                    // Lane l is token l % tg of row l / tg (the lanes past the tile repeat
                    // tokens; they are never stored).
                    let t = t0 + l % tg;
                    e.d8[l] = a.d[t * nb + b];
                    let bs = &a.bsums[(t * nb + b) * 16..(t * nb + b + 1) * 16];
                    for i in 0..4 {
                        let (lo, hi) = (bs[4 * i] + bs[4 * i + 1], bs[4 * i + 2] + bs[4 * i + 3]);
                        e.bp[i][l] = (lo as u16 as u32 | ((hi as u16 as u32) << 16)) as i32;
                    }
                }
            }
        }
        let band = (ROW_BAND / row_bytes / r_tile).max(1) * r_tile;
        for rb in (rows.start..rows.end).step_by(band) {
            for g in 0..groups {
                let (t0, tg) = (c0 + g * size, size.min(cn - g * size));
                let toks = &sc.q4k[g * nb..(g + 1) * nb];
                let end = rows.end;
                for r in (rb..(rb + band).min(end)).step_by(r_tile) {
                    // SAFETY: the asserts above bound every row (tiles clamp theirs to `end`), token
                    // and block; this function runs with every feature the tile needs.
                    unsafe {
                        match (r_tile, tg) {
                            (16, _) => q4k_tile::<16, 1>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (8, 1) => q4k_tile::<8, 1>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (8, _) => q4k_tile::<8, 2>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (4, 1) => q4k_tile::<4, 1>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (4, 2) => q4k_tile::<4, 2>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (4, 3) => q4k_tile::<4, 3>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (4, _) => q4k_tile::<4, 4>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (2, 1) => q4k_tile::<2, 1>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (2, 2) => q4k_tile::<2, 2>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (2, 3) => q4k_tile::<2, 3>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (2, 4) => q4k_tile::<2, 4>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (2, 5) => q4k_tile::<2, 5>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (2, 6) => q4k_tile::<2, 6>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (2, 7) => q4k_tile::<2, 7>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (2, _) => q4k_tile::<2, 8>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (_, 1) => q4k_tile::<1, 1>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (_, 2) => q4k_tile::<1, 2>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (_, 3) => q4k_tile::<1, 3>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (_, 4) => q4k_tile::<1, 4>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (_, 5) => q4k_tile::<1, 5>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (_, 6) => q4k_tile::<1, 6>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (_, 7) => q4k_tile::<1, 7>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (_, 8) => q4k_tile::<1, 8>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (_, 9) => q4k_tile::<1, 9>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (_, 10) => q4k_tile::<1, 10>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (_, 11) => q4k_tile::<1, 11>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (_, 12) => q4k_tile::<1, 12>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (_, 13) => q4k_tile::<1, 13>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (_, 14) => q4k_tile::<1, 14>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (_, 15) => q4k_tile::<1, 15>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                            (_, _) => q4k_tile::<1, 16>(w, row_bytes, r, end, a, t0, toks, out, out_rows),
                        }
                    }
                }
            }
        }
    }
    K_SCRATCH.set(sc);
}

/// Rows `r0..min(r0 + R, end)` against tokens `t0..t0 + T` (`R·T ≤ 16`; lane `i·T + t` is row
/// `r0 + i`, token `t0 + t`), given the tokens' lanes per block in `toks`. Per lane and block
/// it computes what `blockq::dot_q4k` does: `d = d_w·d_x`, `dmin = m_w·d_x`, then
/// `sum += d·acc - dmin·mins`, as separate roundings (the scalar code has no FMA there).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn q4k_tile<const R: usize, const T: usize>(w: &[u8], row_bytes: usize, r0: usize, end: usize, a: &QuantActs, t0: usize, toks: &[Q4kToks], out: SyncOut, out_rows: usize) {
    let (k, nb) = (a.k, a.k / 256);
    // SAFETY: rows below `end` hold nb blocks and tokens t0..t0 + T nb blocks of values (the
    // caller checked); rows past `end` read the last row instead; prefetches of any address
    // are harmless.
    unsafe {
        let row: [*const u8; R] = std::array::from_fn(|i| w.as_ptr().add((r0 + i).min(end - 1) * row_bytes));
        // The hardware prefetcher follows interleaved rows poorly: several rows at a time
        // prefetch the tile two on in step, a block's share of it per block.
        let ahead = w.as_ptr().wrapping_add((r0 + 2 * R) * row_bytes);
        let lines = (R * 144).div_ceil(64);
        let x = a.q.as_ptr().add(t0 * k);
        let row_of: [u32; LANES] = std::array::from_fn(|l| (l / T).min(R - 1) as u32);
        let row_of = _mm512_loadu_si512(row_of.as_ptr() as *const _);
        let mut sum = _mm512_setzero_ps();
        for b in 0..nb {
            if R > 1 {
                for j in 0..lines {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(b * R * 144 + j * 64) as *const i8);
                }
            } else {
                _mm_prefetch::<_MM_HINT_T0>(row[0].wrapping_add(b * 144 + PREFETCH) as *const i8);
            }
            let mut acc = [_mm512_setzero_si512(); LANES];
            // Per row: its scales (f16 d, dmin) and minima pairs, for the lanes below.
            let (mut dw, mut mw, mut mp) = ([0u16; LANES], [0u16; LANES], [[0u32; LANES]; 4]);
            let mut mp1 = [0u32; 4];
            for i in 0..R {
                let blk = row[i].add(b * 144);
                let u = q4k_scale_bytes(blk);
                let (wv, sv) = q4k_block(blk, u);
                for t in 0..T {
                    acc[i * T + t] = q4k_dot(&wv, &sv, x.add(t * k + b * 256));
                }
                let m = q4k_min_pairs(u);
                if R == 1 {
                    mp1 = m;
                } else {
                    dw[i] = (blk as *const u16).read_unaligned();
                    mw[i] = (blk.add(2) as *const u16).read_unaligned();
                    for j in 0..4 {
                        mp[j][i] = m[j];
                    }
                }
            }
            let accv = reduce16(acc);
            let mut mpv = [_mm512_setzero_si512(); 4];
            let (dwv, mwv) = if R == 1 {
                for j in 0..4 {
                    mpv[j] = _mm512_set1_epi32(mp1[j] as i32);
                }
                (f16_splat16(row[0].add(b * 144)), f16_splat16(row[0].add(b * 144 + 2)))
            } else {
                for j in 0..4 {
                    mpv[j] = _mm512_permutexvar_epi32(row_of, _mm512_loadu_si512(mp[j].as_ptr() as *const _));
                }
                (
                    _mm512_permutexvar_ps(row_of, _mm512_cvtph_ps(_mm256_loadu_si256(dw.as_ptr() as *const __m256i))),
                    _mm512_permutexvar_ps(row_of, _mm512_cvtph_ps(_mm256_loadu_si256(mw.as_ptr() as *const __m256i))),
                )
            };
            let tk = toks.get_unchecked(b);
            let d8 = _mm512_loadu_ps(tk.d8.as_ptr());
            let mut mins = _mm512_setzero_si512();
            for j in 0..4 {
                mins = _mm512_dpwssd_epi32(mins, mpv[j], _mm512_loadu_si512(tk.bp[j].as_ptr() as *const _));
            }
            let (d, dmin) = (_mm512_mul_ps(dwv, d8), _mm512_mul_ps(mwv, d8));
            sum = _mm512_add_ps(sum, _mm512_sub_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(accv)), _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(mins))));
        }
        let mut s = [0f32; LANES];
        _mm512_storeu_ps(s.as_mut_ptr(), sum);
        for i in 0..R {
            if r0 + i < end {
                for t in 0..T {
                    out.set((t0 + t) * out_rows + r0 + i, s[i * T + t]);
                }
            }
        }
    }
}

/// A Q6_K block's weights as signed values (`q - 32`), a register per two 32-element runs
/// (`w[p]` holds runs `2p` and `2p + 1`, which meet the 64 contiguous activations at `64p`),
/// and their scales as int16 (`s[p]`: each sub-block's under its 16 elements).
#[inline(always)]
unsafe fn q6k_block(blk: *const u8) -> ([__m512i; 4], [__m512i; 4]) {
    // SAFETY: the caller bounds the block's 210 bytes and runs with AVX-512 F and BW.
    unsafe {
        let (m4, m30, m32) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x30), _mm512_set1_epi8(32));
        let mut w = [_mm512_setzero_si512(); 4];
        for half in 0..2 {
            // Runs 4h..4h + 4: low nibbles of ql[0..32], ql[32..64], then their high
            // nibbles, over 2-bit fields 0, 1, 2, 3 of qh.
            let ql = _mm512_loadu_si512(blk.add(64 * half) as *const _);
            let qh = _mm256_loadu_si256(blk.add(128 + 32 * half) as *const __m256i);
            let qh = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qh), _mm256_srli_epi16::<2>(qh));
            let lo = _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_and_si512(_mm512_slli_epi16::<4>(qh), m30));
            let hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4), _mm512_and_si512(qh, m30));
            w[2 * half] = _mm512_sub_epi8(lo, m32);
            w[2 * half + 1] = _mm512_sub_epi8(hi, m32);
        }
        let sc = _mm512_castsi256_si512(_mm256_cvtepi8_epi16(_mm_loadu_si128(blk.add(192) as *const __m128i)));
        let mut s = [_mm512_setzero_si512(); 4];
        for p in 0..4 {
            s[p] = _mm512_permutexvar_epi16(_mm512_loadu_si512(Q6K_SC[p].as_ptr() as *const _), sc);
        }
        (w, s)
    }
}

/// `out.set(t·out_rows + r, W[r] · x[t])` for every row in `rows` of a Q6_K matrix and every
/// token of `a`, bit for bit `blockq::dot_q6k`. One row at a time against a group of up to 16
/// tokens, the row's blocks unpacked once per group. Activations become unsigned (`x + 128`)
/// so one `vpmaddubsw` multiplies them with the signed weights, and `vpdpwssd` applies the
/// scales; the `128·Σ scale·w` this adds depends only on the row and starts each token's
/// sum negated. A block's 16 int32 lanes hold ggml's 8 lanes for even and odd runs; two
/// tokens' folded lanes share one register for the float steps (per lane, the FMA of
/// `d_x·d_w` in block order, then [`super::hsum_float_8`]).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn q6k_rows(w: &[u8], row_bytes: usize, rows: std::ops::Range<usize>, a: &QuantActs, out: SyncOut, out_rows: usize) {
    let (n, k) = (a.n, a.k);
    let nb = k / 256;
    assert!(k == nb * 256 && row_bytes >= nb * 210 && w.len() >= rows.end * row_bytes);
    assert!(a.q.len() >= n * k && a.d.len() >= n * nb);
    assert!(rows.end <= out_rows && out_rows.checked_mul(n).is_some());
    if rows.is_empty() || n == 0 {
        return;
    }
    if n == 1 {
        // SAFETY: the asserts above bound every row, block and the token's values.
        unsafe { q6k_decode(w, row_bytes, rows, a, out) };
        return;
    }
    // Taken out rather than borrowed in a closure: a closure would not inherit this
    // function's target features.
    let mut sc = K_SCRATCH.take();
    let chunk = n.div_ceil(n.div_ceil(KQ_CHUNK));
    for c0 in (0..n).step_by(chunk) {
        let cn = (n - c0).min(chunk);
        let groups = cn.div_ceil(LANES);
        let size = cn.div_ceil(groups);
        sc.xu.clear();
        sc.xu.extend(a.q[c0 * k..(c0 + cn) * k].iter().map(|&v| v as u8 ^ 0x80));
        sc.q6k.clear();
        sc.q6k.resize(groups * nb * 8, [0.0; LANES]);
        for g in 0..groups {
            let (t0, tg) = (c0 + g * size, size.min(cn - g * size));
            for b in 0..nb {
                for t in 0..tg {
                    let lanes = &mut sc.q6k[(g * nb + b) * 8 + t / 2][(t % 2) * 8..(t % 2) * 8 + 8];
                    lanes.fill(a.d[(t0 + t) * nb + b]);
                }
            }
        }
        let band = (ROW_BAND / row_bytes).max(1);
        for rb in (rows.start..rows.end).step_by(band) {
            for g in 0..groups {
                let (t0, tg) = (c0 + g * size, size.min(cn - g * size));
                let toks = &sc.q6k[g * nb * 8..(g + 1) * nb * 8];
                let xu = &sc.xu[(t0 - c0) * k..(t0 - c0 + tg) * k];
                for r in rb..(rb + band).min(rows.end) {
                    // SAFETY: the asserts above bound row r and every block; `xu` holds the
                    // group's tg tokens and `toks` its nb·8 lane sets; this function runs with
                    // every feature the tile needs.
                    unsafe {
                        match tg {
                            1 => q6k_tile::<1>(w, row_bytes, r, k, xu, toks, t0, out, out_rows),
                            2 => q6k_tile::<2>(w, row_bytes, r, k, xu, toks, t0, out, out_rows),
                            3 => q6k_tile::<3>(w, row_bytes, r, k, xu, toks, t0, out, out_rows),
                            4 => q6k_tile::<4>(w, row_bytes, r, k, xu, toks, t0, out, out_rows),
                            5 => q6k_tile::<5>(w, row_bytes, r, k, xu, toks, t0, out, out_rows),
                            6 => q6k_tile::<6>(w, row_bytes, r, k, xu, toks, t0, out, out_rows),
                            7 => q6k_tile::<7>(w, row_bytes, r, k, xu, toks, t0, out, out_rows),
                            8 => q6k_tile::<8>(w, row_bytes, r, k, xu, toks, t0, out, out_rows),
                            9 => q6k_tile::<9>(w, row_bytes, r, k, xu, toks, t0, out, out_rows),
                            10 => q6k_tile::<10>(w, row_bytes, r, k, xu, toks, t0, out, out_rows),
                            11 => q6k_tile::<11>(w, row_bytes, r, k, xu, toks, t0, out, out_rows),
                            12 => q6k_tile::<12>(w, row_bytes, r, k, xu, toks, t0, out, out_rows),
                            13 => q6k_tile::<13>(w, row_bytes, r, k, xu, toks, t0, out, out_rows),
                            14 => q6k_tile::<14>(w, row_bytes, r, k, xu, toks, t0, out, out_rows),
                            15 => q6k_tile::<15>(w, row_bytes, r, k, xu, toks, t0, out, out_rows),
                            _ => q6k_tile::<16>(w, row_bytes, r, k, xu, toks, t0, out, out_rows),
                        }
                    }
                }
            }
        }
    }
    K_SCRATCH.set(sc);
}

/// Row `r` against tokens `t0..t0 + T` (`T` ≤ 16): `xu` holds their unsigned activations,
/// `toks` their scales per block and token pair (see [`KScratch::q6k`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn q6k_tile<const T: usize>(w: &[u8], row_bytes: usize, r: usize, k: usize, xu: &[u8], toks: &[[f32; LANES]], t0: usize, out: SyncOut, out_rows: usize) {
    let nb = k / 256;
    // SAFETY: the caller bounds row r (nb blocks), `xu` (T tokens of k values) and `toks`
    // (nb·8 entries); prefetches of any address are harmless.
    unsafe {
        let row = w.as_ptr().add(r * row_bytes);
        let x = xu.as_ptr();
        let k80 = _mm512_set1_epi8(0x80u8 as i8);
        let mut accf = [_mm512_setzero_ps(); LANES / 2];
        for b in 0..nb {
            let blk = row.add(b * 210);
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH) as *const i8);
            let (wv, sv) = q6k_block(blk);
            let mut corr = _mm512_setzero_si512();
            for p in 0..4 {
                corr = _mm512_dpwssd_epi32(corr, _mm512_maddubs_epi16(k80, wv[p]), sv[p]);
            }
            let start = _mm512_sub_epi32(_mm512_setzero_si512(), corr);
            let dw = f16_splat16(blk.add(208));
            for q in 0..T.div_ceil(2) {
                let a0 = q6k_dot(start, &wv, &sv, x.add(2 * q * k + b * 256));
                let a1 = if 2 * q + 1 < T { q6k_dot(start, &wv, &sv, x.add((2 * q + 1) * k + b * 256)) } else { _mm512_setzero_si512() };
                // Even runs' lanes plus odd runs' lanes, token 2q in the low half.
                let lanes = _mm512_add_epi32(_mm512_shuffle_i64x2::<0x44>(a0, a1), _mm512_shuffle_i64x2::<0xEE>(a0, a1));
                let d = _mm512_mul_ps(_mm512_loadu_ps(toks.get_unchecked(b * 8 + q).as_ptr()), dw);
                accf[q] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(lanes), accf[q]);
            }
        }
        for q in 0..T.div_ceil(2) {
            let mut s = [0f32; LANES];
            _mm512_storeu_ps(s.as_mut_ptr(), accf[q]);
            for h in 0..2 {
                if 2 * q + h < T {
                    let l: [f32; 8] = std::array::from_fn(|i| s[8 * h + i]);
                    out.set((t0 + 2 * q + h) * out_rows + r, super::hsum_float_8(l));
                }
            }
        }
    }
}

/// One Q6_K block against the 256 unsigned activations at `x`, added to `start`: pairs of
/// products stay within int16 (2·255·32).
#[inline(always)]
unsafe fn q6k_dot(start: __m512i, w: &[__m512i; 4], s: &[__m512i; 4], x: *const u8) -> __m512i {
    // SAFETY: the caller bounds the 256 bytes at `x` and runs with AVX-512 BW and VNNI.
    unsafe {
        let mut acc = start;
        for p in 0..4 {
            let xv = _mm512_loadu_si512(x.add(64 * p) as *const _);
            acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(xv, w[p]), s[p]);
        }
        acc
    }
}

/// Decode's Q6_K rows: with one token the row's correction term of [`q6k_tile`] would cost
/// as much as the product itself, so the weights stay unsigned (0..63, pairs of products
/// within int16: 2·63·128) and the activations signed, and the `-32·Σ scale·x` per lane comes
/// from the token's sums of each 4 values, made once (`-32·Σx` within int16), met with the
/// row's scales by one `vpdpwssd` per 64 columns. The float steps are [`q6k_tile`]'s.
#[inline(always)]
unsafe fn q6k_decode(w: &[u8], row_bytes: usize, rows: std::ops::Range<usize>, a: &QuantActs, out: SyncOut) {
    let nb = a.k / 256;
    // SAFETY: the caller bounds every row in `rows` (nb blocks) and the token's nb·256
    // values, and runs with AVX-512 F, BW and VNNI; prefetches of any address are harmless.
    unsafe {
        let x = a.q.as_ptr();
        let mut sc = K_SCRATCH.take();
        let x4 = &mut sc.x4;
        x4.clear();
        for i in 0..nb * 4 {
            let s4 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1), _mm512_loadu_si512(x.add(64 * i) as *const _));
            x4.push(_mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32::<5>(s4)));
        }
        let (m4, m30) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x30));
        for r in rows {
            let row = w.as_ptr().add(r * row_bytes);
            let mut accf = _mm512_setzero_ps();
            for b in 0..nb {
                let blk = row.add(b * 210);
                _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH) as *const i8);
                let sc = _mm512_castsi256_si512(_mm256_cvtepi8_epi16(_mm_loadu_si128(blk.add(192) as *const __m128i)));
                // Two chains of dependent `vpdpwssd` instead of one.
                let (mut acc, mut corr) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                for half in 0..2 {
                    // As in `q6k_block`, without the offset.
                    let ql = _mm512_loadu_si512(blk.add(64 * half) as *const _);
                    let qh = _mm256_loadu_si256(blk.add(128 + 32 * half) as *const __m256i);
                    let qh = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qh), _mm256_srli_epi16::<2>(qh));
                    let lo = _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_and_si512(_mm512_slli_epi16::<4>(qh), m30));
                    let hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4), _mm512_and_si512(qh, m30));
                    for (j, q) in [lo, hi].into_iter().enumerate() {
                        let p = 2 * half + j;
                        let s16 = _mm512_permutexvar_epi16(_mm512_loadu_si512(Q6K_SC[p].as_ptr() as *const _), sc);
                        // Each int32 lane's scale as an int16 pair (scale, 0).
                        let s32 = _mm512_maskz_mov_epi16(0x5555_5555, s16);
                        let xv = _mm512_loadu_si512(x.add(b * 256 + 64 * p) as *const _);
                        acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(q, xv), s16);
                        corr = _mm512_dpwssd_epi32(corr, *x4.get_unchecked(b * 4 + p), s32);
                    }
                }
                let acc = _mm512_add_epi32(acc, corr);
                let lanes = _mm512_add_epi32(acc, _mm512_shuffle_i64x2::<0xEE>(acc, acc));
                let d = _mm512_mul_ps(_mm512_set1_ps(*a.d.get_unchecked(b)), f16_splat16(blk.add(208)));
                accf = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(lanes), accf);
            }
            let mut s = [0f32; LANES];
            _mm512_storeu_ps(s.as_mut_ptr(), accf);
            let l: [f32; 8] = std::array::from_fn(|i| s[i]);
            out.set(r, super::hsum_float_8(l));
        }
        K_SCRATCH.set(sc);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BlockKind, PreparedActs};
    use super::*;
    use crate::isa::Isa;
    use crate::pool::ThreadPool;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The kernels called on any row range (ragged tile starts and ends) give the scalar
        /// kernel's bits for every output they own and leave the others alone; token counts
        /// reach past a chunk of 64 and every tile shape.
        #[test]
        fn k_quant_kernels_match_scalar(
            q4k in any::<bool>(),
            rows in 1usize..70,
            blocks in 1usize..4,
            n in prop_oneof![1usize..=17, 60usize..=140],
            start in 0usize..40,
            seed in any::<u64>(),
        ) {
            if Isa::detect() < Isa::Avx512 {
                return Ok(());
            }
            let kind = if q4k { BlockKind::Q4K } else { BlockKind::Q6K };
            let m = crate::blockq::tests::random_matrix(kind, rows, blocks, seed);
            let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let x: Vec<f32> = (0..n * m.cols())
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % 2001) as f32 / 100.0 - 10.0
                })
                .collect();
            let mut acts = PreparedActs::default();
            m.prepare_at(Isa::Scalar, &x, &mut acts);
            let mut want = vec![0f32; n * rows];
            m.gemm_at(Isa::Scalar, &ThreadPool::new(1), &acts, &mut want);
            let range = start.min(rows)..rows;
            let mut got = vec![f32::NAN; n * rows];
            let out = SyncOut::new(&mut got);
            // SAFETY: the CPU has the AVX-512 level (checked above).
            unsafe {
                if q4k {
                    q4k_rows(m.data.bytes(), m.row_bytes, range.clone(), &acts.quant, out, rows);
                } else {
                    q6k_rows(m.data.bytes(), m.row_bytes, range.clone(), &acts.quant, out, rows);
                }
            }
            for t in 0..n {
                for r in 0..rows {
                    let (g, w) = (got[t * rows + r], want[t * rows + r]);
                    if range.contains(&r) {
                        prop_assert_eq!(g.to_bits(), w.to_bits(), "{:?} row {} token {} of {}: {} vs {}", kind, r, t, n, g, w);
                    } else {
                        prop_assert!(g.is_nan(), "{:?} wrote row {} outside {:?}", kind, r, range);
                    }
                }
            }
        }
    }
}
