//! What the GPU parity tests share: one device per test binary, the loud `skipped: no
//! adapter` notice when there is none, and a seeded random source.

#![allow(dead_code)]

use std::sync::OnceLock;

use ternlm_gpu::{Gpu, GpuError};

/// One device for the whole test binary: opening one costs 0.1-0.3 s on lavapipe, and its
/// pipelines are compiled on first use.
pub fn gpu() -> Option<&'static Gpu> {
    static GPU: OnceLock<Option<Gpu>> = OnceLock::new();
    GPU.get_or_init(open).as_ref().or_else(|| {
        skipped("this test checked nothing");
        None
    })
}

/// Says loudly that a test ran without a device. Written to stderr directly, not with
/// `eprintln!`, which the test harness captures (and hides for a passing test).
pub fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: no adapter ({why})");
}

pub fn open() -> Option<Gpu> {
    match Gpu::open(None) {
        Ok(g) => {
            eprintln!("ternlm-gpu tests on {:?} ({}), fused multiply-add: {}", g.info().name, g.info().backend.as_str(), if g.native_fma() { "native" } else { "emulated" });
            Some(g)
        }
        Err(e @ GpuError::NoAdapter { .. }) => {
            eprintln!("{e}");
            None
        }
        Err(e) => panic!("an adapter exists but could not be opened: {e}"),
    }
}

/// xorshift64: fixed seeds keep failures reproducible without a proptest dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}
