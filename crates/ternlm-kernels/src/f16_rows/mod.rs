//! F16 weight rows times f32 activations (F16 output heads and linear layers): one 8-lane
//! accumulator per row and token, so a register tile of several rows and tokens converts each
//! weight once for all its tokens and each activation once for all its rows. A row's result
//! is the same arithmetic whatever the tile (lane `l` sums `w[8s + l]·x[8s + l]` in order of
//! `s` with fused multiply-adds, the lanes fold as [`hsum_float_8`], the ragged tail adds in
//! f64), so a sequence's logits do not depend on what it is batched with.
//!
//! One token streams the rows one at a time (`avx2.rs`; AVX-512 CPUs use it too: it is bound
//! by memory). A batch (several sequences, or the positions of one speculative verification
//! step) reads each row from memory once for all its tokens: tiles of rows by tokens over the
//! tokens' activations laid out by [`interleave`], 256-bit lanes at AVX2 (`avx2.rs`), pairs of
//! tokens in the two halves of 512-bit vectors at AVX-512 (`avx512.rs`). The reference is
//! [`dot_row`], which every level must match bit for bit.

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;

use half::f16;

use crate::blockq::hsum_float_8;

/// `Σ w·x` over one row, `w` as little-endian F16 bytes: the reference for every level.
pub(crate) fn dot_row(w: &[u8], x: &[f32]) -> f32 {
    let k8 = x.len() / 8 * 8;
    let mut acc = [0f32; 8];
    for s in 0..k8 / 8 {
        for (l, a) in acc.iter_mut().enumerate() {
            let i = 8 * s + l;
            *a = f16::from_le_bytes([w[2 * i], w[2 * i + 1]]).to_f32().mul_add(x[i], *a);
        }
    }
    with_tail(hsum_float_8(acc), w, x, k8)
}

/// The folded lanes plus the columns from `from` on, summed in f64.
fn with_tail(folded: f32, w: &[u8], x: &[f32], from: usize) -> f32 {
    let mut sum = f64::from(folded);
    for i in from..x.len() {
        sum += f64::from(f16::from_le_bytes([w[2 * i], w[2 * i + 1]]).to_f32() * x[i]);
    }
    sum as f32
}

/// How a batch of `n` tokens splits into register passes of at most `per_pass` tokens, as
/// even as they go (7 tokens are 4 + 3, not 4 + 3 + 0: a short pass pays the weight
/// conversions for few tokens), each padded with zero tokens to a multiple of `pad`.
#[derive(Clone, Copy)]
pub(crate) struct Passes {
    n: usize,
    count: usize,
    pad: usize,
}

impl Passes {
    pub(crate) fn new(n: usize, per_pass: usize, pad: usize) -> Self {
        Self { n, count: n.div_ceil(per_pass), pad }
    }

    /// Each pass as `(first token, tokens, padded width, first value in the interleaved
    /// layout ÷ k8)`, in order.
    pub(crate) fn iter(self) -> impl Iterator<Item = (usize, usize, usize, usize)> {
        let (mut t0, mut at) = (0, 0);
        (0..self.count).map(move |p| {
            let nt = self.n / self.count + usize::from(p < self.n % self.count);
            let width = nt.next_multiple_of(self.pad);
            let pass = (t0, nt, width, at);
            t0 += nt;
            at += width;
            pass
        })
    }

    /// Padded tokens over all passes.
    fn width(self) -> usize {
        self.iter().map(|p| p.2).sum()
    }
}

/// Lays out the first `k8` (a multiple of 8) values of each of the `n` tokens of `xs` (`k`
/// apart) for the batch tiles: pass by pass, each pass's values interleaved by 8 columns
/// (token `j` of a pass `width` wide has its values `8s..8s + 8` at `(s·width + j)·8` from the
/// pass's start, padding tokens are zero), so a tile reads one sequential stream. Returns the
/// layout's start in `buf`, on a cache line.
pub(crate) fn interleave(xs: &[f32], k: usize, k8: usize, passes: Passes, buf: &mut Vec<f32>) -> usize {
    let total = passes.width() * k8;
    buf.clear();
    buf.resize(total + 16, 0.0);
    let start = buf.as_ptr().align_offset(64).min(16);
    for (t0, nt, width, at) in passes.iter() {
        let dst = &mut buf[start + at * k8..start + (at + width) * k8];
        for (s, chunk) in dst.chunks_exact_mut(8 * width).enumerate() {
            for (j, d) in chunk[..8 * nt].chunks_exact_mut(8).enumerate() {
                d.copy_from_slice(&xs[(t0 + j) * k + 8 * s..(t0 + j) * k + 8 * s + 8]);
            }
        }
    }
    start
}

thread_local! {
    /// The interleaved activations of the batch on this pool thread (reused across calls).
    static BATCH_ACTS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// This thread's interleaving buffer, taken out of the thread-local (and put back with
/// [`put_batch_acts`]) rather than borrowed in a closure: a closure would not inherit the
/// caller's target features, and tiles inlined into it would lose their vector instructions.
pub(crate) fn take_batch_acts() -> Vec<f32> {
    BATCH_ACTS.take()
}

pub(crate) fn put_batch_acts(buf: Vec<f32>) {
    BATCH_ACTS.set(buf);
}

#[cfg(test)]
mod tests {
    use half::f16;
    use proptest::prelude::*;

    use crate::ThreadPool;
    use crate::blockq::{BlockKind, BlockMatrix, PreparedActs, WeightBytes};
    use crate::isa::Isa;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// A token's outputs do not depend on the batch it is computed in, and every level
        /// gives the reference's bits: each of `k` tokens (1 to 20: one token, the batch tiles
        /// and their ragged passes) computed alone and within the batch, over row counts that
        /// leave ragged row tiles and widths with a ragged tail of fewer than 8 columns.
        #[test]
        fn a_tokens_outputs_do_not_depend_on_its_batch(rows in 1usize..40, cols in 1usize..300, k in 1usize..21, seed in any::<u64>()) {
            let mut state = seed | 1;
            let mut next = move || { state ^= state << 13; state ^= state >> 7; state ^= state << 17; state };
            let data: Vec<u8> = (0..rows * cols).flat_map(|_| f16::from_f32((next() % 2001) as f32 / 1000.0 - 1.0).to_le_bytes()).collect();
            let m = BlockMatrix::new(BlockKind::F16, rows, cols, WeightBytes::from_vec(data)).unwrap();
            let x: Vec<f32> = (0..k * cols).map(|_| (next() % 2001) as f32 / 100.0 - 10.0).collect();
            let mut acts = PreparedActs::default();
            m.prepare(&x, &mut acts);
            let pool = ThreadPool::new(2);
            let mut reference = vec![0f32; k * rows];
            m.gemm_at(Isa::Scalar, &pool, &acts, &mut reference);
            for level in Isa::available() {
                let mut batch = vec![0f32; k * rows];
                m.gemm_at(level, &pool, &acts, &mut batch);
                prop_assert_eq!(&batch, &reference, "{} differs from scalar", level.name());
                for t in 0..k {
                    let mut alone = PreparedActs::default();
                    m.prepare(&x[t * cols..(t + 1) * cols], &mut alone);
                    let mut out = vec![0f32; rows];
                    m.gemm_at(level, &pool, &alone, &mut out);
                    let same = out.iter().zip(&batch[t * rows..(t + 1) * rows]).all(|(a, b)| a.to_bits() == b.to_bits());
                    prop_assert!(same, "{}, token {} of {}: {:?} alone, {:?} in the batch", level.name(), t, k, out, &batch[t * rows..(t + 1) * rows]);
                }
            }
        }
    }
}
