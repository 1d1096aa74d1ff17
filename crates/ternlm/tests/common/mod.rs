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

/// A teacher-forced run against a peer's recorded steps: `prompt + tokens[..n - 1]` in one
/// batch, every position's logits compared with the peer's top-5 log-probabilities.
pub struct TeacherForced {
    /// Per step, the argmax of ternlm's logits.
    pub argmax: Vec<u32>,
    /// Per step, |ternlm's log-probability - the peer's| for each of the peer's top 5.
    pub diffs: Vec<[f32; 5]>,
    /// The largest logit range (max - min) over the steps, for scale.
    pub logit_range: f32,
}

impl TeacherForced {
    pub fn run(model: &Model, prompt: &[u32], tokens: &[u32], top5: &Value) -> Self {
        let mut all = prompt.to_vec();
        all.extend(&tokens[..tokens.len() - 1]);
        let logits = model.session(all.len()).eval(&all, ternlm::Logits::All).expect("teacher-forced eval");
        let nv = model.config.n_vocab;
        let (mut argmax_v, mut diffs, mut logit_range) = (Vec::new(), Vec::new(), 0f32);
        for (k, step) in top5.as_array().expect("top-5 steps").iter().enumerate() {
            let row = &logits[(prompt.len() - 1 + k) * nv..(prompt.len() + k) * nv];
            argmax_v.push(argmax(row));
            let (lo, hi) = row.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            logit_range = logit_range.max(hi - lo);
            let lp = log_softmax(row);
            let mut d = [0f32; 5];
            for (slot, e) in d.iter_mut().zip(step.as_array().expect("top-5 entries")) {
                *slot = (lp[e["id"].as_u64().expect("id") as usize] - e["logprob"].as_f64().expect("logprob") as f32).abs();
            }
            diffs.push(d);
        }
        Self { argmax: argmax_v, diffs, logit_range }
    }

    pub fn mean(&self) -> f64 {
        let n = self.diffs.len() * 5;
        self.diffs.iter().flatten().map(|&d| f64::from(d)).sum::<f64>() / n.max(1) as f64
    }

    pub fn max(&self) -> f32 {
        self.diffs.iter().flatten().fold(0f32, |m, &d| m.max(d))
    }
}
