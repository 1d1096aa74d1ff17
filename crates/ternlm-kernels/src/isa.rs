//! Which instruction-set level the kernels run at: detected once from the CPU, or forced with
//! `TERNLM_ISA=scalar|avx2|avx512|amx` (clamped to what the CPU has), so every path can be tested
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
    /// AVX-512 plus AMX-INT8 tiles for prefill (ternary and the 32-wide block types), where
    /// the CPU has them and Linux grants this process the tile state.
    Amx,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
            Self::Amx => "amx",
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
            if avx512 && amx_granted() {
                return Self::Amx;
            }
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
            Self::Amx => Self::Avx512,
            Self::Avx512 => Self::Avx2,
            Self::Avx2 | Self::Scalar => Self::Scalar,
        }
    }

    /// Every level this CPU can run, lowest first (tests and benchmarks compare them).
    pub fn available() -> Vec<Self> {
        [Self::Scalar, Self::Avx2, Self::Avx512, Self::Amx].into_iter().filter(|&l| l <= Self::detect()).collect()
    }

    fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(Self::Scalar),
            "avx2" => Some(Self::Avx2),
            "avx512" => Some(Self::Avx512),
            "amx" => Some(Self::Amx),
            _ => None,
        }
    }
}

/// Whether AMX-INT8 may be used: `TERNLM_AMX=off` is not set, CPUID says AMX-TILE and
/// AMX-INT8, XCR0 has the tile state, and Linux grants it to this process (decided once).
fn amx_granted() -> bool {
    static GRANTED: OnceLock<bool> = OnceLock::new();
    *GRANTED.get_or_init(|| !std::env::var("TERNLM_AMX").is_ok_and(|v| v.eq_ignore_ascii_case("off")) && amx_supported())
}

fn amx_supported() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        use std::arch::x86_64::{__cpuid, __cpuid_count, _xgetbv};
        // CPUID is safe to call on x86-64; leaf 7 is only read where the CPU reports it.
        if __cpuid(0).eax < 7 {
            return false;
        }
        let leaf7 = __cpuid_count(7, 0);
        let (amx_tile, amx_int8) = (leaf7.edx & (1 << 24) != 0, leaf7.edx & (1 << 25) != 0);
        let osxsave = __cpuid(1).ecx & (1 << 27) != 0;
        if !(amx_tile && amx_int8 && osxsave) {
            return false;
        }
        // SAFETY: OSXSAVE is set, so XGETBV is enabled.
        let xcr0 = unsafe { _xgetbv(0) };
        if xcr0 & (0b11 << 17) != 0b11 << 17 {
            return false;
        }
        request_tile_data()
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    false
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: Linux (5.16+) hands out the large
/// tile state only on request; without it the first tile instruction kills the process.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_data() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: a plain system call with integer arguments; it reads and writes no memory of
    // ours, and the registers the syscall instruction clobbers are declared.
    unsafe {
        std::arch::asm!("syscall", inlateout("rax") SYS_ARCH_PRCTL => ret, in("rdi") ARCH_REQ_XCOMP_PERM, in("rsi") XFEATURE_XTILEDATA, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret == 0
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
