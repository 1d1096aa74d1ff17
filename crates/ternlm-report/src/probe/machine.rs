//! The machine section of a report: CPU model and flags, cores, caches, memory, OS, the
//! ternlm build, and the two ceilings measured at each thread count (read bandwidth and the
//! int8 multiply-accumulate rate of ternlm's prefill kernel). Linux files are read where
//! they exist; elsewhere the fields say `unknown` or stay empty rather than fail.

use crate::schema::{Cache, Machine, ThreadPoint};

/// CPU flags the kernels care about, as /proc/cpuinfo spells them (x86 `flags`, Arm
/// `Features`).
const FLAGS: [&str; 16] = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm", "sve"];

/// Bytes the bandwidth probe streams (far above any cache).
const PROBE_BYTES: usize = 512 << 20;

/// The `key: value` value of the first /proc/cpuinfo line with `key`.
fn cpuinfo_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// "32K", "1024K", "32M" as sysfs writes cache sizes.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' => (&s[..s.len() - 1], 1u64 << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok().map(|n| n * mult)
}

/// CPUs in a sysfs list such as `0-3,8,10-11`.
fn count_cpu_list(s: &str) -> usize {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| match p.split_once('-') {
            Some((a, b)) => b.trim().parse::<usize>().unwrap_or(0).saturating_sub(a.trim().parse::<usize>().unwrap_or(0)) + 1,
            None => 1,
        })
        .sum()
}

/// CPU 0's caches from /sys/devices/system/cpu/cpu0/cache.
pub fn caches() -> Vec<Cache> {
    let mut out = Vec::new();
    for i in 0..16 {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let (Some(level), Some(kind), Some(size)) = (read(&format!("{dir}/level")), read(&format!("{dir}/type")), read(&format!("{dir}/size"))) else { break };
        let (Ok(level), Some(size_bytes)) = (level.parse(), parse_size(&size)) else { continue };
        let shared_by = read(&format!("{dir}/shared_cpu_list")).map_or(1, |l| count_cpu_list(&l).max(1));
        out.push(Cache { level, kind: kind.to_ascii_lowercase(), size_bytes, shared_by });
    }
    out
}

/// Physical memory (MemTotal), 0 where it cannot be read.
pub fn memory_bytes() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines().find_map(|l| l.strip_prefix("MemTotal:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()).map_or(0, |kb| kb * 1024)
}

/// "Debian GNU/Linux 12 (bookworm), Linux 6.1.0-18-amd64 x86_64".
pub fn os() -> String {
    let pretty = std::fs::read_to_string("/etc/os-release").ok().and_then(|s| s.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())));
    let kernel = match (read("/proc/sys/kernel/ostype"), read("/proc/sys/kernel/osrelease")) {
        (Some(t), Some(r)) => format!("{t} {r}"),
        _ => std::env::consts::OS.to_string(),
    };
    let arch = std::env::consts::ARCH;
    match pretty {
        Some(p) => format!("{p}, {kernel} {arch}"),
        None => format!("{kernel} {arch}"),
    }
}

/// The host name, for the machine's id.
pub fn hostname() -> String {
    read("/proc/sys/kernel/hostname").or_else(|| read("/etc/hostname")).filter(|h| !h.is_empty()).unwrap_or_else(|| "this-machine".to_string())
}

/// The machine section, measuring the ceilings at each of `threads` (1 and the largest
/// count a report uses, at least); `commit` is the build's, as the binary knows it.
/// `progress` hears what is being measured.
pub fn probe(id: Option<&str>, threads: &[usize], commit: &str, progress: &mut dyn FnMut(&str)) -> Machine {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo_field(&info, "model name").or_else(|| cpuinfo_field(&info, "Model")).or_else(|| cpuinfo_field(&info, "Hardware")).unwrap_or("unknown").to_string();
    let flag_line = cpuinfo_field(&info, "flags").or_else(|| cpuinfo_field(&info, "Features")).unwrap_or("");
    let have: Vec<&str> = flag_line.split_whitespace().collect();
    let cpu_flags = FLAGS.iter().filter(|f| have.contains(f)).map(|f| f.to_string()).collect();
    let mut bandwidth = Vec::new();
    let mut int8_macs = Vec::new();
    for &t in threads {
        progress(&format!("read bandwidth at {t} thread{}", if t == 1 { "" } else { "s" }));
        bandwidth.push(ThreadPoint { threads: t, per_s: ternlm::machine::read_bandwidth_on_threads(t, PROBE_BYTES, 5) });
        progress(&format!("int8 multiply-accumulate rate at {t} thread{}", if t == 1 { "" } else { "s" }));
        int8_macs.push(ThreadPoint { threads: t, per_s: ternlm::machine::int8_macs_per_s(t, 5) });
    }
    Machine {
        id: id.map_or_else(hostname, str::to_string),
        cpu_model,
        isa: ternlm::machine::active_isa_name().to_string(),
        isa_best: ternlm::machine::best_isa_name().to_string(),
        cpu_flags,
        physical_cores: ternlm::physical_cores().unwrap_or_else(ternlm::usable_cpus),
        usable_cpus: ternlm::usable_cpus(),
        caches: caches(),
        memory_bytes: memory_bytes(),
        bandwidth,
        int8_macs,
        gpus: Vec::new(),
        os: os(),
        ternlm_version: env!("CARGO_PKG_VERSION").to_string(),
        commit: commit.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_cpu_lists_parse() {
        assert_eq!(parse_size("32K"), Some(32 << 10));
        assert_eq!(parse_size("1024K"), Some(1 << 20));
        assert_eq!(parse_size("32M"), Some(32 << 20));
        assert_eq!(parse_size("x"), None);
        assert_eq!(count_cpu_list("0-3,8,10-11"), 7);
        assert_eq!(count_cpu_list("5"), 1);
        let info = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f\n";
        assert_eq!(cpuinfo_field(info, "model name"), Some("AMD EPYC"));
    }
}
