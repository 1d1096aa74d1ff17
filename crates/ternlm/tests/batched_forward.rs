//! Several sequences in one forward step (`forward_batch`, the basis of continuous batching)
//! must give every sequence exactly the logits it gets alone: prompts of different lengths
//! prefilled together, then decoded together one token each, on a ternary fixture model and
//! on SmolLM2 (ggml block types, whose matrix-product kernels differ between one row and
//! many).

mod common;

use common::fixtures;
use ternlm::forward::{Scratch, Segment, forward_batch};
use ternlm::kv_cache::KvCache;
use ternlm::{LoadOptions, Logits, Model};

fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0 as u32
}

fn check(model: &Model, prompts: &[&str], steps: usize) {
    let cfg = &model.config;
    let new_cache = || KvCache::new(cfg.n_layer, 256, cfg.kv_dim());
    let encoded: Vec<Vec<u32>> = prompts.iter().map(|p| model.tokenizer.encode(p, true, false).unwrap()).collect();

    // Alone: each prompt, then `steps` greedy tokens, in sessions of its own.
    let mut alone: Vec<Vec<Vec<f32>>> = Vec::new();
    for toks in &encoded {
        let mut s = model.session(256);
        let mut out = vec![s.eval(toks, Logits::Last).unwrap()];
        for _ in 0..steps {
            let next = argmax(out.last().unwrap());
            out.push(s.eval(&[next], Logits::Last).unwrap());
        }
        alone.push(out);
    }

    // Together: one batched prefill of all prompts, then batched decode steps.
    let mut caches: Vec<KvCache> = encoded.iter().map(|_| new_cache()).collect();
    let mut scratch = Scratch::default();
    let mut last: Vec<Vec<f32>> = {
        let mut segs: Vec<Segment<'_>> = caches.iter_mut().zip(&encoded).map(|(c, t)| Segment { cache: c, tokens: t, logits: Logits::Last }).collect();
        forward_batch(cfg, &model.weights, model.pool(), &mut segs, &mut scratch).unwrap()
    };
    for (i, l) in last.iter().enumerate() {
        assert_eq!(l, &alone[i][0], "prompt {i}: batched prefill logits differ from running alone");
    }
    for (step, want) in alone_steps(&alone, steps) {
        let next: Vec<[u32; 1]> = last.iter().map(|l| [argmax(l)]).collect();
        let mut segs: Vec<Segment<'_>> = caches.iter_mut().zip(&next).map(|(c, t)| Segment { cache: c, tokens: t, logits: Logits::Last }).collect();
        last = forward_batch(cfg, &model.weights, model.pool(), &mut segs, &mut scratch).unwrap();
        for (i, l) in last.iter().enumerate() {
            assert_eq!(l, want[i], "prompt {i}, step {step}: batched decode logits differ from running alone");
        }
    }
}

/// For each decode step, every prompt's logits when it ran alone.
fn alone_steps(alone: &[Vec<Vec<f32>>], steps: usize) -> Vec<(usize, Vec<&Vec<f32>>)> {
    (1..=steps).map(|step| (step, alone.iter().map(|a| &a[step]).collect())).collect()
}

const PROMPTS: [&str; 4] = ["The capital of Germany is", "Once upon a time, in a land far away, there lived", "1 2 3", "def fibonacci(n):"];

#[test]
fn ternary_sequences_batch_exactly() {
    let m = Model::load(fixtures().join("tiny-bitnet-b158/tiny-bitnet-b158-i2_s.gguf"), &LoadOptions { threads: 2, ..Default::default() }).unwrap();
    check(&m, &PROMPTS, 6);
}

#[test]
fn smollm2_sequences_batch_exactly() {
    check(common::smollm2(), &PROMPTS, 6);
}

#[test]
fn a_bad_segment_leaves_every_cache_alone() {
    let m = Model::load(fixtures().join("tiny-bitnet-b158/tiny-bitnet-b158-i2_s.gguf"), &LoadOptions { threads: 1, ..Default::default() }).unwrap();
    let cfg = &m.config;
    let (mut a, mut b) = (KvCache::new(cfg.n_layer, 8, cfg.kv_dim()), KvCache::new(cfg.n_layer, 8, cfg.kv_dim()));
    let bad = [u32::MAX];
    let mut segs = [Segment { cache: &mut a, tokens: &[1, 2], logits: Logits::Last }, Segment { cache: &mut b, tokens: &bad, logits: Logits::Last }];
    assert!(forward_batch(cfg, &m.weights, m.pool(), &mut segs, &mut Scratch::default()).is_err());
    assert_eq!((a.len(), b.len()), (0, 0));
}

/// A long prompt evaluated in progress-reporting batches (`on_prompt_progress`) generates the
/// same tokens as one batch, and the hook sees every batch up to the whole prompt.
#[test]
fn prompt_progress_batches_give_the_same_generation() {
    let model = Model::load(fixtures().join("tiny-bitnet-b158/tiny-bitnet-b158-i2_s.gguf"), &LoadOptions { threads: 2, ..Default::default() }).unwrap();
    let text = "The quick brown fox jumps over the lazy dog, again and again. ".repeat(60);
    let prompt = model.tokenizer.encode(&text, true, false).unwrap();
    assert!(prompt.len() > 600, "several batches: {}", prompt.len());
    let params = ternlm::GenerateParams { max_tokens: 8, sampler: ternlm::SamplerConfig { temperature: 0.0, ..Default::default() } };
    let whole = model.session(1024).generate(&prompt, &params, &mut |_, _| true).unwrap();
    let mut seen = Vec::new();
    let batched = {
        let mut s = model.session(1024);
        s.on_prompt_progress(|done, total| seen.push((done, total)));
        s.generate(&prompt, &params, &mut |_, _| true).unwrap()
    };
    assert_eq!(batched.tokens, whole.tokens);
    assert_eq!(seen.last(), Some(&(prompt.len(), prompt.len())));
    assert!(seen.len() >= 3 && seen.windows(2).all(|w| w[0].0 < w[1].0), "{seen:?}");
}
