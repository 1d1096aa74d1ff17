//! What the machine gives the kernels: the CPU instruction-set level they run at and the
//! memory read bandwidth that bounds decode speed. Front ends report these next to their
//! timings; they ask here because the kernel crate sits below this one and is not theirs to
//! reach into.

use ternlm_kernels::ThreadPool;
use ternlm_kernels::bandwidth;
use ternlm_kernels::isa::{self, Isa};

use crate::model::Model;

/// The kernel level in use (`scalar`, `avx2`, `avx512`): the CPU's best, or lower where
/// `TERNLM_ISA` forces it.
pub fn active_isa_name() -> &'static str {
    isa::active().name()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_named_and_the_active_one_never_exceeds_the_cpu() {
        let names = ["scalar", "avx2", "avx512"];
        let rank = |n: &str| names.iter().position(|&x| x == n);
        assert!(rank(active_isa_name()).is_some() && rank(best_isa_name()).is_some());
        assert!(rank(active_isa_name()) <= rank(best_isa_name()));
        let bw = read_bandwidth_on_threads(2, 1 << 20, 2);
        assert!(bw.is_finite() && bw > 0.0);
    }
}
