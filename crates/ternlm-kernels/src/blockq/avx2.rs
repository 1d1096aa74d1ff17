//! Hand-written AVX2 dot products for the block types that carry real models' weight:
//! Q6_K (output heads), Q8_0, Q4_0 and Q4_1 (SmolLM2); F16 lives in [`crate::f16_ops`]. Each
//! returns exactly what its portable twin in [`crate::blockq`] returns: integer block sums are
//! exact, and the float accumulation follows ggml's AVX2 lane order (see `blockq::lanes8`).
//!
//! The 32-wide types (Q4_0, Q4_1, Q8_0) have two kernels, both generic over how a level forms
//! a block's integer lanes ([`Q32Dot`]; the AVX-512 level's is in `blockq::avx512`): one for
//! decode and the smallest batches, several rows at a time to hide FMA latency, and one for
//! batches, each block unpacked once for up to 16 tokens. Batches are bound by arithmetic:
//! per token and block there is one integer dot product, one conversion and one FMA that the
//! float order allows no way around, and the kernels spend little else.

// Register tiles are indexed by row and token on purpose: the index form is what maps onto
// the tile's registers.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use crate::act_quant::QuantActs;
use crate::sync_out::SyncOut;

/// How far ahead of the current block the row-at-a-time kernels prefetch, in bytes: the
/// hardware prefetcher alone left single-thread decode at a third of the core's read
/// bandwidth.
const PREFETCH: usize = 1024;

/// The f16 at byte `i` of `b`, converted with F16C in line (`half`'s conversion checks the
/// CPU at run time and is not inlined: per block that costs more than the block's math).
#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    let bits = u16::from_le_bytes([b[i], b[i + 1]]);
    // SAFETY: every caller is a function compiled with F16C enabled.
    unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits)))) }
}

#[inline(always)]
unsafe fn hsum_float_8(v: __m256) -> f32 {
    // SAFETY: register-only intrinsics. The same adds in the same order as
    // `blockq::hsum_float_8` (upper + lower half, then pairs, then the last two).
    unsafe {
        let r = _mm_add_ps(_mm256_extractf128_ps::<1>(v), _mm256_castps256_ps128(v));
        let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
        _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)))
    }
}

/// The f16 at `p`, converted with F16C in line.
#[inline(always)]
unsafe fn f16_ptr(p: *const u8) -> f32 {
    // SAFETY: the caller bounds the two bytes at `p`; the function runs with F16C enabled.
    unsafe {
        let bits = u16::from_le_bytes([*p, *p.add(1)]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    }
}

/// The f16 at `p` converted and broadcast to 8 lanes: a word broadcast straight from memory
/// and one vector conversion, fewer instructions than a scalar conversion and a broadcast.
#[inline(always)]
unsafe fn f16_splat(p: *const u8) -> __m256 {
    // SAFETY: the caller bounds the two bytes at `p`; the function runs with AVX2 and F16C.
    unsafe { _mm256_cvtph_ps(_mm_set1_epi16((p as *const i16).read_unaligned())) }
}

/// The 32-wide block types (one f16 scale per block; Q4_1 also an f16 minimum).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Q32 {
    Q4_0,
    Q4_1,
    Q8_0,
}

impl Q32 {
    /// The 32-wide type `kind` is, if it is one.
    pub(crate) fn of(kind: super::BlockKind) -> Option<Self> {
        match kind {
            super::BlockKind::Q4_0 => Some(Self::Q4_0),
            super::BlockKind::Q4_1 => Some(Self::Q4_1),
            super::BlockKind::Q8_0 => Some(Self::Q8_0),
            _ => None,
        }
    }
}

/// A block's bytes. Kernels take the type as a number `K` (0 = Q4_0, 1 = Q4_1, 2 = Q8_0) so
/// that each type's copy folds its branches away.
const fn q32_bytes(k: u8) -> usize {
    match k {
        0 => 18,
        1 => 20,
        _ => 34,
    }
}

/// A block's weights unpacked once for every token it meets: `[w, w]` for Q4_1's unsigned
/// nibbles, `[|w|, w]` for the signed types (see [`Q32Dot::lanes`]).
pub(crate) type Unpacked = [__m256i; 2];

/// Unpacks the type-`K` block at `blk`.
#[inline(always)]
unsafe fn unpack<const K: u8>(blk: *const u8) -> Unpacked {
    // SAFETY: the caller bounds the block and runs with AVX2 enabled.
    unsafe {
        let w = match K {
            // Q4_1's nibbles are the weights (its minimum is added separately).
            1 => return [nibbles(blk.add(4)); 2],
            0 => _mm256_sub_epi8(nibbles(blk.add(2)), _mm256_set1_epi8(8)),
            _ => _mm256_loadu_si256(blk.add(2) as *const __m256i),
        };
        [_mm256_sign_epi8(w, w), w]
    }
}

/// The 32 nibbles of the 16 bytes at `qs` in element order (low nibbles are elements 0..16,
/// high nibbles 16..32).
#[inline(always)]
unsafe fn nibbles(qs: *const u8) -> __m256i {
    // SAFETY: the caller bounds the 16 bytes and runs with AVX2 enabled.
    unsafe {
        let v = _mm_loadu_si128(qs as *const __m128i);
        _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(v), v), _mm256_set1_epi8(0x0F))
    }
}

/// How an ISA level turns an [`Unpacked`] block and a token's 32 int8 activations into the
/// block's 8 int32 lanes (lane `l` = `Σ w·x` over elements `4l..4l + 4`, see
/// `blockq::lanes8`). The multiplies need an unsigned left operand, so signed weights move
/// their sign onto the activations (`|w|·sign(x, w)`; activation quantizers never produce
/// -128, whose negation would wrap). Every level's lanes are exact sums of the same products,
/// so they are equal, and so is everything computed from them.
pub(crate) trait Q32Dot {
    /// Tokens the batch kernel meets each unpacked block with, one accumulator register
    /// each (the level's register file sets it).
    const GROUP: usize;
    /// The lanes of block `w` against the 32 activations at `x`.
    unsafe fn lanes<const K: u8>(w: Unpacked, x: *const i8) -> __m256i;
}

/// AVX2: `maddubs` into int16 pairs (no saturation: |w| ≤ 128 and |x| ≤ 127 keep a pair
/// within 2·128·127), then `madd` by ones into int32.
pub(crate) struct Avx2;

impl Q32Dot for Avx2 {
    /// 16 vector registers: 8 accumulators and the block's operands.
    const GROUP: usize = 8;

    #[inline(always)]
    unsafe fn lanes<const K: u8>(w: Unpacked, x: *const i8) -> __m256i {
        // SAFETY: the caller bounds the 32 bytes at `x` and runs with AVX2 enabled.
        unsafe {
            let xv = _mm256_loadu_si256(x as *const __m256i);
            let xv = if K == 1 { xv } else { _mm256_sign_epi8(xv, w[1]) };
            _mm256_madd_epi16(_mm256_maddubs_epi16(w[0], xv), _mm256_set1_epi16(1))
        }
    }
}

/// Up to this many tokens go through [`few_q32`], more through [`batch_q32`] (measured: at
/// 4 tokens the batch kernel is ahead).
const FEW_MAX: usize = 3;
/// Rows [`few_q32`] works on at once.
const FEW_ROWS: usize = 4;
/// Tokens [`batch_q32`] takes per pass over its rows, so that their activations stay in
/// cache while every row meets them.
const CHUNK: usize = 64;

/// Per-thread scratch of [`batch_q32`].
#[derive(Default)]
struct Scratch {
    /// `[group][block]`: the group's tokens' activation scales, a lane per token.
    d: Vec<[f32; 16]>,
    /// `[group][block]`: the same for Q8_1's `d·Σq` (Q4_1's minimum term).
    s: Vec<[f32; 16]>,
    /// `[block]`: one row's weight scales times a group's activation scales.
    dw: Vec<[f32; 16]>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// `out.set(t·out_rows + r, W[r] · x[t])` for every row in `rows` of a 32-wide block matrix
/// and every token of `a`, at level `D`: up to [`FEW_MAX`] tokens through [`few_q32`], more
/// through [`batch_q32`]. Whichever runs, an output's float arithmetic is the portable
/// kernel's, in its order (per lane, the FMA of `d_w·d_x` and the lanes across the blocks in
/// order, then [`hsum_float_8`], then Q4_1's minimum term `Σ m_w·s_x` summed across the blocks
/// in order), so a token's outputs do not depend on the tokens it is batched with.
#[inline(always)]
pub(crate) unsafe fn q32_rows<D: Q32Dot>(kind: Q32, w: &[u8], row_bytes: usize, rows: std::ops::Range<usize>, a: &QuantActs, out: SyncOut, out_rows: usize) {
    // SAFETY: the caller runs with AVX2, FMA, F16C and whatever else `D` needs.
    unsafe {
        match kind {
            Q32::Q4_0 => q32_rows_k::<D, 0>(w, row_bytes, rows, a, out, out_rows),
            Q32::Q4_1 => q32_rows_k::<D, 1>(w, row_bytes, rows, a, out, out_rows),
            Q32::Q8_0 => q32_rows_k::<D, 2>(w, row_bytes, rows, a, out, out_rows),
        }
    }
}

#[inline(always)]
unsafe fn q32_rows_k<D: Q32Dot, const K: u8>(w: &[u8], row_bytes: usize, rows: std::ops::Range<usize>, a: &QuantActs, out: SyncOut, out_rows: usize) {
    let (n, k) = (a.n, a.k);
    let nb = k / 32;
    assert!(k == nb * 32 && row_bytes >= nb * q32_bytes(K) && w.len() >= rows.end * row_bytes);
    assert!(a.q.len() >= n * k && a.d.len() >= n * nb && (K != 1 || a.s.len() >= n * nb));
    assert!(rows.end <= out_rows && out_rows.checked_mul(n).is_some());
    if rows.is_empty() || n == 0 {
        return;
    }
    // SAFETY: the asserts above bound every row, token and block the kernels touch, and
    // every output index (t·out_rows + r < n·out_rows); the caller runs with what `D` needs.
    unsafe {
        if n <= FEW_MAX {
            few_q32::<D, K>(w, row_bytes, rows, a, out, out_rows);
        } else {
            // Taken out rather than borrowed in a closure: a closure would not inherit the
            // caller's target features, and the kernel inlined into it would call every
            // intrinsic.
            let mut sc = SCRATCH.take();
            batch_q32::<D, K>(w, row_bytes, rows, a, &mut sc, out, out_rows);
            SCRATCH.set(sc);
        }
    }
}

/// Decode and the smallest batches: [`FEW_ROWS`] rows at a time, block by block, each block
/// unpacked once and met with every token. A row's FMAs for one token form one dependency
/// chain (its float order is fixed), so one row at a time would wait on FMA latency; several
/// rows hide it. The hardware prefetcher follows interleaved rows poorly, so the tile two on
/// is prefetched in step, a block's share of it per block.
#[inline(always)]
unsafe fn few_q32<D: Q32Dot, const K: u8>(w: &[u8], row_bytes: usize, rows: std::ops::Range<usize>, a: &QuantActs, out: SyncOut, out_rows: usize) {
    let mut r = rows.start;
    // SAFETY: the caller bounds the rows, the tokens (at most FEW_MAX) and the outputs.
    unsafe {
        while r < rows.end {
            let full = rows.end - r >= FEW_ROWS;
            match (full, a.n) {
                (true, 1) => few_tile::<D, K, FEW_ROWS, 1>(w, row_bytes, r, a, out, out_rows),
                (true, 2) => few_tile::<D, K, FEW_ROWS, 2>(w, row_bytes, r, a, out, out_rows),
                (true, _) => few_tile::<D, K, FEW_ROWS, 3>(w, row_bytes, r, a, out, out_rows),
                (false, 1) => few_tile::<D, K, 1, 1>(w, row_bytes, r, a, out, out_rows),
                (false, 2) => few_tile::<D, K, 1, 2>(w, row_bytes, r, a, out, out_rows),
                (false, _) => few_tile::<D, K, 1, 3>(w, row_bytes, r, a, out, out_rows),
            }
            r += if full { FEW_ROWS } else { 1 };
        }
    }
}

/// Rows `r0..r0 + R` against tokens `0..T`.
#[inline(always)]
unsafe fn few_tile<D: Q32Dot, const K: u8, const R: usize, const T: usize>(w: &[u8], row_bytes: usize, r0: usize, a: &QuantActs, out: SyncOut, out_rows: usize) {
    let (k, nb) = (a.k, a.k / 32);
    let bytes = q32_bytes(K);
    // Cache lines of the tile two on to prefetch per block: its R·bytes per block.
    let lines = (R * bytes).div_ceil(64);
    // SAFETY: rows r0..r0 + R hold nb blocks each and tokens 0..T nb blocks of values and
    // scales (the caller checked); prefetches of any address are harmless.
    unsafe {
        let row = w.as_ptr().add(r0 * row_bytes);
        let ahead = row.wrapping_add(2 * R * row_bytes);
        let (x, d8, s8) = (a.q.as_ptr(), a.d.as_ptr(), a.s.as_ptr());
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        let mut summs = [[0f32; T]; R];
        for b in 0..nb {
            for j in 0..lines {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(b * R * bytes + j * 64) as *const i8);
            }
            for i in 0..R {
                let blk = row.add(i * row_bytes + b * bytes);
                let wv = unpack::<K>(blk);
                let dw = f16_splat(blk);
                let mw = if K == 1 { _mm256_cvtss_f32(f16_splat(blk.add(2))) } else { 0.0 };
                for t in 0..T {
                    if K == 1 {
                        summs[i][t] += mw * *s8.add(t * nb + b);
                    }
                    let lanes = D::lanes::<K>(wv, x.add(t * k + b * 32));
                    let d = _mm256_mul_ps(dw, _mm256_set1_ps(*d8.add(t * nb + b)));
                    acc[i][t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lanes), acc[i][t]);
                }
            }
        }
        for i in 0..R {
            for t in 0..T {
                let y = hsum_float_8(acc[i][t]);
                out.set(t * out_rows + r0 + i, if K == 1 { y + summs[i][t] } else { y });
            }
        }
    }
}

/// Batches (speculative verification, several sequences, prefill): a row at a time, each
/// block unpacked once and met with every token of a group of [`Q32Dot::GROUP`], one
/// accumulator each; up to [`CHUNK`] tokens per pass over the rows. A row's scales come
/// first, a vector of the group's tokens per block (the same rounding as one product at a
/// time), stored and read back per token as broadcasts (which AVX-512 folds into the FMA)
/// rather than moved between lanes; Q4_1's minimum term is a vector over the group's tokens.
#[inline(always)]
unsafe fn batch_q32<D: Q32Dot, const K: u8>(w: &[u8], row_bytes: usize, rows: std::ops::Range<usize>, a: &QuantActs, sc: &mut Scratch, out: SyncOut, out_rows: usize) {
    let (n, nb) = (a.n, a.k / 32);
    sc.dw.resize(nb, [0.0; 16]);
    // Balanced chunks and groups: 65 tokens run as 33 + 32, and 9 as 5 + 4, not 8 + 1.
    let chunk = n.div_ceil(n.div_ceil(CHUNK));
    for c0 in (0..n).step_by(chunk) {
        let cn = (n - c0).min(chunk);
        let groups = cn.div_ceil(D::GROUP);
        let size = cn.div_ceil(groups);
        sc.d.clear();
        sc.d.resize(groups * nb, [0.0; 16]);
        sc.s.clear();
        sc.s.resize(if K == 1 { groups * nb } else { 0 }, [0.0; 16]);
        for t in 0..cn {
            let (g, j) = (t / size, t % size);
            for b in 0..nb {
                sc.d[g * nb + b][j] = a.d[(c0 + t) * nb + b];
                if K == 1 {
                    sc.s[g * nb + b][j] = a.s[(c0 + t) * nb + b];
                }
            }
        }
        for r in rows.clone() {
            for g in 0..groups {
                let t0 = c0 + g * size;
                let d = &sc.d[g * nb..(g + 1) * nb];
                let s = if K == 1 { &sc.s[g * nb..(g + 1) * nb] } else { &[][..] };
                let dw = &mut sc.dw[..];
                // SAFETY: the caller bounds row r and tokens t0..t0 + T (T ≤ n - t0); `d`,
                // `s` (K = 1) and `dw` hold nb entries.
                unsafe {
                    match size.min(n - t0) {
                        1 => batch_tile::<D, K, 1>(w, row_bytes, r, a, t0, d, s, dw, out, out_rows),
                        2 => batch_tile::<D, K, 2>(w, row_bytes, r, a, t0, d, s, dw, out, out_rows),
                        3 => batch_tile::<D, K, 3>(w, row_bytes, r, a, t0, d, s, dw, out, out_rows),
                        4 => batch_tile::<D, K, 4>(w, row_bytes, r, a, t0, d, s, dw, out, out_rows),
                        5 => batch_tile::<D, K, 5>(w, row_bytes, r, a, t0, d, s, dw, out, out_rows),
                        6 => batch_tile::<D, K, 6>(w, row_bytes, r, a, t0, d, s, dw, out, out_rows),
                        7 => batch_tile::<D, K, 7>(w, row_bytes, r, a, t0, d, s, dw, out, out_rows),
                        8 => batch_tile::<D, K, 8>(w, row_bytes, r, a, t0, d, s, dw, out, out_rows),
                        // Only levels with 32 vector registers form groups this large.
                        9 => batch_tile::<D, K, 9>(w, row_bytes, r, a, t0, d, s, dw, out, out_rows),
                        10 => batch_tile::<D, K, 10>(w, row_bytes, r, a, t0, d, s, dw, out, out_rows),
                        11 => batch_tile::<D, K, 11>(w, row_bytes, r, a, t0, d, s, dw, out, out_rows),
                        12 => batch_tile::<D, K, 12>(w, row_bytes, r, a, t0, d, s, dw, out, out_rows),
                        13 => batch_tile::<D, K, 13>(w, row_bytes, r, a, t0, d, s, dw, out, out_rows),
                        14 => batch_tile::<D, K, 14>(w, row_bytes, r, a, t0, d, s, dw, out, out_rows),
                        15 => batch_tile::<D, K, 15>(w, row_bytes, r, a, t0, d, s, dw, out, out_rows),
                        _ => batch_tile::<D, K, 16>(w, row_bytes, r, a, t0, d, s, dw, out, out_rows),
                    }
                }
            }
        }
    }
}

/// Row `r` against tokens `t0..t0 + T` (`T` ≤ 16), given the group's activation scales `d`
/// and sums `s` (Q4_1) per block, a lane per token; `dw` is scratch for the row's scale
/// products.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn batch_tile<D: Q32Dot, const K: u8, const T: usize>(
    w: &[u8],
    row_bytes: usize,
    r: usize,
    a: &QuantActs,
    t0: usize,
    d: &[[f32; 16]],
    s: &[[f32; 16]],
    dw: &mut [[f32; 16]],
    out: SyncOut,
    out_rows: usize,
) {
    let (k, nb) = (a.k, a.k / 32);
    let bytes = q32_bytes(K);
    // SAFETY: as the caller states; prefetches of any address are harmless.
    unsafe {
        let row = w.as_ptr().add(r * row_bytes);
        let x = a.q.as_ptr().add(t0 * k);
        // The scales, a separate pass: read back in the same loop, the stored products would
        // be forwarded from registers, moved between lanes one token at a time.
        let mut summs = [_mm256_setzero_ps(); 2];
        for b in 0..nb {
            let blk = row.add(b * bytes);
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH) as *const i8);
            let dwv = f16_splat(blk);
            let (db, dwb) = (d.get_unchecked(b).as_ptr(), dw.get_unchecked_mut(b).as_mut_ptr());
            _mm256_storeu_ps(dwb, _mm256_mul_ps(dwv, _mm256_loadu_ps(db)));
            if T > 8 {
                _mm256_storeu_ps(dwb.add(8), _mm256_mul_ps(dwv, _mm256_loadu_ps(db.add(8))));
            }
            if K == 1 {
                let (mwv, sb) = (f16_splat(blk.add(2)), s.get_unchecked(b).as_ptr());
                summs[0] = _mm256_add_ps(summs[0], _mm256_mul_ps(mwv, _mm256_loadu_ps(sb)));
                if T > 8 {
                    summs[1] = _mm256_add_ps(summs[1], _mm256_mul_ps(mwv, _mm256_loadu_ps(sb.add(8))));
                }
            }
        }
        let mut acc = [_mm256_setzero_ps(); T];
        for b in 0..nb {
            let wv = unpack::<K>(row.add(b * bytes));
            let dwb = dw.get_unchecked(b);
            for t in 0..T {
                let lanes = D::lanes::<K>(wv, x.add(t * k + b * 32));
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dwb[t]), _mm256_cvtepi32_ps(lanes), acc[t]);
            }
        }
        let mut sm = [0f32; 16];
        _mm256_storeu_ps(sm.as_mut_ptr(), summs[0]);
        _mm256_storeu_ps(sm.as_mut_ptr().add(8), summs[1]);
        for t in 0..T {
            let y = hsum_float_8(acc[t]);
            out.set((t0 + t) * out_rows + r, if K == 1 { y + sm[t] } else { y });
        }
    }
}

/// [`q32_rows`] at the AVX2 level.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q32_rows_avx2(kind: Q32, w: &[u8], row_bytes: usize, rows: std::ops::Range<usize>, a: &QuantActs, out: SyncOut, out_rows: usize) {
    // SAFETY: this function runs with AVX2, FMA and F16C, all that `Avx2` needs.
    unsafe { q32_rows::<Avx2>(kind, w, row_bytes, rows, a, out, out_rows) }
}

/// Byte shuffles that spread Q6_K scales `2v` and `2v + 1` over 8 lanes each.
const Q6K_SCALE_SHUFFLE: [[u8; 16]; 8] = {
    let mut m = [[0u8; 16]; 8];
    let mut v = 0;
    while v < 8 {
        let mut i = 0;
        while i < 16 {
            m[v][i] = (2 * v + i / 8) as u8;
            i += 1;
        }
        v += 1;
    }
    m
};

/// The 6-bit values (0..63) of Q6_K half-block `half` of the block at `blk`, as four
/// vectors of 32 in column order.
#[inline(always)]
unsafe fn q6k_half(blk: *const u8, half: usize) -> [__m256i; 4] {
    // SAFETY: the caller bounds the block (210 bytes at `blk`) and runs with AVX2 enabled.
    unsafe {
        let (m4, m2) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x03));
        let ql = blk.add(half * 64);
        let ql_lo = _mm256_loadu_si256(ql as *const __m256i);
        let ql_hi = _mm256_loadu_si256(ql.add(32) as *const __m256i);
        let qh = _mm256_loadu_si256(blk.add(128 + half * 32) as *const __m256i);
        [
            _mm256_or_si256(_mm256_and_si256(ql_lo, m4), _mm256_slli_epi16::<4>(_mm256_and_si256(qh, m2))),
            _mm256_or_si256(_mm256_and_si256(ql_hi, m4), _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<2>(qh), m2))),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql_lo), m4), _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<4>(qh), m2))),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql_hi), m4), _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<6>(qh), m2))),
        ]
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemv_q6k(w: &[u8], row_bytes: usize, rows: std::ops::Range<usize>, a: &QuantActs, t: usize, out: SyncOut, out_rows: usize) {
    let (q8, d8) = (a.row(t), a.row_d(t));
    let nb = a.k / 256;
    assert!(row_bytes >= nb * 210 && w.len() >= rows.end * row_bytes && q8.len() >= nb * 256 && d8.len() >= nb);
    // SAFETY: block b of row r reads 210 bytes of w at r·row_bytes + b·210 and 256 values of
    // q8 at b·256 (b < nb, r < rows.end: asserted above).
    unsafe {
        let m32 = _mm256_set1_epi8(32);
        for r in rows {
            let w = std::slice::from_raw_parts(w.as_ptr().add(r * row_bytes), nb * 210);
            let mut acc = _mm256_setzero_ps();
            for b in 0..nb {
                let blk = w.as_ptr().add(b * 210);
                _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH) as *const i8);
                let sc = _mm_loadu_si128(blk.add(192) as *const __m128i);
                let x = q8.as_ptr().add(b * 256);
                let mut sumi = _mm256_setzero_si256();
                for half in 0..2 {
                    let q = q6k_half(blk, half);
                    for (part, qv) in q.into_iter().enumerate() {
                        let v = half * 4 + part;
                        let xv = _mm256_loadu_si256(x.add(v * 32) as *const __m256i);
                        // (q - 32)·x in int16 pairs: both products fit (≤ 16002 and ≤ 8128).
                        let p = _mm256_sub_epi16(_mm256_maddubs_epi16(qv, xv), _mm256_maddubs_epi16(m32, xv));
                        let shuf = _mm_loadu_si128(Q6K_SCALE_SHUFFLE[v].as_ptr() as *const __m128i);
                        let s16 = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, shuf));
                        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s16));
                    }
                }
                let d = _mm256_set1_ps(d8[b] * f16_at(w, b * 210 + 208));
                acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
            }
            out.set(t * out_rows + r, hsum_float_8(acc));
        }
    }
}

/// How far ahead [`gemm_q6k`] prefetches, in bytes: it spends longer on each block than
/// decode does, and a row is walked once per 4 tokens, so it looks a few rows ahead.
const BATCH_PREFETCH: usize = 4096;

thread_local! {
    /// A batch's activations moved to unsigned (`x + 128`) for [`gemm_q6k`].
    static UNSIGNED_ACTS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Several tokens (a batch of decoding sequences): `out.set(t·out_rows + r, W[r] · x[t])` for
/// every row in `rows` and every token, each row's blocks unpacked once per 4 tokens rather
/// than once per token.
///
/// The weights become signed (`q - 32`) and the activations unsigned (`x + 128`), so one
/// `maddubs` gives `Σ (x + 128)(q - 32)` per pair; the `128·Σ (q - 32)` it adds depends only on
/// the row and is taken off once per block. Every int32 lane then holds exactly what
/// [`gemv_q6k`] computes for that token (both are exact integer sums of the same terms, with
/// no int16 saturation: pairs stay within 2·255·32), and the float steps are the same, so a
/// sequence's logits do not depend on what it is batched with.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_q6k(w: &[u8], row_bytes: usize, rows: std::ops::Range<usize>, a: &QuantActs, out: SyncOut, out_rows: usize) {
    let (n, k) = (a.n, a.k);
    let nb = k / 256;
    assert!(row_bytes >= nb * 210 && w.len() >= rows.end * row_bytes && a.q.len() >= n * k && a.d.len() >= n * nb && k == nb * 256);
    UNSIGNED_ACTS.with_borrow_mut(|xu| {
        xu.clear();
        xu.extend(a.q[..n * k].iter().map(|&v| v as u8 ^ 0x80));
        for r in rows {
            let row = w[r * row_bytes..].as_ptr();
            let mut t0 = 0;
            while t0 < n {
                let nt = (n - t0).min(8);
                // SAFETY: AVX2, FMA and F16C are enabled here; row r holds nb blocks of 210
                // bytes and tokens t0..t0+nt hold nb·256 values each in `xu` and nb scales in
                // `a.d` (asserted above).
                unsafe {
                    match nt {
                        8 => q6k_tile::<8>(row, nb, xu[t0 * k..].as_ptr(), k, &a.d[t0 * nb..], t0, r, out, out_rows),
                        7 => q6k_tile::<7>(row, nb, xu[t0 * k..].as_ptr(), k, &a.d[t0 * nb..], t0, r, out, out_rows),
                        6 => q6k_tile::<6>(row, nb, xu[t0 * k..].as_ptr(), k, &a.d[t0 * nb..], t0, r, out, out_rows),
                        5 => q6k_tile::<5>(row, nb, xu[t0 * k..].as_ptr(), k, &a.d[t0 * nb..], t0, r, out, out_rows),
                        4 => q6k_tile::<4>(row, nb, xu[t0 * k..].as_ptr(), k, &a.d[t0 * nb..], t0, r, out, out_rows),
                        3 => q6k_tile::<3>(row, nb, xu[t0 * k..].as_ptr(), k, &a.d[t0 * nb..], t0, r, out, out_rows),
                        2 => q6k_tile::<2>(row, nb, xu[t0 * k..].as_ptr(), k, &a.d[t0 * nb..], t0, r, out, out_rows),
                        _ => q6k_tile::<1>(row, nb, xu[t0 * k..].as_ptr(), k, &a.d[t0 * nb..], t0, r, out, out_rows),
                    }
                }
                t0 += nt;
            }
        }
    });
}

/// One Q6_K row against `T` tokens (see [`gemm_q6k`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn q6k_tile<const T: usize>(row: *const u8, nb: usize, xu: *const u8, ldx: usize, d8: &[f32], t0: usize, r: usize, out: SyncOut, out_rows: usize) {
    // SAFETY: the caller runs with AVX2, FMA and F16C and bounds `row` (nb blocks), `xu`
    // (T tokens of nb·256 values, ldx apart) and `d8` (T·nb scales).
    unsafe {
        let m32 = _mm256_set1_epi8(32);
        let k128 = _mm256_set1_epi8(0x80u8 as i8);
        let mut accf = [_mm256_setzero_ps(); T];
        for b in 0..nb {
            let blk = row.add(b * 210);
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(BATCH_PREFETCH) as *const i8);
            let sc = _mm_loadu_si128(blk.add(192) as *const __m128i);
            let mut acc = [_mm256_setzero_si256(); T];
            let mut corr = _mm256_setzero_si256();
            for half in 0..2 {
                let q = q6k_half(blk, half);
                for (part, qv) in q.into_iter().enumerate() {
                    let v = half * 4 + part;
                    let wv = _mm256_sub_epi8(qv, m32);
                    let shuf = _mm_loadu_si128(Q6K_SCALE_SHUFFLE[v].as_ptr() as *const __m128i);
                    let s16 = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, shuf));
                    corr = _mm256_add_epi32(corr, _mm256_madd_epi16(_mm256_maddubs_epi16(k128, wv), s16));
                    for t in 0..T {
                        let xv = _mm256_loadu_si256(xu.add(t * ldx + b * 256 + v * 32) as *const __m256i);
                        acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(_mm256_maddubs_epi16(xv, wv), s16));
                    }
                }
            }
            let dw = f16_ptr(blk.add(208));
            for t in 0..T {
                let d = _mm256_set1_ps(d8[t * nb + b] * dw);
                accf[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[t], corr)), accf[t]);
            }
        }
        for t in 0..T {
            out.set((t0 + t) * out_rows + r, hsum_float_8(accf[t]));
        }
    }
}
