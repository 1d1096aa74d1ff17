//! The machine ternlm runs on, described like a table entry from probes rather than spec
//! sheets: the rate at which ternlm's own decode kernels stream the model's working set,
//! the int8 rate of its prefill kernel, at a thread count, and the physical memory. The price is the caller's to set (`--price-per-hour`, or
//! `--watts` and `--hardware-cost` for owned hardware); without one there is no cost.

use ternlm::WeightType;

use super::hardware::{Basis, Hardware, Kind, Price};

/// Bounds on the bytes the decode probe streams (see [`this_machine`]).
const MIN_PROBE_BYTES: u64 = 1 << 20;
const MAX_PROBE_BYTES: u64 = 2 << 30;
const DECODE_PASSES: usize = 5;
const INT8_PASSES: usize = 3;

/// Probes this machine on `threads` threads (a second or two) for a model whose decode
/// reads `working_set` bytes per token, split between tensor types as `types` says. Its
/// bandwidth is the rate at which ternlm's own decode kernels stream synthetic matrices:
/// each type's kernel over the whole working set (kept between 1 MiB and 2 GiB), combined
/// by the types' shares of the bytes (the time per byte adds up). The kernels' arithmetic
/// and the caches are in it, so a model that fits in the last-level cache (hundreds of
/// megabytes on some CPUs) is predicted from the rate it really reads at, and a kernel
/// slower than memory from the kernel. The price is [`Price::Unknown`] and the power unset
/// until the caller fills them in.
pub fn this_machine(threads: usize, working_set: u64, types: &[(WeightType, u64)]) -> Hardware {
    let threads = threads.max(1);
    let probe_bytes = working_set.clamp(MIN_PROBE_BYTES, MAX_PROBE_BYTES);
    let total: u64 = types.iter().map(|&(_, b)| b).sum();
    let mut seconds_per_byte = 0.0;
    let mut probed = Vec::new();
    for &(ty, bytes) in types {
        let rate = ternlm::machine::decode_weight_rate(threads, ty, probe_bytes as usize, DECODE_PASSES);
        seconds_per_byte += bytes as f64 / total.max(1) as f64 / rate;
        probed.push(format!("{ty} {:.1} GB/s ({:.0}%)", rate / 1e9, 100.0 * bytes as f64 / total.max(1) as f64));
    }
    let memory_bandwidth = if seconds_per_byte > 0.0 { 1.0 / seconds_per_byte } else { ternlm::machine::read_bandwidth_on_threads(threads, probe_bytes as usize, DECODE_PASSES) };
    let int8_macs_per_s = ternlm::machine::int8_macs_per_s(threads, INT8_PASSES);
    let memory = memory_total_bytes();
    let source = |what: &str| format!("measured: {what} on {threads} threads");
    Hardware {
        name: "this".into(),
        description: format!("this machine ({} kernels, {threads} threads)", ternlm::machine::active_isa_name()),
        kind: Kind::Cpu,
        basis: Basis::Probed,
        memory_bandwidth,
        int8_macs_per_s,
        memory_bytes: memory.unwrap_or(0),
        tdp_watts: None,
        price: Price::Unknown,
        sources: vec![
            (
                "memory_bandwidth".into(),
                source(&format!(
                    "ternlm::machine::decode_weight_rate over {:.0} MiB (the model's bytes per token), best of 5: {}",
                    probe_bytes as f64 / (1u64 << 20) as f64,
                    if probed.is_empty() { "no tensor types given: a read probe".to_string() } else { probed.join(", ") }
                )),
            ),
            ("int8_macs_per_s".into(), source("ternlm::machine::int8_macs_per_s, best of 3")),
            ("memory_bytes".into(), if memory.is_some() { "MemTotal in /proc/meminfo".into() } else { "unknown (no /proc/meminfo): nothing fits".into() }),
        ],
    }
}

/// Physical memory from `/proc/meminfo` (Linux); `None` elsewhere or when unreadable.
pub fn memory_total_bytes() -> Option<u64> {
    parse_mem_total(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let n: u64 = words.next()?.parse().ok()?;
    // The kernel always writes kB (KiB).
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_parses_in_kib() {
        assert_eq!(parse_mem_total("MemTotal:       24684084 kB\nMemFree: 1 kB\n"), Some(24684084 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: x kB\n"), None);
    }
}
