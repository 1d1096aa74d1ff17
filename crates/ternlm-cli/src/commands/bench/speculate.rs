//! `ternlm bench --speculate MODE [--prompt-file F]`: what speculative decoding buys. First
//! the verification cost curve (one step of 1, 2, 4, 8 and 16 positions of one sequence,
//! against a one-token step: what bounds the speedup), then, on each prompt of the file,
//! greedy generation with and without speculation, side by side in each repetition:
//! effective tokens/s, speedup, acceptance, accepted tokens per verification, and whether the
//! text came out the same (it must).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::json;
use ternlm::{GenerateParams, Generation, Logits, Message, Model, SamplerConfig, SpeculateMode, Speculation};

use crate::out::outln;

/// Positions per step on the verification cost curve.
const CURVE: [usize; 5] = [1, 2, 4, 8, 16];
/// Context the curve's steps run after, as a decode step would.
pub const CURVE_CONTEXT: usize = 64;

/// Median of the samples.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Milliseconds per step of `k` positions after [`CURVE_CONTEXT`] tokens, for each `k` of
/// [`CURVE`] (interleaved over `reps` rounds, median of each).
pub fn verify_curve(model: &Model, reps: usize) -> Result<Vec<(usize, f64)>> {
    let vocab = model.config.n_vocab as u32;
    let context: Vec<u32> = (0..CURVE_CONTEXT as u32).map(|i| (i * 7919 + 13) % vocab).collect();
    let mut seq = model.new_sequence(CURVE_CONTEXT + CURVE[CURVE.len() - 1] + 1);
    seq.push(&context, Logits::None);
    model.step(&mut [&mut seq], None)?;
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); CURVE.len()];
    for rep in 0..=reps {
        for (i, &k) in CURVE.iter().enumerate() {
            let tokens: Vec<u32> = (0..k as u32).map(|j| (j * 104_729 + rep as u32) % vocab).collect();
            seq.push(&tokens, Logits::All);
            let t = Instant::now();
            model.step(&mut [&mut seq], None)?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            seq.take_logits();
            seq.truncate(CURVE_CONTEXT);
            if rep > 0 {
                samples[i].push(ms);
            }
        }
    }
    Ok(CURVE.iter().zip(samples).map(|(&k, s)| (k, median(s))).collect())
}

/// The prompts of a prompt file: JSON lines with a "prompt" string, JSON strings, or plain
/// lines; blank lines are skipped.
pub fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut prompts = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let prompt = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::String(s)) => s,
            Ok(serde_json::Value::Object(o)) => match o.get("prompt") {
                Some(serde_json::Value::String(s)) => s.clone(),
                _ => bail!("{} line {}: a JSON object needs a \"prompt\" string", path.display(), i + 1),
            },
            _ => line.to_string(),
        };
        prompts.push(prompt);
    }
    if prompts.is_empty() {
        bail!("{} has no prompts", path.display());
    }
    Ok(prompts)
}

/// One prompt's runs: plain and speculative generations, alternating.
struct Runs {
    plain: Vec<Generation>,
    spec: Vec<Generation>,
}

fn rate(g: &Generation) -> f64 {
    g.gen_tokens_per_s()
}

/// Times plain and speculative greedy generation of `n_gen` tokens on every prompt.
pub fn bench_prompts(model: &Model, prompts: &[String], speculate: Speculation, n_gen: usize, reps: usize, json_out: bool, label: &str) -> Result<()> {
    let encode = |p: &str| -> Result<Vec<u32>> {
        Ok(match model.encode_chat(&[Message::new("user", p.to_string())], true)? {
            Some(t) => t,
            None => model.tokenizer.encode(p, true, false)?,
        })
    };
    let n_ctx = model.default_ctx();
    let params = |spec: Speculation| GenerateParams { max_tokens: n_gen, sampler: SamplerConfig::greedy(), speculate: spec, ..Default::default() };
    let plain_spec = Speculation { mode: SpeculateMode::Off, ..speculate };
    if !json_out {
        outln!("| prompt | tokens | plain t/s | {} t/s | speedup | accepted | per verification | tokens/step | same text |", speculate.mode.as_str())?;
        outln!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")?;
    }
    let (mut plain_tokens, mut plain_secs, mut spec_tokens, mut spec_secs) = (0usize, 0f64, 0usize, 0f64);
    let (mut proposed, mut accepted, mut verifications, mut steps) = (0usize, 0usize, 0usize, 0usize);
    let mut all_same = true;
    for (i, prompt) in prompts.iter().enumerate() {
        let tokens = encode(prompt)?;
        if tokens.len() + 1 >= n_ctx {
            bail!("prompt {} is {} tokens, more than the context of {n_ctx} holds", i + 1, tokens.len());
        }
        let mut runs = Runs { plain: Vec::new(), spec: Vec::new() };
        for rep in 0..=reps {
            // Alternate which goes first, so neither always runs on a warmer machine.
            let order = if rep % 2 == 0 { [false, true] } else { [true, false] };
            for spec in order {
                let mut session = model.session(n_ctx);
                let g = session.generate(&tokens, &params(if spec { speculate } else { plain_spec }), &mut |_, _| true)?;
                if rep > 0 {
                    if spec { runs.spec.push(g) } else { runs.plain.push(g) }
                }
            }
        }
        let same = runs.spec.iter().all(|g| g.tokens == runs.plain[0].tokens);
        all_same &= same;
        let p = median(runs.plain.iter().map(rate).collect());
        let s = median(runs.spec.iter().map(rate).collect());
        let sum = |runs: &[Generation], f: &dyn Fn(&Generation) -> usize| runs.iter().map(f).sum::<usize>();
        let (pr, ac, vs) = (sum(&runs.spec, &|g| g.draft_proposed), sum(&runs.spec, &|g| g.draft_accepted), sum(&runs.spec, &|g| g.draft_steps));
        let st = sum(&runs.spec, &|g| g.gen_evals);
        let generated = sum(&runs.spec, &|g| g.tokens.len().saturating_sub(1));
        (proposed, accepted, verifications, steps) = (proposed + pr, accepted + ac, verifications + vs, steps + st);
        plain_tokens += sum(&runs.plain, &|g| g.tokens.len().saturating_sub(1));
        plain_secs += runs.plain.iter().map(|g| g.gen_time.as_secs_f64()).sum::<f64>();
        spec_tokens += generated;
        spec_secs += runs.spec.iter().map(|g| g.gen_time.as_secs_f64()).sum::<f64>();
        let acceptance = if pr > 0 { ac as f64 / pr as f64 } else { 0.0 };
        let per_verification = if vs > 0 { ac as f64 / vs as f64 } else { 0.0 };
        let per_step = if st > 0 { generated as f64 / st as f64 } else { 0.0 };
        if json_out {
            let line = json!({
                "test": "speculate", "set": label, "mode": speculate.mode.as_str(), "draft_max": speculate.draft_max, "prompt": i + 1,
                "tokens": runs.plain[0].tokens.len(), "plain_tokens_per_s": p, "speculative_tokens_per_s": s, "speedup": s / p,
                "draft_proposed": pr, "draft_accepted": ac, "acceptance": acceptance, "accepted_per_verification": per_verification,
                "tokens_per_step": per_step, "same_tokens": same,
            });
            outln!("{line}")?;
        } else {
            outln!(
                "| {} | {} | {p:.1} | {s:.1} | {:.2}x | {:.0}% | {per_verification:.2} | {per_step:.2} | {} |",
                i + 1,
                runs.plain[0].tokens.len(),
                s / p,
                acceptance * 100.0,
                if same { "yes" } else { "NO" }
            )?;
        }
    }
    let p = plain_tokens as f64 / plain_secs.max(1e-9);
    let s = spec_tokens as f64 / spec_secs.max(1e-9);
    let acceptance = if proposed > 0 { accepted as f64 / proposed as f64 } else { 0.0 };
    let per_verification = if verifications > 0 { accepted as f64 / verifications as f64 } else { 0.0 };
    let per_step = if steps > 0 { spec_tokens as f64 / steps as f64 } else { 0.0 };
    if json_out {
        let line = json!({
            "test": "speculate", "set": label, "mode": speculate.mode.as_str(), "draft_max": speculate.draft_max, "prompt": "all",
            "plain_tokens_per_s": p, "speculative_tokens_per_s": s, "speedup": s / p, "draft_proposed": proposed, "draft_accepted": accepted,
            "acceptance": acceptance, "accepted_per_verification": per_verification, "tokens_per_step": per_step, "same_tokens": all_same,
        });
        outln!("{line}")?;
    } else {
        outln!("| all | | {p:.1} | {s:.1} | {:.2}x | {:.0}% | {per_verification:.2} | {per_step:.2} | {} |", s / p, acceptance * 100.0, if all_same { "yes" } else { "NO" })?;
    }
    if !all_same {
        bail!("speculative decoding changed the greedy text: that is a bug, please report it");
    }
    Ok(())
}
