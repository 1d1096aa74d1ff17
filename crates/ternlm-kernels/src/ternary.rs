//! Ternary weights in the kernel's packed layout and their product with per-token int8
//! activations (BitLinear): `y = (Σ q·t) · scale / s`, with exact int32 sums per scale block.
//!
//! Layout today: row-major, 4 trits per byte, trit `i` of a row at byte `i / 4`, bits
//! `2·(i % 4)`, stored as `t + 1`. SIMD kernels will bring their own interleaved layouts; the
//! model only ever calls [`TernaryMatrix::pack_row`] and [`TernaryMatrix::gemm`].

use crate::act_quant::{ActFormat, QuantActs};
use crate::pool::{ThreadPool, split_range};
use crate::sync_out::SyncOut;

#[derive(Clone, Debug)]
pub struct TernaryMatrix {
    rows: usize,
    cols: usize,
    packed: Vec<u8>,
    /// Elements per scale block within a row (`cols` when one scale covers the row).
    block_len: usize,
    /// `rows * cols / block_len` scales, or one when the whole tensor shares a scale.
    scales: Vec<f32>,
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

impl TernaryMatrix {
    /// Bytes one packed row of `cols` trits takes.
    pub fn packed_row_bytes(cols: usize) -> usize {
        cols.div_ceil(4)
    }

    /// Packs one row of trits (each in {-1, 0, 1}) into `out`.
    pub fn pack_row(trits: &[i8], out: &mut [u8]) {
        out.fill(0);
        for (i, &t) in trits.iter().enumerate() {
            debug_assert!((-1..=1).contains(&t));
            out[i / 4] |= ((t + 1) as u8 & 3) << (2 * (i % 4));
        }
    }

    /// Assembles a matrix from rows packed with [`Self::pack_row`]. `scales` holds either one
    /// scale for the whole tensor or `cols / block_len` per row.
    pub fn from_parts(rows: usize, cols: usize, packed: Vec<u8>, block_len: usize, scales: Vec<f32>) -> Result<Self, ShapeError> {
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
        let (block_len, scales) = if scales.windows(2).all(|w| w[0] == w[1]) {
            (cols, vec![scales[0]])
        } else {
            (block_len, scales)
        };
        Ok(Self { rows, cols, packed, block_len, scales })
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

    fn scale(&self, row: usize, block: usize) -> f32 {
        if self.scales.len() == 1 { self.scales[0] } else { self.scales[row * (self.cols / self.block_len) + block] }
    }

    /// Unpacks row `r` into `trits`.
    pub fn unpack_row(&self, r: usize, trits: &mut [i8]) {
        let bytes = &self.packed[r * self.cols / 4..(r + 1) * self.cols / 4];
        for (i, t) in trits.iter_mut().enumerate().take(self.cols) {
            *t = ((bytes[i / 4] >> (2 * (i % 4))) & 3) as i8 - 1;
        }
    }

    /// `out[t * rows + r] = Σ_i W[r, i] · x[t, i]` for every token row `t` of `acts`, which
    /// must be quantized per token.
    pub fn gemm(&self, pool: &ThreadPool, acts: &QuantActs, out: &mut [f32]) {
        assert_eq!(acts.k, self.cols, "activation width does not match the weights");
        assert_eq!(acts.block_len, self.cols, "ternary kernels take per-token activations");
        assert_eq!(out.len(), acts.n * self.rows);
        let out = SyncOut::new(out);
        let parts = pool.n_threads() * 4;
        pool.for_each(parts, &|p| {
            let range = split_range(self.rows, parts, 8, p);
            let mut trits = vec![0i8; self.cols];
            for r in range {
                // Unpack the row once and reuse it for every token (prefill).
                self.unpack_row(r, &mut trits);
                for t in 0..acts.n {
                    let x = acts.row(t);
                    let mut y = 0f32;
                    for (b, (wb, xb)) in trits.chunks_exact(self.block_len).zip(x.chunks_exact(self.block_len)).enumerate() {
                        let isum: i32 = wb.iter().zip(xb).map(|(&w, &q)| i32::from(w) * i32::from(q)).sum();
                        y += isum as f32 * self.scale(r, b);
                    }
                    out.set(t * self.rows + r, y / acts.inv[t]);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_matches_float_math_on_a_small_case() {
        let (rows, cols) = (3, 8);
        let trits: Vec<i8> = (0..rows * cols).map(|i| (i % 3) as i8 - 1).collect();
        let mut packed = vec![0u8; rows * 2];
        for r in 0..rows {
            TernaryMatrix::pack_row(&trits[r * cols..(r + 1) * cols], &mut packed[r * 2..r * 2 + 2]);
        }
        let m = TernaryMatrix::from_parts(rows, cols, packed, cols, vec![0.5]).unwrap();
        let x: Vec<f32> = (0..2 * cols).map(|i| i as f32 - 4.0).collect();
        let mut acts = QuantActs::default();
        acts.quantize(ActFormat::PerToken, &x, cols);
        let mut out = vec![0f32; 2 * rows];
        m.gemm(&ThreadPool::new(2), &acts, &mut out);
        for t in 0..2 {
            for r in 0..rows {
                let want: f32 = (0..cols)
                    .map(|i| f32::from(trits[r * cols + i]) * 0.5 * f32::from(acts.q[t * cols + i]) / acts.inv[t])
                    .sum();
                assert!((out[t * rows + r] - want).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn pack_unpack_round_trip() {
        let trits: Vec<i8> = (0..12).map(|i| ((i * 5) % 3) as i8 - 1).collect();
        let mut packed = vec![0u8; 3];
        TernaryMatrix::pack_row(&trits, &mut packed);
        let m = TernaryMatrix::from_parts(1, 12, packed, 4, vec![1.0, 2.0, 3.0]).unwrap();
        let mut back = vec![0i8; 12];
        m.unpack_row(0, &mut back);
        assert_eq!(back, trits);
    }

    #[test]
    fn bad_parts_are_rejected() {
        assert!(TernaryMatrix::from_parts(2, 6, vec![0; 4], 6, vec![1.0]).is_err());
        assert!(TernaryMatrix::from_parts(2, 8, vec![0; 3], 8, vec![1.0]).is_err());
        assert!(TernaryMatrix::from_parts(2, 8, vec![0; 4], 8, vec![f32::NAN]).is_err());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The kernel equals the definition `Σ_b scale[r,b] · Σ_{i∈b} t·q / s` on random
        /// shapes, including one shared scale, per-block scales and several token rows.
        #[test]
        fn gemm_matches_the_definition(
            rows in 1usize..20,
            blocks in 1usize..4,
            block_len in prop::sample::select(vec![4usize, 8, 32]),
            n in 1usize..4,
            shared in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let cols = blocks * block_len;
            let mut state = seed | 1;
            let mut next = || { state ^= state << 13; state ^= state >> 7; state ^= state << 17; state };
            let trits: Vec<i8> = (0..rows * cols).map(|_| (next() % 3) as i8 - 1).collect();
            let scales: Vec<f32> = if shared { vec![0.37] } else { (0..rows * blocks).map(|_| (next() % 1000) as f32 / 997.0 + 0.01).collect() };
            let rb = TernaryMatrix::packed_row_bytes(cols);
            let mut packed = vec![0u8; rows * rb];
            for r in 0..rows {
                TernaryMatrix::pack_row(&trits[r * cols..(r + 1) * cols], &mut packed[r * rb..(r + 1) * rb]);
            }
            let m = TernaryMatrix::from_parts(rows, cols, packed, block_len, scales.clone()).unwrap();
            let x: Vec<f32> = (0..n * cols).map(|_| (next() % 2001) as f32 / 100.0 - 10.0).collect();
            let mut acts = QuantActs::default();
            acts.quantize(ActFormat::PerToken, &x, cols);
            let mut out = vec![0f32; n * rows];
            m.gemm(&ThreadPool::new(2), &acts, &mut out);
            for t in 0..n {
                for r in 0..rows {
                    let mut want = 0f64;
                    for b in 0..blocks {
                        let s = if shared { scales[0] } else { scales[r * blocks + b] };
                        let isum: i64 = (b * block_len..(b + 1) * block_len)
                            .map(|i| i64::from(trits[r * cols + i]) * i64::from(acts.q[t * cols + i]))
                            .sum();
                        want += isum as f64 * f64::from(s);
                    }
                    want /= f64::from(acts.inv[t]);
                    let got = f64::from(out[t * rows + r]);
                    prop_assert!((got - want).abs() <= 1e-4 * want.abs().max(1.0), "t{t} r{r}: {got} vs {want}");
                }
            }
        }
    }
}
