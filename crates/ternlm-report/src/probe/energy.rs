//! Energy counters: Linux powercap's RAPL zones (`/sys/class/powercap/intel-rapl:N`, also
//! used for AMD's package counters), read around a timing to give joules per token. Only
//! the top-level package zones are summed (their subzones are parts of them). A machine
//! without readable counters (a VM, a container without access, another OS) has no meter,
//! and the report says energy is not measured.

use std::path::PathBuf;

/// The readable package zones.
#[derive(Debug)]
pub struct EnergyMeter {
    zones: Vec<Zone>,
}

#[derive(Debug)]
struct Zone {
    energy: PathBuf,
    /// Where the counter wraps, in microjoules.
    range_uj: u64,
}

/// A reading of every zone, in microjoules.
#[derive(Clone, Debug)]
pub struct Reading(Vec<u64>);

impl EnergyMeter {
    /// The package zones under `root` (normally /sys/class/powercap) whose counters can be
    /// read, or `None` when there is none.
    pub fn open_at(root: &std::path::Path) -> Option<EnergyMeter> {
        let mut zones = Vec::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(root).ok()?.flatten().map(|e| e.path()).collect();
        entries.sort();
        for dir in entries {
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            // intel-rapl:0 is a package; intel-rapl:0:1 one of its parts.
            if !name.starts_with("intel-rapl:") || name.matches(':').count() != 1 {
                continue;
            }
            let energy = dir.join("energy_uj");
            if read_u64(&energy).is_none() {
                continue;
            }
            let range_uj = read_u64(&dir.join("max_energy_range_uj")).unwrap_or(u64::MAX);
            zones.push(Zone { energy, range_uj });
        }
        (!zones.is_empty()).then_some(EnergyMeter { zones })
    }

    /// [`Self::open_at`] on /sys/class/powercap.
    pub fn open() -> Option<EnergyMeter> {
        Self::open_at(std::path::Path::new("/sys/class/powercap"))
    }

    pub fn read(&self) -> Reading {
        Reading(self.zones.iter().map(|z| read_u64(&z.energy).unwrap_or(0)).collect())
    }

    /// Joules between two readings, each zone's counter unwrapped once.
    pub fn joules_between(&self, a: &Reading, b: &Reading) -> f64 {
        let uj: u64 = self.zones.iter().zip(a.0.iter().zip(&b.0)).map(|(z, (&x, &y))| if y >= x { y - x } else { z.range_uj.saturating_sub(x) + y }).sum();
        uj as f64 / 1e6
    }
}

fn read_u64(p: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_zones_are_read_and_unwrapped() {
        let root = std::env::temp_dir().join(format!("ternlm-rapl-{}", std::process::id()));
        let zone = |name: &str, uj: u64| {
            let d = root.join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("energy_uj"), format!("{uj}\n")).unwrap();
            std::fs::write(d.join("max_energy_range_uj"), "1000000\n").unwrap();
        };
        zone("intel-rapl:0", 999_000);
        zone("intel-rapl:0:0", 5);
        zone("intel-rapl:1", 10);
        let m = EnergyMeter::open_at(&root).expect("two package zones");
        assert_eq!(m.zones.len(), 2);
        let a = m.read();
        zone("intel-rapl:0", 1_000);
        zone("intel-rapl:1", 500_010);
        let b = m.read();
        // Zone 0 wrapped: 1000 uJ to the range's end, then 1000 more.
        assert!((m.joules_between(&a, &b) - (0.002 + 0.5)).abs() < 1e-9);
        assert!(EnergyMeter::open_at(&root.join("nothing")).is_none());
        let _ = std::fs::remove_dir_all(&root);
    }
}
