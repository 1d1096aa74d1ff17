//! AMX-INT8 ternary prefill: `TDPBUSD` on tile registers multiplies a 16-row tile of unsigned
//! codes (`t + 1`) by 16 tokens' int8 activations, 64 columns per instruction, into 16 x 16
//! exact int32 sums. The sums are the scalar reference's to the bit (integer addition is
//! exact in any order), so the float epilogue after them is shared with every other level.
//!
//! Written against Intel's instruction reference in inline assembly (`ldtilecfg`,
//! `tileloadd`, `tdpbusd`, `tilestored`; stable Rust has no AMX intrinsics). Used only at the
//! AMX level ([`crate::isa::Isa::Amx`]: the CPU reports AMX-TILE and AMX-INT8, the OS
//! enables their state and grants it to this process), after [`known_answer_holds`] passed
//! in the level's self-check.
//!
//! Layout: A (codes) is loaded straight from the unpacked code rows (`ld` apart). B holds
//! the activations in the VNNI order `TDPBUSD` wants, packed once per product by
//! [`pack_acts`]: for each tile of 16 tokens and each 64-column chunk, 16 rows (column
//! quads) of 64 bytes, byte `4n + i` of row `q` being token `n`'s value at column
//! `64c + 4q + i`.

use crate::aligned::AlignedBytes;
use crate::sync_out::SyncOut;
use crate::tile_config::TileConfig;

/// Tokens per B tile (and columns of C), rows per A tile (and rows of C).
pub(crate) const TILE: usize = 16;
/// Rows one call multiplies at most: two A tiles share every B tile loaded.
pub(crate) const ROWS: usize = 2 * TILE;
/// Columns (bytes) one `TDPBUSD` consumes.
pub(crate) const CHUNK: usize = 64;

/// Tiles: tmm0-3 accumulators (16 rows of 16 int32: two row tiles by two token tiles),
/// tmm4-5 code tiles, tmm6-7 activation tiles, all 16 rows of 64 bytes.
const CONFIG: TileConfig = TileConfig::FULL;

/// Packs `n_tok` tokens (`ldx` apart, `kc` values each) into B tiles (see the module doc),
/// zero for the tokens past `n_tok` (up to an even number of tiles, since tiles are taken
/// in pairs). `out` gets `n_tok.div_ceil(32) * 32 * kc` bytes.
pub(crate) fn pack_acts(xs: &[i8], ldx: usize, n_tok: usize, kc: usize, out: &mut AlignedBytes) {
    assert!(kc.is_multiple_of(CHUNK) && (n_tok == 0 || xs.len() >= (n_tok - 1) * ldx + kc));
    let tiles = n_tok.div_ceil(TILE);
    // On cache lines: a tile load whose rows straddle two lines runs about 3x slower.
    out.resize(0);
    out.resize(tiles.next_multiple_of(2) * TILE * kc);
    let out = out.as_mut_slice();
    for tt in 0..tiles {
        for c in 0..kc / CHUNK {
            let dst = &mut out[(tt * (kc / CHUNK) + c) * TILE * CHUNK..][..TILE * CHUNK];
            for n in 0..TILE.min(n_tok - tt * TILE) {
                let x = &xs[(tt * TILE + n) * ldx + c * CHUNK..][..CHUNK];
                for q in 0..CHUNK / 4 {
                    for i in 0..4 {
                        dst[q * CHUNK + 4 * n + i] = x[4 * q + i] as u8;
                    }
                }
            }
        }
    }
}

/// What turns a block's exact sums into outputs, per product (padded to whole pairs of
/// token tiles): the same float operations as [`super::TernaryMatrix::store`], in the same
/// order, so the outputs are every other level's to the bit.
pub(crate) struct Epilogue<'a> {
    /// Scale blocks per row.
    pub nb: usize,
    /// `xsum[(tile * nb + b) * TILE + n]`: token `TILE·tile + n`'s activation sum over block
    /// `b` (the codes are `t + 1`), zero past the tokens.
    pub xsum: &'a [i32],
    /// `inv[t]`: token `t`'s multiplier, one past the tokens.
    pub inv: &'a [f32],
    /// `scales[r * nb + b]` for the call's rows, or (with `shared`) one scale for everything.
    pub scales: &'a [f32],
    pub shared: bool,
    /// Empty, or `extra[(tile * ROWS + r) * TILE + n]`, added to the last block's sum: the
    /// ragged column tail's dot product less its activations' sum.
    pub extra: &'a [i32],
}

impl Epilogue<'_> {
    /// One shared scale over one block and no tail: the matrix's fast path computes
    /// `isum·s / inv` without the running sum's `0 +` (which differs in the sign of a zero).
    fn assigns(&self) -> bool {
        self.shared && self.nb == 1 && self.extra.is_empty()
    }
}

/// A C tile's 16 x 16 int32 sums, on a cache line of its own.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Sums([i32; TILE * TILE]);
/// A pair of token tiles' running outputs, `[token tile][row][token]`.
#[repr(C, align(64))]
struct Outs([[[f32; TILE]; ROWS]; 2]);

/// Multiplies rows `0..n_rows` (at most 32) of `codes` (`ld` apart, 32 rows readable) by
/// `n_tok` tokens packed by [`pack_acts`] and writes token `t`'s outputs to
/// `out[t * out_ld + r0 + r]`. Each step multiplies two code tiles by two activation tiles
/// (four `TDPBUSD`s for four tile loads); a block's four C tiles go to memory and are scaled
/// into the running outputs while the tiles of the next block multiply. Rows and tokens past
/// the ends are computed and dropped.
///
/// # Safety
/// The AMX level must be available ([`crate::isa::Isa::detect`] returned it: the CPU has
/// AMX and this process may use it).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn gemm_scaled(codes: &[u8], ld: usize, n_rows: usize, packed: &[u8], n_tok: usize, kc: usize, block: usize, ep: &Epilogue, out: SyncOut, out_ld: usize, r0: usize) {
    let nb = kc / block;
    let chunks = kc / CHUNK;
    let tiles = n_tok.div_ceil(TILE).next_multiple_of(2);
    assert!(n_rows <= ROWS && block.is_multiple_of(CHUNK) && kc.is_multiple_of(block) && nb == ep.nb && nb > 0);
    assert!(codes.len() >= (ROWS - 1) * ld + kc && packed.len() >= tiles * TILE * kc);
    assert!(ep.xsum.len() >= tiles * nb * TILE && ep.inv.len() >= tiles * TILE);
    assert!(if ep.shared { !ep.scales.is_empty() } else { ep.scales.len() >= n_rows * nb });
    assert!(ep.extra.is_empty() || ep.extra.len() >= tiles * ROWS * TILE);
    let assign = ep.assigns();
    // Two sets of a block's four C tiles, `[token tile][row tile]`: one being scaled while
    // the next block's go to the other.
    let mut c = [[Sums([0; TILE * TILE]); 4]; 2];
    let mut y = Outs([[[0.0; TILE]; ROWS]; 2]);
    // SAFETY (every block below): the caller vouches for AMX; the tiles are configured
    // first; each code load reads 16 rows of 64 bytes inside `codes` (rows 0..32, `ld`
    // apart, at column k + 64 <= kc), each activation load one 1 KiB chunk of tile pair `tt`
    // inside `packed` (padded to whole pairs), and each store writes one `Sums` (16 rows of
    // 64 bytes) of `c`, as the asserts above and the types bound.
    let multiply = |tt: usize, b: usize, dst: &mut [Sums; 4]| unsafe {
        std::arch::asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
        for ch in b * block / CHUNK..(b + 1) * block / CHUNK {
            let a = codes.as_ptr().add(ch * CHUNK);
            let b0 = packed.as_ptr().add((tt * chunks + ch) * TILE * CHUNK);
            let b1 = packed.as_ptr().add(((tt + 1) * chunks + ch) * TILE * CHUNK);
            std::arch::asm!(
                "tileloadd tmm4, [{a0} + {ld}*1]",
                "tileloadd tmm6, [{b0} + {s}*1]",
                "tdpbusd tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {s}*1]",
                "tdpbusd tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a1} + {ld}*1]",
                "tdpbusd tmm2, tmm5, tmm6",
                "tdpbusd tmm3, tmm5, tmm7",
                a0 = in(reg) a,
                a1 = in(reg) a.add(TILE * ld),
                b0 = in(reg) b0,
                b1 = in(reg) b1,
                ld = in(reg) ld,
                s = in(reg) CHUNK,
                options(nostack, readonly)
            );
        }
        std::arch::asm!(
            "tilestored [{c0} + {s}*1], tmm0",
            "tilestored [{c1} + {s}*1], tmm1",
            "tilestored [{c2} + {s}*1], tmm2",
            "tilestored [{c3} + {s}*1], tmm3",
            c0 = in(reg) dst[0].0.as_mut_ptr(),
            c1 = in(reg) dst[2].0.as_mut_ptr(),
            c2 = in(reg) dst[1].0.as_mut_ptr(),
            c3 = in(reg) dst[3].0.as_mut_ptr(),
            s = in(reg) TILE * 4,
            options(nostack)
        );
    };
    // SAFETY: the caller vouches for AMX (configuring tiles needs it).
    unsafe { CONFIG.load() };
    for tt in (0..tiles).step_by(2) {
        y.0 = [[[0.0; TILE]; ROWS]; 2];
        let [c0, c1] = &mut c;
        multiply(tt, 0, c0);
        for b in 0..nb {
            let (cur, next) = if b % 2 == 0 { (&*c0, &mut *c1) } else { (&*c1, &mut *c0) };
            if b + 1 < nb {
                multiply(tt, b + 1, next);
            }
            // SAFETY: AMX implies AVX-512F; `ep` covers these tiles (asserted above).
            unsafe { scale_block(ep, tt, b, n_rows, cur, &mut y, assign) };
        }
        for p in 0..2 {
            let t0 = (tt + p) * TILE;
            let inv = &ep.inv[t0..t0 + TILE];
            let yp = &mut y.0[p];
            for yr in yp.iter_mut().take(n_rows) {
                for (v, d) in yr.iter_mut().zip(inv) {
                    *v /= d;
                }
            }
            for (n, t) in (t0..n_tok.min(t0 + TILE)).enumerate() {
                out.fill(t * out_ld + r0, n_rows, |r| yp[r][n]);
            }
        }
    }
    // SAFETY: as above; releasing the tiles ends their use.
    unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
}

/// Adds block `b`'s scaled sums (`c`, `[token tile][row tile]`) of the token tile pair `tt`
/// into `y` (or sets `y` to them where the matrix's fast path does): token-wise
/// `(isum - xsum) as f32 * scale`, the exact float steps of the matrix's epilogue, 16 tokens
/// to a vector.
///
/// # Safety
/// The CPU must have AVX-512F; `ep` must cover tile pair `tt`, block `b` and `n_rows` rows (as
/// [`gemm_scaled`] asserts).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn scale_block(ep: &Epilogue, tt: usize, b: usize, n_rows: usize, c: &[Sums; 4], y: &mut Outs, assign: bool) {
    use std::arch::x86_64::*;
    let nb = ep.nb;
    let last = b + 1 == nb && !ep.extra.is_empty();
    for p in 0..2 {
        let xs = &ep.xsum[((tt + p) * nb + b) * TILE..][..TILE];
        // SAFETY: each load and store reads or writes 16 values inside a slice of 16 (or a
        // 64-byte aligned row of `c` or `y`).
        unsafe {
            let xs = _mm512_loadu_si512(xs.as_ptr() as *const _);
            for r in 0..n_rows {
                let sums = _mm512_load_si512(c[p * 2 + r / TILE].0[(r % TILE) * TILE..][..TILE].as_ptr() as *const _);
                let mut isum = _mm512_sub_epi32(sums, xs);
                if last {
                    let extra = &ep.extra[((tt + p) * ROWS + r) * TILE..][..TILE];
                    isum = _mm512_add_epi32(isum, _mm512_loadu_si512(extra.as_ptr() as *const _));
                }
                let s = if ep.shared { ep.scales[0] } else { ep.scales[r * nb + b] };
                let v = _mm512_mul_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(s));
                let yr = y.0[p][r].as_mut_ptr();
                _mm512_store_ps(yr, if assign { v } else { _mm512_add_ps(_mm512_load_ps(yr), v) });
            }
        }
    }
}

/// A small product through the kernel against plain integer sums and the epilogue's float
/// steps: 32 rows, 40 tokens (a ragged token tile), four 64-column chunks in two blocks,
/// per-block scales and a tail correction, every code and -128.
pub(crate) fn known_answer_holds() -> bool {
    let (rows, n_tok, kc, block, ld) = (ROWS, 40, 256, 128, 256);
    let mut rng = crate::self_check::Rng(0x2545_F491_4F6C_DD1D);
    let codes: Vec<u8> = (0..rows * ld).map(|_| (rng.next() % 3) as u8).collect();
    let xs: Vec<i8> = (0..n_tok * kc).map(|i| if i % 97 == 0 { -128 } else { rng.next() as i8 }).collect();
    let mut packed = AlignedBytes::new();
    pack_acts(&xs, kc, n_tok, kc, &mut packed);
    let packed = packed.as_slice();
    let nb = kc / block;
    let tiles = n_tok.div_ceil(TILE).next_multiple_of(2);
    let dot = |r: usize, t: usize, b: usize| -> i32 { (b * block..(b + 1) * block).map(|k| i32::from(codes[r * ld + k]) * i32::from(xs[t * kc + k])).sum() };
    let xsum: Vec<i32> = (0..tiles * nb * TILE).map(|i| (i % 61) as i32 * 37 - 1000).collect();
    let inv: Vec<f32> = (0..tiles * TILE).map(|t| 1.0 + t as f32 / 8.0).collect();
    let scales: Vec<f32> = (0..rows * nb).map(|i| (i as f32 * 0.37 - 5.0) / 7.0).collect();
    let extra: Vec<i32> = (0..tiles * ROWS * TILE).map(|i| (i % 13) as i32 - 6).collect();
    let ep = Epilogue { nb, xsum: &xsum, inv: &inv, scales: &scales, shared: false, extra: &extra };
    let mut out = vec![0f32; n_tok * rows];
    // SAFETY: the self-check runs this only at the AMX level, which the CPU has.
    unsafe { gemm_scaled(&codes, ld, rows, packed, n_tok, kc, block, &ep, SyncOut::new(&mut out), rows, 0) };
    (0..n_tok).all(|t| {
        (0..rows).all(|r| {
            let (tile, n) = (t / TILE, t % TILE);
            let mut y = 0f32;
            for b in 0..nb {
                let mut isum = dot(r, t, b) - xsum[(tile * nb + b) * TILE + n];
                if b + 1 == nb {
                    isum += extra[(tile * ROWS + r) * TILE + n];
                }
                y += isum as f32 * scales[r * nb + b];
            }
            out[t * rows + r].to_bits() == (y / inv[t]).to_bits()
        })
    })
}
