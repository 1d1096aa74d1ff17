//! Shared helpers for the fixture tests: where the fixtures live and how to read them.

#![allow(dead_code)]

pub mod generated_llama;

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;
use ternlm::{LoadOptions, Model};

/// SmolLM2-135M-Instruct Q4_1: `TERNLM_SMOLLM2` if set, else the default model from the
/// cache, fetched (and verified) on first use just as `ternlm run` would.
pub fn smollm2() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = match std::env::var_os("TERNLM_SMOLLM2") {
            Some(p) => PathBuf::from(p),
            None => ternlm_hub::resolve_model(None, false).expect("the default model is cached or can be fetched"),
        };
        Model::load(&path, &LoadOptions { threads: 2, ..Default::default() }).expect("SmolLM2 loads")
    })
}

pub fn fixtures() -> PathBuf {
    std::env::var_os("TERNLM_FIXTURES").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"))
}

pub fn jsonl(rel: &str) -> Vec<Value> {
    let path = fixtures().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).expect("fixture line is JSON")).collect()
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("id array").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

/// Natural-log softmax of one row of logits.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f64 = logits.iter().map(|&v| f64::from(v - max).exp()).sum();
    let lse = max + sum.ln() as f32;
    logits.iter().map(|&v| v - lse).collect()
}

pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}
