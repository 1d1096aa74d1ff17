//! Which instruction-set level the kernels run at: detected once from the CPU, or forced with
//! `TERNLM_ISA=scalar|avx2|avx512` (clamped to what the CPU has), so every path can be tested
//! on one machine. Each level compiles the same portable kernel code with that level's
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

/// The level in use: `TERNLM_ISA` if set and supported, else the detected one.
pub fn active() -> Isa {
    static ACTIVE: OnceLock<Isa> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        let best = Isa::detect();
        match std::env::var("TERNLM_ISA").ok().as_deref().and_then(Isa::parse) {
            Some(wanted) => wanted.min(best),
            None => best,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_levels_parse_and_never_exceed_the_cpu() {
        assert_eq!(Isa::parse("AVX2"), Some(Isa::Avx2));
        assert_eq!(Isa::parse("neon"), None);
        assert!(active() <= Isa::detect());
    }
}
