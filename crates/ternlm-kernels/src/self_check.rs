//! The known-answer check a SIMD level passes before its first use: every kernel family runs
//! a few small random problems at the level and at the scalar level, and their bits must be
//! equal (each level is written to give exactly its scalar twin's results, and property
//! tests prove it wherever the level exists). A kernel written for a level the developer's
//! machine lacked is thus checked on the machine that runs it; a level that disagrees is not
//! used (see [`crate::isa::active`]). The whole check takes well under a millisecond.

use half::{bf16, f16};

use crate::act_quant::{ActFormat, QuantActs};
use crate::attention::{AttnShape, attention_at};
use crate::blockq::{BlockKind, BlockMatrix, PreparedActs, WeightBytes};
use crate::int8::Int8Matrix;
use crate::isa::Isa;
use crate::ops::{RopeStyle, rope_at, rope_cache, swiglu_at};
use crate::pool::ThreadPool;
use crate::ternary::{TernaryLayout, TernaryMatrix};

/// A small deterministic generator (xorshift): the check is the same on every run.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [-2, 2).
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 22) as f32 - 2.0
    }

    fn floats(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }

    fn trit(&mut self) -> i8 {
        (self.next() % 3) as i8 - 1
    }
}

/// Which side of a comparison a check computes: the kernels of a level, or that level's
/// scalar twin (the scalar kernels, except where a level defines its own order: the AMX
/// level's block products).
#[derive(Clone, Copy, Debug)]
enum Run {
    At(Isa),
    TwinOf(Isa),
}

impl Run {
    /// The level whose kernels run (the twin's families run at the scalar level).
    fn level(self) -> Isa {
        match self {
            Self::At(level) => level,
            Self::TwinOf(_) => Isa::Scalar,
        }
    }
}

/// One kernel family's check: its outputs' bits at a level. A problem that cannot be built
/// gives [`UNBUILT`] (then the level is not trusted: see [`first_disagreement`]).
type Check = fn(Run, &ThreadPool) -> Vec<u32>;

const UNBUILT: u32 = u32::MAX;

const CHECKS: [(&str, Check); 7] = [
    ("activation quantization", quantization),
    ("ternary products", ternary),
    ("block-quantized products", block),
    ("int8 head", int8_head),
    ("attention", attention),
    ("rope", rope),
    ("swiglu", swiglu),
];

/// The first kernel family whose results at `level` differ from its scalar twin's, if any.
/// With `corrupt`, the level's first result is altered before the comparison (a forced
/// mismatch, for testing the fallback on machines whose kernels all agree).
pub(crate) fn first_disagreement(level: Isa, corrupt: bool) -> Option<&'static str> {
    if level == Isa::Scalar {
        return None;
    }
    let pool = ThreadPool::new(1);
    for (i, (name, check)) in CHECKS.iter().enumerate() {
        let mut got = check(Run::At(level), &pool);
        if corrupt && i == 0 {
            got[0] ^= 1;
        }
        if got == [UNBUILT] || got != check(Run::TwinOf(level), &pool) {
            return Some(name);
        }
    }
    #[cfg(target_arch = "x86_64")]
    if level == Isa::Amx && !crate::ternary::amx::known_answer_holds() {
        return Some("ternary AMX tiles");
    }
    None
}

fn bits(v: &[f32]) -> impl Iterator<Item = u32> + '_ {
    v.iter().map(|x| x.to_bits())
}

fn quantization(run: Run, _: &ThreadPool) -> Vec<u32> {
    let level = run.level();
    let x = Rng(1).floats(512);
    let mut out = Vec::new();
    for f in [ActFormat::PerToken, ActFormat::Q8_0, ActFormat::Q8_1, ActFormat::Q8K] {
        let mut a = QuantActs::default();
        a.quantize_at(level, f, &x, 512);
        out.extend(a.q.iter().map(|&v| v as u8 as u32));
        out.extend(bits(&a.d).chain(bits(&a.s)).chain(bits(&a.inv)));
        out.extend(a.bsums.iter().chain(&a.tsum).map(|&v| v as u32));
    }
    out
}

/// Both ternary layouts, one token (decode's kernel) and five (prefill's), a ragged width.
fn ternary(run: Run, pool: &ThreadPool) -> Vec<u32> {
    let level = run.level();
    let (rows, cols) = (6, 576);
    let mut rng = Rng(2);
    let row_bytes = TernaryMatrix::packed_row_bytes(cols);
    let mut packed = vec![0u8; rows * row_bytes];
    for row in packed.chunks_exact_mut(row_bytes) {
        let trits: Vec<i8> = (0..cols).map(|_| rng.trit()).collect();
        TernaryMatrix::pack_row(&trits, row);
    }
    let Ok(m) = TernaryMatrix::from_parts(rows, cols, packed, cols, vec![0.75]) else { return vec![UNBUILT] };
    let mut out = Vec::new();
    for m in [Some(m.clone()), m.relayout(pool, TernaryLayout::Bits1_6)].into_iter().flatten() {
        for n in [1, 5] {
            let mut acts = QuantActs::default();
            acts.quantize_at(Isa::Scalar, ActFormat::PerToken, &rng.floats(n * cols), cols);
            let mut y = vec![0f32; n * rows];
            m.gemm_at(level, pool, &acts, &mut y);
            out.extend(bits(&y));
        }
    }
    out
}

/// Random bytes for a `kind` matrix with every scale (and every float weight) a finite value
/// of modest size, so no product overflows or carries a NaN.
fn block_bytes(kind: BlockKind, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let n_blocks = rows * cols / kind.block_len();
    let mut data: Vec<u8> = (0..n_blocks * kind.block_bytes()).map(|_| rng.next() as u8).collect();
    let half_at = |data: &mut [u8], at: usize, v: f32| data[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
    for b in data.chunks_exact_mut(kind.block_bytes()) {
        match kind {
            BlockKind::F32 => b.copy_from_slice(&rng.f().to_le_bytes()),
            BlockKind::F16 => half_at(b, 0, rng.f()),
            BlockKind::BF16 => b.copy_from_slice(&bf16::from_f32(rng.f()).to_le_bytes()),
            BlockKind::Q4_0 | BlockKind::Q8_0 => half_at(b, 0, rng.f() / 64.0),
            BlockKind::Q4_1 | BlockKind::Q4K => {
                half_at(b, 0, rng.f() / 64.0);
                half_at(b, 2, rng.f() / 64.0);
            }
            BlockKind::Q6K => half_at(b, 208, rng.f() / 64.0),
        }
    }
    data
}

/// Every block type, one token, three, and 17 (one full tile of 16 and a ragged one where
/// batches run on tiles).
fn block(run: Run, pool: &ThreadPool) -> Vec<u32> {
    let rows = 3;
    let mut rng = Rng(3);
    let mut out = Vec::new();
    for kind in [BlockKind::F32, BlockKind::F16, BlockKind::BF16, BlockKind::Q4_0, BlockKind::Q4_1, BlockKind::Q8_0, BlockKind::Q4K, BlockKind::Q6K] {
        // One K-quant block per row; nine 32-blocks for the others (a tail past 8).
        let cols = if kind.block_len() == 256 { 256 } else { 288 };
        let Ok(m) = BlockMatrix::new(kind, rows, cols, WeightBytes::from_vec(block_bytes(kind, rows, cols, &mut rng))) else { return vec![UNBUILT] };
        for n in [1, 3, 17] {
            let mut acts = PreparedActs::default();
            m.prepare_at(Isa::Scalar, &rng.floats(n * cols), &mut acts);
            let mut y = vec![0f32; n * rows];
            match run {
                Run::At(level) => m.gemm_at(level, pool, &acts, &mut y),
                Run::TwinOf(level) => m.gemm_twin(level, pool, &acts, &mut y),
            }
            out.extend(bits(&y));
        }
    }
    out
}

fn int8_head(run: Run, pool: &ThreadPool) -> Vec<u32> {
    let level = run.level();
    let (rows, cols) = (10, 320);
    let w = Rng(4).floats(rows * cols);
    let m = Int8Matrix::quantize(pool, rows, cols, &|r, buf| buf.copy_from_slice(&w[r * cols..(r + 1) * cols]));
    let mut acts = QuantActs::default();
    acts.quantize_at(Isa::Scalar, Int8Matrix::ACT_FORMAT, &Rng(5).floats(2 * cols), cols);
    let mut y = vec![0f32; 2 * rows];
    m.gemm_at(level, pool, &acts, &mut y);
    bits(&y).collect()
}

/// Two query heads on one KV head of 64 dimensions, two new tokens after three cached.
fn attention(run: Run, pool: &ThreadPool) -> Vec<u32> {
    let level = run.level();
    let shape = AttnShape { n_heads: 2, n_kv_heads: 1, head_dim: 64, pos0: 3, n_tokens: 2 };
    let mut rng = Rng(6);
    let q = rng.floats(2 * 2 * 64);
    let k: Vec<f16> = rng.floats(5 * 64).into_iter().map(f16::from_f32).collect();
    let v: Vec<f16> = rng.floats(5 * 64).into_iter().map(f16::from_f32).collect();
    let mut y = vec![0f32; q.len()];
    attention_at(level, pool, shape, &q, &k, &v, &mut y);
    bits(&y).collect()
}

fn rope(run: Run, _: &ThreadPool) -> Vec<u32> {
    let level = run.level();
    let mut cache = Vec::new();
    rope_cache(37, 64, 10000.0, None, &mut cache);
    let mut out = Vec::new();
    for style in [RopeStyle::Interleaved, RopeStyle::Neox] {
        let mut x = Rng(7).floats(3 * 64);
        rope_at(level, &mut x, 64, style, &cache);
        out.extend(bits(&x));
    }
    out
}

fn swiglu(run: Run, _: &ThreadPool) -> Vec<u32> {
    let level = run.level();
    let mut rng = Rng(8);
    let (mut gate, up) = (rng.floats(2 * 40), rng.floats(2 * 40));
    swiglu_at(level, &mut gate, &up, 40, 0);
    bits(&gate).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_level_of_this_cpu_agrees_and_a_forced_mismatch_is_caught() {
        for level in Isa::available() {
            assert_eq!(first_disagreement(level, false), None, "{level:?}");
            if level > Isa::Scalar {
                assert_eq!(first_disagreement(level, true), Some("activation quantization"), "{level:?}");
            }
        }
    }

    #[test]
    fn every_check_builds_its_problems_and_returns_many_values() {
        let pool = ThreadPool::new(1);
        for (name, check) in CHECKS {
            let out = check(Run::At(Isa::Scalar), &pool);
            assert!(out.len() >= 20 && out != [UNBUILT], "{name}: {} values", out.len());
        }
    }

    #[test]
    fn the_check_is_fast() {
        let t = std::time::Instant::now();
        for level in Isa::available() {
            first_disagreement(level, false);
        }
        eprintln!("self-check of {:?}: {:?}", Isa::available(), t.elapsed());
        // Well under a millisecond per level in release builds; generous for debug builds
        // and loaded machines.
        assert!(t.elapsed().as_millis() < 500, "{:?}", t.elapsed());
    }
}
