//! Speculative decoding is lossless: greedy generation gives token for token what plain
//! decoding gives, with prompt lookup and with a draft model, on every greedy fixture
//! (SmolLM2 and the tiny ternary models), and so does sampling with a seed; at temperature
//! 1 the tokens follow the model's exact distribution; and a draft model with another
//! vocabulary is refused.

mod common;

use std::collections::HashMap;

use common::{fixtures, ids, jsonl};
use ternlm::{GenerateParams, LoadOptions, Model, SamplerConfig, SpeculateMode, Speculation};

fn load(rel: &str) -> Model {
    Model::load(fixtures().join(rel), &LoadOptions { threads: 2, ..Default::default() }).expect("fixture model loads")
}

fn generate(model: &Model, prompt: &[u32], max_tokens: usize, sampler: SamplerConfig, mode: SpeculateMode, draft_max: usize) -> ternlm::Generation {
    // Always drafting (draft_min), so every fixture exercises verification.
    let params = GenerateParams { max_tokens, sampler, speculate: Speculation { mode, draft_max, draft_min: draft_max }, ..Default::default() };
    model.session(2048).generate(prompt, &params, &mut |_, _| true).expect("generation runs")
}

/// Every mode gives plain decoding's tokens and text on `model` for each prompt, greedy and
/// sampled with a seed (llama.cpp's default cuts at temperature 1); returns the drafted
/// tokens proposed and accepted over all of them.
fn same_tokens(model: &Model, name: &str, prompts: &[(String, Vec<u32>, usize)]) -> (usize, usize) {
    let (mut proposed, mut accepted) = (0, 0);
    let seeded = |i: usize| SamplerConfig { temperature: 1.0, seed: 1000 + i as u64, ..Default::default() };
    for (i, (id, prompt, n)) in prompts.iter().enumerate() {
        let plain = generate(model, prompt, *n, SamplerConfig::greedy(), SpeculateMode::Off, 0);
        let plain_sampled = generate(model, prompt, *n, seeded(i), SpeculateMode::Off, 0);
        let mut modes = vec![SpeculateMode::Lookup];
        if model.draft_model().is_some() {
            modes.push(SpeculateMode::Draft);
        }
        for mode in modes {
            for draft_max in [2, 8] {
                let spec = generate(model, prompt, *n, SamplerConfig::greedy(), mode, draft_max);
                assert_eq!(spec.tokens, plain.tokens, "{name} {id}: {mode:?} with up to {draft_max} drafts changed the tokens");
                assert_eq!(spec.text, plain.text, "{name} {id}: {mode:?} text");
                assert_eq!(spec.stop, plain.stop, "{name} {id}: {mode:?} stop");
                assert!(spec.draft_accepted <= spec.draft_proposed);
                proposed += spec.draft_proposed;
                accepted += spec.draft_accepted;
                let sampled = generate(model, prompt, *n, seeded(i), mode, draft_max);
                assert_eq!(sampled.tokens, plain_sampled.tokens, "{name} {id}: {mode:?} with up to {draft_max} drafts changed the seeded sample");
            }
        }
    }
    (proposed, accepted)
}

fn fixture_prompts(model: &Model, rel: &str, file: Option<&str>) -> Vec<(String, Vec<u32>, usize)> {
    jsonl(rel)
        .iter()
        .filter(|c| file.is_none_or(|f| c["model"].as_str() == Some(f)))
        .map(|c| {
            let prompt = match c.get("prompt_tokens") {
                Some(p) => ids(p),
                None => model.tokenizer.encode(c["prompt"].as_str().expect("prompt"), true, false).expect("encodes"),
            };
            let n = c["n_predict"].as_u64().map_or_else(|| ids(&c["tokens"]).len(), |n| n as usize);
            (c["id"].as_str().unwrap_or("?").to_string(), prompt, n)
        })
        .collect()
}

/// A prompt that the answer copies from, so prompt lookup proposes and most of it is accepted.
const COPYING: &str = "Repeat this list exactly: apples, pears, plums, cherries, grapes, lemons, limes, melons, peaches, figs.\napples, pears, plums,";

#[test]
fn smollm2_is_unchanged_by_lookup_and_by_a_draft_model() {
    let target = load_smollm2().with_draft_model(load("tiny-bitnet-b158/tiny-bitnet-b158-i2_s.gguf")).expect("same vocabulary");
    let mut prompts = fixture_prompts(&target, "smollm2/greedy.jsonl", None);
    prompts.push(("copying".into(), target.tokenizer.encode(COPYING, true, false).unwrap(), 24));
    let (proposed, accepted) = same_tokens(&target, "smollm2", &prompts);
    assert!(accepted > 0 && accepted < proposed, "drafts were both accepted and rejected: {accepted} of {proposed}");
}

#[test]
fn tiny_ternary_is_unchanged_by_lookup_and_by_a_draft_model() {
    for (dir, file, draft) in [
        ("tiny-bitnet", "tiny-bitnet-tq1_0.gguf", "tiny-bitnet/tiny-bitnet-tq2_0.gguf"),
        ("tiny-bitnet", "tiny-bitnet-tq2_0.gguf", "tiny-bitnet-b158/tiny-bitnet-b158-i2_s.gguf"),
        ("tiny-bitnet-b158", "tiny-bitnet-b158-i2_s.gguf", "tiny-bitnet/tiny-bitnet-tq1_0.gguf"),
    ] {
        let target = load(&format!("{dir}/{file}")).with_draft_model(load(draft)).expect("same vocabulary");
        let mut prompts = fixture_prompts(&target, &format!("{dir}/greedy.jsonl"), Some(file));
        assert!(!prompts.is_empty(), "{dir}/{file} has fixture cases");
        prompts.push(("copying".into(), target.tokenizer.encode(COPYING, true, false).unwrap(), 24));
        same_tokens(&target, file, &prompts);
    }
}

fn load_smollm2() -> Model {
    let path = match std::env::var_os("TERNLM_SMOLLM2") {
        Some(p) => std::path::PathBuf::from(p),
        None => ternlm_hub::resolve_model(None, false).expect("the default model is cached or can be fetched"),
    };
    Model::load(&path, &LoadOptions { threads: 2, ..Default::default() }).expect("SmolLM2 loads")
}

/// The top-`k` tempered-at-1 probabilities of a row of logits, as the sampler draws them.
fn top_k_probs(row: &[f32], k: usize) -> Vec<(u32, f64)> {
    let mut ids: Vec<u32> = (0..row.len() as u32).collect();
    ids.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
    ids.truncate(k);
    let max = row[ids[0] as usize];
    let w: Vec<f64> = ids.iter().map(|&i| f64::from((row[i as usize] - max).exp())).collect();
    let z: f64 = w.iter().sum();
    ids.into_iter().zip(w).map(|(i, w)| (i, w / z)).collect()
}

/// Pearson's chi-square statistic of `counts` against `expected` probabilities (cells
/// expecting fewer than 5 pooled into one), and its 99.9% critical value.
fn chi_square(counts: &HashMap<(u32, u32), usize>, expected: &HashMap<(u32, u32), f64>, n: usize) -> (f64, f64) {
    let (mut stat, mut cells, mut pooled_o, mut pooled_e) = (0.0, 0usize, 0.0, 0.0);
    let unexpected: usize = counts.iter().filter(|(k, _)| !expected.contains_key(k)).map(|(_, c)| c).sum();
    assert_eq!(unexpected, 0, "tokens outside what plain sampling can draw");
    for (key, &p) in expected {
        let (o, e) = (*counts.get(key).unwrap_or(&0) as f64, p * n as f64);
        if e < 5.0 {
            (pooled_o, pooled_e) = (pooled_o + o, pooled_e + e);
        } else {
            stat += (o - e).powi(2) / e;
            cells += 1;
        }
    }
    if pooled_e > 0.0 {
        stat += (pooled_o - pooled_e).powi(2) / pooled_e;
        cells += 1;
    }
    // Wilson-Hilferty: the chi-square quantile from the normal one (z = 3.09 for 99.9%).
    let dof = (cells - 1) as f64;
    let h = 2.0 / (9.0 * dof);
    (stat, dof * (1.0 - h + 3.09 * h.sqrt()).powi(3))
}

/// At temperature 1 the generated tokens follow exactly the model's distribution (the
/// seeded test above shows they are plain sampling's very tokens; this one shows, against
/// the model's probabilities, that those follow the distribution). On a small
/// generated llama (its logits spread enough that sampling has real choices; itself as the
/// draft model), the first two tokens of 4000 generations per mode (different seeds) are
/// tested against their exact joint probabilities (from the model's logits) with a
/// chi-square test at the 99.9% level: plain sampling, draft-model and prompt-lookup
/// speculation (always drafting 3, so the second token is always a verified one) must all
/// pass, while drafts are both accepted and rejected.
#[test]
fn sampling_at_temperature_one_keeps_the_distribution() {
    let path = std::env::temp_dir().join(format!("ternlm-spec-llama-{}.gguf", std::process::id()));
    common::generated_llama::build(&path);
    let model = load_path(&path).with_draft_model(load_path(&path)).expect("same vocabulary");
    let _ = std::fs::remove_file(&path);
    const TOP_K: usize = 6;
    // The model's own greedy continuation of a word, then its start again: lookup drafts
    // the rest of it whenever sampling picks the token that came next the first time.
    let greedy = generate(&model, &[1, 260], 12, SamplerConfig::greedy(), SpeculateMode::Off, 0).tokens;
    let prompt = [&[1, 260], greedy.as_slice(), &[260], &greedy[..3]].concat();
    let mut exact: HashMap<(u32, u32), f64> = HashMap::new();
    let first = model.session(64).eval(&prompt, ternlm::Logits::Last).unwrap();
    for (a, pa) in top_k_probs(&first, TOP_K) {
        let mut s = model.session(64);
        let row = s.eval(&[prompt.as_slice(), &[a]].concat(), ternlm::Logits::Last).unwrap();
        for (b, pb) in top_k_probs(&row, TOP_K) {
            exact.insert((a, b), pa * pb);
        }
    }
    let n = 4000;
    for (mode, seed0) in [(SpeculateMode::Off, 1), (SpeculateMode::Draft, 1_000_000), (SpeculateMode::Lookup, 2_000_000)] {
        let mut counts: HashMap<(u32, u32), usize> = HashMap::new();
        let (mut proposed, mut accepted) = (0, 0);
        let mut session = model.session(64);
        for i in 0..n {
            let sampler = SamplerConfig { temperature: 1.0, top_k: TOP_K, top_p: 1.0, min_p: 0.0, seed: seed0 + i as u64, ..Default::default() };
            let params = GenerateParams { max_tokens: 4, sampler, speculate: Speculation { mode, draft_max: 3, draft_min: 3 }, ..Default::default() };
            let g = session.generate(&prompt, &params, &mut |_, _| true).unwrap();
            *counts.entry((g.tokens[0], g.tokens[1])).or_default() += 1;
            proposed += g.draft_proposed;
            accepted += g.draft_accepted;
        }
        let (stat, critical) = chi_square(&counts, &exact, n);
        eprintln!("{mode:?}: chi-square {stat:.1} (critical {critical:.1}); {accepted} of {proposed} drafted tokens accepted");
        assert!(stat < critical, "{mode:?}: the first two tokens do not follow the model's distribution (chi-square {stat:.1} > {critical:.1})");
        if mode != SpeculateMode::Off {
            assert!(accepted > 20 && accepted < proposed, "{mode:?}: drafts were accepted and rejected: {accepted} of {proposed}");
        }
    }
}

#[test]
fn a_draft_model_with_another_vocabulary_is_refused() {
    let target = load("tiny-bitnet/tiny-bitnet-tq2_0.gguf");
    let dir = std::env::temp_dir().join(format!("ternlm-spec-{}", std::process::id()));
    ternlm::hf::tiny::write_tiny(&dir, ternlm::hf::tiny::TinyKind::BitNetPacked, 3, false).expect("tiny checkpoint writes");
    let other = Model::load(&dir, &LoadOptions { threads: 1, ..Default::default() }).expect("tiny checkpoint loads");
    let err = target.with_draft_model(other).expect_err("another vocabulary is refused");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(err.to_string().contains("draft model"), "{err}");
}

fn load_path(p: &std::path::Path) -> Model {
    Model::load(p, &LoadOptions { threads: 1, ..Default::default() }).expect("loads")
}
