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
pub(crate) fn pack_acts(xs: &[i8], ldx: usize, n_tok: usize, kc: usize, out: &mut Vec<u8>) {
    assert!(kc.is_multiple_of(CHUNK) && (n_tok == 0 || xs.len() >= (n_tok - 1) * ldx + kc));
    let tiles = n_tok.div_ceil(TILE);
    out.clear();
    out.resize(tiles.next_multiple_of(2) * TILE * kc, 0);
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

/// `raw[(t * n_rows + r) * nb + b] = Σ code·x` over block `b` for rows `0..n_rows` (at most
/// 32) of `codes` (`ld` apart, 32 rows readable) and `n_tok` tokens packed by [`pack_acts`].
/// Each step multiplies two code tiles by two activation tiles (four `TDPBUSD`s for four
/// tile loads); rows and tokens past the ends are computed and dropped.
///
/// # Safety
/// The AMX level must be available ([`crate::isa::Isa::detect`] returned it: the CPU has
/// AMX and this process may use it).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_raw(codes: &[u8], ld: usize, n_rows: usize, packed: &[u8], n_tok: usize, kc: usize, block: usize, raw: &mut [i32]) {
    let nb = kc / block;
    let chunks = kc / CHUNK;
    let tiles = n_tok.div_ceil(TILE);
    assert!(n_rows <= ROWS && block.is_multiple_of(CHUNK) && kc.is_multiple_of(block));
    assert!(codes.len() >= (ROWS - 1) * ld + kc && packed.len() >= tiles.next_multiple_of(2) * TILE * kc);
    assert!(raw.len() >= n_rows * n_tok * nb);
    const TT: usize = TILE * TILE;
    // Every block's accumulators of a pair of token tiles, `[token tile][row tile][block]
    // [row][token]`, scattered into `raw` once the pair is done (block innermost there, so
    // the writes run in order).
    let mut c = vec![0i32; 4 * nb * TT];
    // SAFETY (every block below): the caller vouches for AMX; the tiles are configured
    // first; each code load reads 16 rows of 64 bytes inside `codes` (rows 0..32, `ld`
    // apart, at column k + 64 <= kc), each activation load one 1 KiB chunk of tile pair `tt`
    // inside `packed` (padded to whole pairs), and each store writes 16 rows of 64 bytes
    // inside `c`, as the asserts above and `c`'s size bound.
    unsafe {
        CONFIG.load();
        for tt in (0..tiles).step_by(2) {
            for b in 0..nb {
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
                let cp = c.as_mut_ptr();
                let at = |p: usize, q: usize| cp.add(((p * 2 + q) * nb + b) * TT);
                std::arch::asm!(
                    "tilestored [{c0} + {s}*1], tmm0",
                    "tilestored [{c1} + {s}*1], tmm1",
                    "tilestored [{c2} + {s}*1], tmm2",
                    "tilestored [{c3} + {s}*1], tmm3",
                    c0 = in(reg) at(0, 0),
                    c1 = in(reg) at(1, 0),
                    c2 = in(reg) at(0, 1),
                    c3 = in(reg) at(1, 1),
                    s = in(reg) TILE * 4,
                    options(nostack)
                );
            }
            for p in 0..2 {
                let t0 = (tt + p) * TILE;
                for n in 0..TILE.min(n_tok.saturating_sub(t0)) {
                    for r in 0..n_rows {
                        let (q, rr) = (r / TILE, r % TILE);
                        let dst = &mut raw[((t0 + n) * n_rows + r) * nb..][..nb];
                        for (b, d) in dst.iter_mut().enumerate() {
                            *d = c[(((p * 2 + q) * nb + b) * TILE + rr) * TILE + n];
                        }
                    }
                }
            }
        }
        std::arch::asm!("tilerelease", options(nostack, nomem));
    }
}

/// A small product through the kernel against plain integer sums: 32 rows, 40 tokens (a
/// ragged token tile), four 64-column chunks in two blocks, every code and -128.
pub(crate) fn known_answer_holds() -> bool {
    let (rows, n_tok, kc, block, ld) = (ROWS, 40, 256, 128, 256);
    let mut rng = crate::self_check::Rng(0x2545_F491_4F6C_DD1D);
    let codes: Vec<u8> = (0..rows * ld).map(|_| (rng.next() % 3) as u8).collect();
    let xs: Vec<i8> = (0..n_tok * kc).map(|i| if i % 97 == 0 { -128 } else { rng.next() as i8 }).collect();
    let mut packed = Vec::new();
    pack_acts(&xs, kc, n_tok, kc, &mut packed);
    let nb = kc / block;
    let mut raw = vec![0i32; rows * n_tok * nb];
    // SAFETY: the self-check runs this only at the AMX level, which the CPU has.
    unsafe { gemm_raw(&codes, ld, rows, &packed, n_tok, kc, block, &mut raw) };
    (0..n_tok).all(|t| {
        (0..rows).all(|r| {
            (0..nb).all(|b| {
                let want: i32 = (b * block..(b + 1) * block).map(|k| i32::from(codes[r * ld + k]) * i32::from(xs[t * kc + k])).sum();
                raw[(t * rows + r) * nb + b] == want
            })
        })
    })
}
