//! The efficiency factors: what share of a machine's memory bandwidth and int8 rate
//! ternlm's decode and prefill actually reach. They were measured, not chosen, on the
//! machine this crate was developed on (a 2-core AMD EPYC Zen 4 KVM guest, AVX-512 VNNI,
//! 2.6 GHz nominal, 24 GB; other processes were compiling at the same time, so each figure
//! is the best of 3 runs, from two rounds on a quieter machine, 2026-12-02, with a busier
//! round's range in brackets):
//!
//! | what | measured |
//! |---|---|
//! | read bandwidth probe, 2 threads (`machine::read_bandwidth_on_threads(2, 512 MiB, 5)`) | 19.4, 20.3 GB/s (13.7 - 20.9) |
//! | int8 probe, 2 threads (`machine::int8_macs_per_s(2, 3)`) | 156, 188 G MAC/s (150 - 188) |
//! | decode, 2B-4T-shaped I2_S dummy (1.18 GB read per token), `bench -p 0 -n 16 -t 2` | 9.8, 10.1 tokens/s = 11.6, 12.0 GB/s (7.3 - 8.2 tokens/s) |
//! | decode, SmolLM2-135M Q4_1 (96.8 MB per token) | 133, 122 tokens/s = 12.8, 11.8 GB/s (73 - 99 tokens/s) |
//! | prefill, 64 tokens, 2B-4T dummy (2.41 G MAC per token) | 50, 54 tokens/s = 120, 131 G MAC/s (40 - 44 tokens/s) |
//! | prefill, 64 tokens, SmolLM2 (0.135 G MAC per token) | 276, 376 tokens/s = 37, 51 G MAC/s (200 - 230 tokens/s) |
//!
//! Decode reached 0.58 - 0.66 of the probed bandwidth on both models in the quiet rounds
//! (0.5 - 0.67 in the busy one, each measured in the same minute as its probe), hence
//! [`DECODE_SHARE_OF_READ_BANDWIDTH`]; in the quietest run (the calibration test of
//! `crates/ternlm-cli/tests/fit_cli.rs`, a 28.7 GB/s probe) 0.70 for the dummy and 0.62 for
//! SmolLM2, 17.1 and 184 tokens/s against 14.6 and 204 predicted. Prefill of ternary
//! weights reached 0.7 - 0.77 of the int8 probe (which times a ternary kernel); prefill of
//! block-quantized weights (Q4_1 here), whose kernels dequantize, 0.24 - 0.27. Decode was
//! memory-bound in every measurement, so its compute roof could not be measured apart: it
//! is taken to be the prefill rate, which a one-token product cannot exceed.
//!
//! `--hardware this` no longer divides by a plain read probe: on a 2-core Intel Xeon VM
//! (AVX-512 and AMX, a 480 MiB L3 as the guest sees it; 2026-12-02) decode reached 1.2 -
//! 1.4 of a read probe on SmolLM2, whose 97 MB partly stay in the cache, and 0.8 on the
//! 2B-4T dummy, so no one factor held on both machines. It times ternlm's own decode
//! kernels instead, each tensor type's over a synthetic matrix the size of the model's
//! working set (`machine::decode_weight_rate`), which takes in the kernels' arithmetic and
//! the caches. There, 2 threads, best of 5: Q4_1 27 - 35 GB/s and Q8_0 48 GB/s over 97
//! MiB, I2_S 29 GB/s and F16 21 - 22 GB/s over 1180 MiB; decode read 25.2 GB/s (SmolLM2,
//! 258 tokens/s) and 17.8 GB/s (dummy, 15.0 tokens/s): 0.73 - 0.75 of the kernels' combined
//! rate on both, hence [`PROBED`]`.bandwidth` = 0.75 (the rest is attention, norms and the
//! steps between matrices). The calibration test then predicted 252 - 302 tokens/s against
//! 215 - 263 measured for SmolLM2 and 15.5 - 15.7 against 14.9 - 15.5 for the dummy, in
//! three runs.
//!
//! Table entries give vendors' peaks, not probes, so [`PEAK`] scales the factors by what a
//! probe reaches of a peak: for the int8 rate, this machine's probe against its AVX-512
//! VNNI peak (2 cores x 2.6 GHz x 64 MACs = 332 G MAC/s: 0.47 - 0.57); for bandwidth, 0.8,
//! the share of DRAM peak that streaming reads typically reach (an estimate: a virtual
//! machine's peak is not known). GPU entries get the same factors: ternlm's GPU backend is
//! new and unmeasured on those devices, so their figures are the CPU's efficiency applied
//! to GPU peaks.

use super::hardware::Basis;

/// Shares of bandwidth and int8 rate reached, by the kind of weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Efficiency {
    /// Decode's bytes per second over the machine's bandwidth.
    pub bandwidth: f64,
    /// Prefill's (and decode's compute roof's) MACs per second over the int8 rate, for
    /// models with ternary weights.
    pub ternary_compute: f64,
    /// The same for other weights (block-quantized, float).
    pub other_compute: f64,
}

impl Efficiency {
    /// The compute share for a model with (`ternary`) or without ternary weights.
    pub fn compute(&self, ternary: bool) -> f64 {
        if ternary { self.ternary_compute } else { self.other_compute }
    }
}

/// Relative to ternlm's own probes (`--hardware this`): decode against the rate of its own
/// decode kernels over the model's working set (see the module doc).
pub const PROBED: Efficiency = Efficiency { bandwidth: 0.75, ternary_compute: 0.7, other_compute: 0.25 };

/// Decode's share of a plain read probe's bandwidth (0.58 - 0.66 on the Zen 4 machine): how
/// table entries, which state memory bandwidth, are costed.
pub const DECODE_SHARE_OF_READ_BANDWIDTH: f64 = 0.6;
/// Share of a vendor's peak bandwidth a read probe reaches (estimate, see the module doc).
pub const PROBE_SHARE_OF_PEAK_BANDWIDTH: f64 = 0.8;
/// Share of the ISA's int8 peak ternlm's int8 probe reaches (measured, see the module doc).
pub const PROBE_SHARE_OF_PEAK_INT8: f64 = 0.55;

/// Relative to vendors' peaks (the table).
pub const PEAK: Efficiency = Efficiency {
    bandwidth: DECODE_SHARE_OF_READ_BANDWIDTH * PROBE_SHARE_OF_PEAK_BANDWIDTH,
    ternary_compute: PROBED.ternary_compute * PROBE_SHARE_OF_PEAK_INT8,
    other_compute: PROBED.other_compute * PROBE_SHARE_OF_PEAK_INT8,
};

/// The factors for numbers obtained as `basis` says.
pub fn efficiency(basis: Basis) -> Efficiency {
    match basis {
        Basis::Probed => PROBED,
        Basis::Peak => PEAK,
    }
}
