//! Micro-benchmarks of every kernel at bitnet-b1.58-2B-4T shapes (width 2560, FFN 6912,
//! vocabulary 128256), at every ISA level this CPU has. divan reports bytes/s (weight bytes
//! read: compare with the machine's read bandwidth) and items/s (multiply-adds: GMAC/s).
//!
//! `cargo bench -p ternlm-kernels --bench kernels` (add `-- ternary` to filter). Threads
//! follow `TERNLM_BENCH_THREADS` (default 1, so numbers are per core).

use divan::counter::{BytesCount, ItemsCount};
use divan::{Bencher, black_box};
use ternlm_kernels::act_quant::{ActFormat, QuantActs};
use ternlm_kernels::attention::{AttnShape, attention};
use ternlm_kernels::bandwidth::read_bandwidth;
use ternlm_kernels::blockq::{BlockKind, BlockMatrix, PreparedActs, WeightBytes};
use ternlm_kernels::isa::Isa;
use ternlm_kernels::ternary::TernaryMatrix;
use ternlm_kernels::{ThreadPool, ops};

const D: usize = 2560;
const FF: usize = 6912;
/// Head rows benchmarked (a slice of the 128256-row vocabulary keeps runs short).
const HEAD_ROWS: usize = 16384;

fn main() {
    eprintln!("read bandwidth (1 thread, 256 MB): {:.1} GB/s", read_bandwidth(&pool(), 256 << 20, 3) / 1e9);
    divan::main();
}

fn pool() -> ThreadPool {
    ThreadPool::new(std::env::var("TERNLM_BENCH_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(1))
}

fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

fn ternary(rows: usize, cols: usize) -> TernaryMatrix {
    ternary_blocks(rows, cols, cols)
}

/// As [`ternary`], with a scale per `block` columns of each row (TQ2_0 has one per 256).
fn ternary_blocks(rows: usize, cols: usize, block: usize) -> TernaryMatrix {
    let rb = TernaryMatrix::packed_row_bytes(cols);
    let trits: Vec<i8> = noise(rows * cols, 7).iter().map(|v| (v * 1.5).round() as i8).collect();
    let mut packed = vec![0u8; rows * rb];
    for r in 0..rows {
        TernaryMatrix::pack_row(&trits[r * cols..(r + 1) * cols], &mut packed[r * rb..(r + 1) * rb]);
    }
    let scales = if block == cols { vec![0.5] } else { noise(rows * cols / block, 5).iter().map(|v| 0.25 + v.abs()).collect() };
    TernaryMatrix::from_parts(rows, cols, packed, block, scales).expect("valid matrix")
}

/// Ternary x int8: (rows, cols, tokens) = FFN up and down at decode, at a batch of 8 decoding
/// sequences (or a speculative step of 8 positions), FFN up at 16 and 64 (the short-batch
/// kernel's range) and at pp128 (the prefill tiles).
#[divan::bench(args = [(FF, D, 1), (D, FF, 1), (FF, D, 8), (D, FF, 8), (FF, D, 16), (FF, D, 64), (FF, D, 128)], consts = [0, 1, 2, 3])]
fn ternary_gemm<const LEVEL: usize>(b: Bencher, (rows, cols, n): (usize, usize, usize)) {
    ternary_bench::<LEVEL>(b, ternary(rows, cols), n);
}

/// TQ2_0's layout (a scale per 256 columns) at pp128: FFN up and down, prefill tiles (AVX-512
/// VNNI and AMX levels).
#[divan::bench(args = [(FF, D), (D, FF)], consts = [2, 3])]
fn ternary_blocks_pp128<const LEVEL: usize>(b: Bencher, (rows, cols): (usize, usize)) {
    ternary_bench::<LEVEL>(b, ternary_blocks(rows, cols, 256), 128);
}

fn ternary_bench<const LEVEL: usize>(b: Bencher, m: TernaryMatrix, n: usize) {
    let Some(&level) = Isa::available().get(LEVEL) else { return };
    let (rows, cols) = (m.rows(), m.cols());
    let mut acts = QuantActs::default();
    acts.quantize(ActFormat::PerToken, &noise(n * cols, 3), cols);
    let mut out = vec![0f32; n * rows];
    let pool = pool();
    b.counter(BytesCount::new(m.bytes())).counter(ItemsCount::new(rows * cols * n)).bench_local(|| {
        m.gemm_at(level, &pool, &acts, &mut out);
        black_box(&out);
    });
}

/// Block-quantized / float weights as output heads and ordinary linears, one token.
#[divan::bench(args = [BlockKind::Q6K, BlockKind::Q8_0, BlockKind::F16, BlockKind::Q4_1, BlockKind::Q4_0, BlockKind::Q4K], consts = [0, 1, 2])]
fn block_gemv<const LEVEL: usize>(b: Bencher, kind: BlockKind) {
    let Some(&level) = Isa::available().get(LEVEL) else { return };
    let rows = HEAD_ROWS;
    let m = block_matrix(kind, rows);
    let mut acts = PreparedActs::default();
    m.prepare(&noise(D, 5), &mut acts);
    let mut out = vec![0f32; rows];
    let pool = pool();
    b.counter(BytesCount::new(m.bytes())).counter(ItemsCount::new(rows * D)).bench_local(|| {
        m.gemm_at(level, &pool, &acts, &mut out);
        black_box(&out);
    });
}

/// The float, Q6_K and 32-wide block heads against a batch of 8 tokens (decoding sequences,
/// or one sequence's speculative verification); SIMD levels only: the scalar reference takes
/// seconds per call at this size.
#[divan::bench(args = [BlockKind::F16, BlockKind::Q6K, BlockKind::Q8_0, BlockKind::Q4_1], consts = [1, 2])]
fn block_gemm8<const LEVEL: usize>(b: Bencher, kind: BlockKind) {
    let Some(&level) = Isa::available().get(LEVEL) else { return };
    let (rows, n) = (HEAD_ROWS, 8);
    let m = block_matrix(kind, rows);
    let mut acts = PreparedActs::default();
    m.prepare(&noise(n * D, 5), &mut acts);
    let mut out = vec![0f32; n * rows];
    let pool = pool();
    b.counter(BytesCount::new(m.bytes())).counter(ItemsCount::new(rows * D * n)).bench_local(|| {
        m.gemm_at(level, &pool, &acts, &mut out);
        black_box(&out);
    });
}

/// The F16 head against the positions of one speculative verification step (1 to 16): how
/// its cost grows with the positions (the weights are read once per step).
#[divan::bench(args = [1, 2, 4, 8, 16])]
fn f16_head_positions(b: Bencher, n: usize) {
    let rows = HEAD_ROWS;
    let m = block_matrix(BlockKind::F16, rows);
    let mut acts = PreparedActs::default();
    m.prepare(&noise(n * D, 5), &mut acts);
    let mut out = vec![0f32; n * rows];
    let pool = pool();
    b.counter(BytesCount::new(m.bytes())).counter(ItemsCount::new(rows * D * n)).bench_local(|| {
        m.gemm(&pool, &acts, &mut out);
        black_box(&out);
    });
}

/// `rows` × [`D`] random weights of `kind`.
fn block_matrix(kind: BlockKind, rows: usize) -> BlockMatrix {
    let bytes_len = rows * D / kind.block_len() * kind.block_bytes();
    // Random bytes with small finite f16 values at every 2-byte slot make valid blocks.
    let mut data: Vec<u8> = noise(bytes_len, 11).iter().map(|v| (v * 127.0) as i8 as u8).collect();
    for c in data.chunks_exact_mut(2) {
        if c[1] & 0x7C == 0x7C {
            c[1] &= !0x40;
        }
    }
    BlockMatrix::new(kind, rows, D, WeightBytes::from_vec(data)).expect("valid matrix")
}

/// Activation quantization of one token (the input of every ternary linear).
#[divan::bench(args = [ActFormat::PerToken, ActFormat::Q8K, ActFormat::Q8_0])]
fn act_quant(b: Bencher, f: ActFormat) {
    let x = noise(FF, 2);
    let mut acts = QuantActs::default();
    b.counter(BytesCount::new(FF * 4)).bench_local(|| {
        acts.quantize(f, &x, FF);
        black_box(&acts);
    });
}

#[divan::bench]
fn rms_norm(b: Bencher) {
    let x = noise(D, 2);
    let w = noise(D, 3);
    let mut out = vec![0f32; D];
    b.counter(BytesCount::new(D * 8)).bench_local(|| {
        ops::rms_norm(&x, &w, 1e-5, &mut out);
        black_box(&out);
    });
}

/// One decode step of attention (20 heads, 5 KV heads, head size 128) over a 512-token cache.
#[divan::bench]
fn attention_decode(b: Bencher) {
    let (heads, kv_heads, hd, ctx) = (20, 5, 128, 512);
    let q = noise(heads * hd, 1);
    let to_f16 = |v: Vec<f32>| v.into_iter().map(half::f16::from_f32).collect::<Vec<_>>();
    let k = to_f16(noise(ctx * kv_heads * hd, 2));
    let v = to_f16(noise(ctx * kv_heads * hd, 3));
    let mut out = vec![0f32; heads * hd];
    let pool = pool();
    let shape = AttnShape { n_heads: heads, n_kv_heads: kv_heads, head_dim: hd, pos0: ctx - 1, n_tokens: 1 };
    b.counter(BytesCount::new(2 * ctx * kv_heads * hd * 2)).bench_local(|| {
        attention(&pool, shape, &q, &k, &v, &mut out);
        black_box(&out);
    });
}
