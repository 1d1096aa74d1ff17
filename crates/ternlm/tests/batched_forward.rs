//! Several sequences in one forward step (`Model::step`, the basis of continuous batching)
//! must give every sequence exactly the logits it gets alone: prompts of different lengths
//! prefilled together, then decoded together one token each, on a ternary fixture model and
//! on SmolLM2 (ggml block types, whose matrix-product kernels differ between one row and
//! many).

mod common;

use common::fixtures;
use ternlm::{LoadOptions, Logits, Model, Sequence};

fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0 as u32
}

fn check(model: &Model, prompts: &[&str], steps: usize) {
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
    let mut seqs: Vec<Sequence> = encoded.iter().map(|_| model.new_sequence(256)).collect();
    let step = |seqs: &mut Vec<Sequence>, feeds: &[Vec<u32>]| -> Vec<Vec<f32>> {
        for (s, t) in seqs.iter_mut().zip(feeds) {
            s.push(t, Logits::Last);
        }
        model.step(&mut seqs.iter_mut().collect::<Vec<_>>(), None).unwrap();
        seqs.iter_mut().map(|s| s.take_logits()).collect()
    };
    let mut last = step(&mut seqs, &encoded);
    for (i, l) in last.iter().enumerate() {
        assert_eq!(l, &alone[i][0], "prompt {i}: batched prefill logits differ from running alone");
    }
    for (step_no, want) in alone_steps(&alone, steps) {
        let next: Vec<Vec<u32>> = last.iter().map(|l| vec![argmax(l)]).collect();
        last = step(&mut seqs, &next);
        for (i, l) in last.iter().enumerate() {
            assert_eq!(l, want[i], "prompt {i}, step {step_no}: batched decode logits differ from running alone");
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
    let (mut a, mut b) = (m.new_sequence(8), m.new_sequence(8));
    a.push(&[1, 2], Logits::Last);
    b.push(&[u32::MAX], Logits::Last);
    assert!(m.step(&mut [&mut a, &mut b], None).is_err());
    assert_eq!((a.len(), b.len(), a.kv_bytes(), b.kv_bytes()), (0, 0, 0, 0));
}

/// A long prompt evaluated in progress-reporting batches (`on_prompt_progress`) generates the
/// same tokens as one batch, and the hook sees every batch up to the whole prompt.
#[test]
fn prompt_progress_batches_give_the_same_generation() {
    let model = Model::load(fixtures().join("tiny-bitnet-b158/tiny-bitnet-b158-i2_s.gguf"), &LoadOptions { threads: 2, ..Default::default() }).unwrap();
    let text = "The quick brown fox jumps over the lazy dog, again and again. ".repeat(60);
    let prompt = model.tokenizer.encode(&text, true, false).unwrap();
    assert!(prompt.len() > 600, "several batches: {}", prompt.len());
    let params = ternlm::GenerateParams { max_tokens: 8, sampler: ternlm::SamplerConfig { temperature: 0.0, ..Default::default() }, ..Default::default() };
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
