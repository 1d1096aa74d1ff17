//! Which instruction-set level the kernels run at: detected once from the CPU, or forced with
//! `TERNLM_ISA=scalar|avx2|avx512` (clamped to what the CPU has), so every path can be tested
//! on one machine. A level is only used after its kernels pass a known-answer check against
//! the scalar ones on this CPU ([`crate::self_check`]). Each level compiles the same portable kernel code with that level's
//! target features, so the compiler vectorizes it for the level; hand-written intrinsics will
//! slot in per level behind the same dispatch.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
        }
    }

    /// The best level this CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let avx512 = std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c");
            if avx512 {
                return Self::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") && std::arch::is_x86_feature_detected!("f16c") {
                return Self::Avx2;
            }
        }
        Self::Scalar
    }

    /// The next level down (scalar stays scalar).
    pub fn below(self) -> Self {
        match self {
            Self::Avx512 => Self::Avx2,
            Self::Avx2 | Self::Scalar => Self::Scalar,
        }
    }

    /// Every level this CPU can run, lowest first (tests and benchmarks compare them).
    pub fn available() -> Vec<Self> {
        [Self::Scalar, Self::Avx2, Self::Avx512].into_iter().filter(|&l| l <= Self::detect()).collect()
    }

    fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(Self::Scalar),
            "avx2" => Some(Self::Avx2),
            "avx512" => Some(Self::Avx512),
            _ => None,
        }
    }
}

/// The level in use: `TERNLM_ISA` if set and supported, else the detected one, unless it
/// fails its self-check ([`crate::self_check`]) at first use: then the next level down that
/// passes (scalar always does), and [`self_check_warnings`] says why.
pub fn active() -> Isa {
    chosen().0
}

/// One line per level the self-check turned down on this CPU (empty when none was), for a
/// front end to print once.
pub fn self_check_warnings() -> &'static [String] {
    &chosen().1
}

fn chosen() -> &'static (Isa, Vec<String>) {
    static CHOSEN: OnceLock<(Isa, Vec<String>)> = OnceLock::new();
    CHOSEN.get_or_init(|| {
        let best = Isa::detect();
        let wanted = match std::env::var("TERNLM_ISA").ok().as_deref().and_then(Isa::parse) {
            Some(wanted) => wanted.min(best),
            None => best,
        };
        let forced = std::env::var("TERNLM_SELF_CHECK_FAIL").unwrap_or_default();
        checked_level(wanted, |level| forced.split(',').any(|f| Isa::parse(f) == Some(level)))
    })
}

/// `wanted`, or the highest level below it whose kernels agree with the scalar ones, with a
/// warning per level passed over. `forced_to_fail(level)` makes a level's check see a
/// mismatch (`TERNLM_SELF_CHECK_FAIL=avx512,...`, to test the fallback).
fn checked_level(wanted: Isa, forced_to_fail: impl Fn(Isa) -> bool) -> (Isa, Vec<String>) {
    let mut warnings = Vec::new();
    let mut level = wanted;
    while let Some(kernel) = crate::self_check::first_disagreement(level, forced_to_fail(level)) {
        let lower = level.below();
        warnings.push(format!("the {} kernels disagree with the scalar ones on this CPU ({kernel}); using {} instead", level.name(), lower.name()));
        level = lower;
    }
    (level, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_that_fails_its_check_gives_way_to_the_next_one_down_with_a_warning() {
        let best = Isa::detect();
        assert_eq!(checked_level(best, |_| false), (best, Vec::new()));
        let (level, warnings) = checked_level(best, |l| l == best);
        assert_eq!(level, best.below());
        assert_eq!(warnings.len(), usize::from(best > Isa::Scalar));
        // Every SIMD level failing leaves the scalar one, with a line per level.
        let (level, warnings) = checked_level(best, |l| l > Isa::Scalar);
        assert_eq!((level, warnings.len()), (Isa::Scalar, best as usize));
        if best > Isa::Scalar {
            assert!(warnings[0].starts_with(&format!("the {} kernels disagree with the scalar ones on this CPU (activation quantization)", best.name())), "{warnings:?}");
        }
    }

    #[test]
    fn forced_levels_parse_and_never_exceed_the_cpu() {
        assert_eq!(Isa::parse("AVX2"), Some(Isa::Avx2));
        assert_eq!(Isa::parse("neon"), None);
        assert!(active() <= Isa::detect());
    }
}
