//! The machine ternlm runs on, described like a table entry from probes rather than spec
//! sheets: the read bandwidth and the int8 rate of ternlm's own kernels at a thread count,
//! and the physical memory. The price is the caller's to set (`--price-per-hour`, or
//! `--watts` and `--hardware-cost` for owned hardware); without one there is no cost.

use super::hardware::{Basis, Hardware, Kind, Price};

/// Bytes the bandwidth probe reads: far beyond any cache, so it measures memory.
const BANDWIDTH_PROBE_BYTES: usize = 512 << 20;
const BANDWIDTH_PASSES: usize = 5;
const INT8_PASSES: usize = 3;

/// Probes this machine on `threads` threads (a second or two). The price is
/// [`Price::Unknown`] and the power unset until the caller fills them in.
pub fn this_machine(threads: usize) -> Hardware {
    let threads = threads.max(1);
    let memory_bandwidth = ternlm::machine::read_bandwidth_on_threads(threads, BANDWIDTH_PROBE_BYTES, BANDWIDTH_PASSES);
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
            ("memory_bandwidth".into(), source("ternlm::machine::read_bandwidth_on_threads, 512 MiB, best of 5")),
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
