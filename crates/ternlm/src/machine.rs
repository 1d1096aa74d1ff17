//! What the machine gives the kernels: the CPU instruction-set level they run at and the
//! memory read bandwidth that bounds decode speed. Front ends report these next to their
//! timings; they ask here because the kernel crate sits below this one and is not theirs to
//! reach into.

use ternlm_kernels::ThreadPool;
use ternlm_kernels::bandwidth;
use ternlm_kernels::isa::{self, Isa};

use crate::model::Model;
use crate::weight_type::WeightType;

/// The kernel level in use (`scalar`, `avx2`, `avx512`): the CPU's best, or lower where
/// `TERNLM_ISA` forces it.
pub fn active_isa_name() -> &'static str {
    isa::active().name()
}

/// One line per kernel level this CPU's self-check turned down (its SIMD kernels disagreed
/// with the scalar ones on small known problems at first use, so the next level down runs);
/// empty when none was. Front ends print these once.
pub fn kernel_check_warnings() -> &'static [String] {
    isa::self_check_warnings()
}

/// The best kernel level this CPU supports, whatever `TERNLM_ISA` says; differs from
/// [`active_isa_name`] only when the level is forced down.
pub fn best_isa_name() -> &'static str {
    Isa::detect().name()
}

/// Bytes per second that `model`'s kernel threads read together from a `bytes`-sized buffer,
/// best of `passes` passes: the ceiling decode traffic is measured against, taken on the
/// same threads the model runs on.
pub fn read_bandwidth(model: &Model, bytes: usize, passes: usize) -> f64 {
    bandwidth::read_bandwidth(model.pool(), bytes, passes)
}

/// [`read_bandwidth`] on `threads` threads of a pool made for the probe, for a caller that
/// has no model loaded.
pub fn read_bandwidth_on_threads(threads: usize, bytes: usize, passes: usize) -> f64 {
    bandwidth::read_bandwidth(&ThreadPool::new(threads.max(1)), bytes, passes)
}

/// Int8 multiply-accumulates per second of ternlm's own prefill kernel on `threads` threads:
/// a 2560 x 2560 ternary matrix (2B-4T's attention projections) times a 64-token batch,
/// best of `passes`. The compute ceiling that prefill is measured against: it counts what
/// the kernels reach, not the CPU's datasheet peak.
pub fn int8_macs_per_s(threads: usize, passes: usize) -> f64 {
    use ternlm_kernels::act_quant::{ActFormat, QuantActs};
    const N: usize = 2560;
    const TOKENS: usize = 64;
    let pool = ThreadPool::new(threads.max(1));
    let Some(m) = patterned_ternary(N, N) else { return 0.0 };
    let x: Vec<f32> = (0..TOKENS * N).map(|i| ((i * 7919) % 255) as f32 - 127.0).collect();
    let mut acts = QuantActs::default();
    acts.quantize(ActFormat::PerToken, &x, N);
    let mut out = vec![0f32; TOKENS * N];
    (N * N * TOKENS) as f64 / best_time(passes, &mut || m.gemm(&pool, &acts, &mut out))
}

/// A `rows x cols` ternary matrix of a fixed pattern of trits, one scale: the kernels' speed
/// does not depend on the values. `None` only for shapes the kernels refuse.
fn patterned_ternary(rows: usize, cols: usize) -> Option<ternlm_kernels::ternary::TernaryMatrix> {
    use ternlm_kernels::ternary::TernaryMatrix;
    let trits: Vec<i8> = (0..cols).map(|i| (i % 3) as i8 - 1).collect();
    let mut row = vec![0u8; TernaryMatrix::packed_row_bytes(cols)];
    TernaryMatrix::pack_row(&trits, &mut row);
    let mut packed = Vec::with_capacity(rows * row.len());
    for _ in 0..rows {
        packed.extend_from_slice(&row);
    }
    TernaryMatrix::from_parts(rows, cols, packed, cols, vec![1.0]).ok()
}

/// The best of `passes` timed runs of `run` (at least one), in seconds, after one untimed
/// run that warms caches and pages.
fn best_time(passes: usize, run: &mut dyn FnMut()) -> f64 {
    run();
    let mut best = f64::INFINITY;
    for _ in 0..passes.max(1) {
        let t = std::time::Instant::now();
        run();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

/// Bytes per second that decode's kernel, ternlm's one-token matrix product, streams from a
/// synthetic `bytes`-sized matrix of type `ty` on `threads` threads, best of `passes`
/// (`bytes` is rounded down to whole rows, at least one). What a decode step's weight reads
/// reach on this machine: the kernel's own arithmetic and whatever share of the matrix the
/// CPU caches hold are in it, which a plain read probe misses (on one 2-core Xeon, decode
/// of a 97 MB model read 25 GB/s where a read probe of the same size gave 21).
pub fn decode_weight_rate(threads: usize, ty: WeightType, bytes: usize, passes: usize) -> f64 {
    use ternlm_kernels::act_quant::{ActFormat, QuantActs};
    use ternlm_kernels::blockq::{BlockMatrix, PreparedActs, WeightBytes};
    use ternlm_kernels::ternary::TernaryMatrix;
    // Wide enough for every block size (256 for K-quants), as wide as 2B-4T's rows.
    const COLS: usize = 2560;
    let pool = ThreadPool::new(threads.max(1));
    let x: Vec<f32> = (0..COLS).map(|i| ((i * 7919) % 255) as f32 / 64.0 - 2.0).collect();
    match crate::linear::block_kind(ty.into()) {
        None => {
            let row_bytes = TernaryMatrix::packed_row_bytes(COLS);
            let rows = (bytes / row_bytes).max(1);
            let Some(m) = patterned_ternary(rows, COLS) else { return 0.0 };
            let mut acts = QuantActs::default();
            acts.quantize(ActFormat::PerToken, &x, COLS);
            let mut out = vec![0f32; rows];
            (rows * row_bytes) as f64 / best_time(passes, &mut || m.gemm(&pool, &acts, &mut out))
        }
        Some(kind) => {
            let row_bytes = COLS / kind.block_len() * kind.block_bytes();
            let rows = (bytes / row_bytes).max(1);
            // 0x11 everywhere: small normal scales (f16 and bf16 0x1111), mid-range quants.
            let Ok(m) = BlockMatrix::new(kind, rows, COLS, WeightBytes::from_vec(vec![0x11; rows * row_bytes])) else { return 0.0 };
            let mut acts = PreparedActs::default();
            m.prepare(&x, &mut acts);
            let mut out = vec![0f32; rows];
            m.bytes() as f64 / best_time(passes, &mut || m.gemm(&pool, &acts, &mut out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_named_and_the_active_one_never_exceeds_the_cpu() {
        let names = ["scalar", "avx2", "avx512", "amx"];
        let rank = |n: &str| names.iter().position(|&x| x == n);
        assert!(rank(active_isa_name()).is_some() && rank(best_isa_name()).is_some());
        assert!(rank(active_isa_name()) <= rank(best_isa_name()));
        let bw = read_bandwidth_on_threads(2, 1 << 20, 2);
        assert!(bw.is_finite() && bw > 0.0);
        let macs = int8_macs_per_s(1, 1);
        assert!(macs.is_finite() && macs > 1e8, "{macs}");
        for ty in [WeightType::Q4_1, WeightType::Q6K, WeightType::F16, WeightType::TQ2_0, WeightType::I2S] {
            let rate = decode_weight_rate(2, ty, 1 << 20, 2);
            assert!(rate.is_finite() && rate > 1e8, "{ty}: {rate}");
        }
    }
}
