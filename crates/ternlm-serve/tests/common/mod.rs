//! What the serve test files share: where the fixtures are and the tiny ternary model.

#![allow(dead_code)]

use std::path::PathBuf;

use ternlm::{LoadOptions, Model};

pub fn fixtures() -> PathBuf {
    std::env::var_os("TERNLM_FIXTURES").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"))
}

/// The tiny bitnet-25 fixture model (I2_S), on `threads` threads.
pub fn tiny_model(threads: usize) -> Model {
    Model::load(fixtures().join("tiny-bitnet-b158/tiny-bitnet-b158-i2_s.gguf"), &LoadOptions { threads, ..Default::default() }).expect("the tiny fixture loads")
}
