//! Timings of the forward pass that `ternlm bench` and `ternlm report` both take, in one
//! place so their numbers mean the same: a prompt as one batch (prefill), single-token
//! steps (decode) and the time to the first sampled token, each repeated after a warm-up
//! run, from an empty context, on tokens from a fixed pseudo-random sequence.

use std::time::Instant;

use crate::backend::Logits;
use crate::error::Result;
use crate::logprob::argmax;
use crate::model::Model;

/// `n` token ids of `model`'s vocabulary from a fixed xorshift sequence (the same every
/// run, so runs compare).
pub fn test_tokens(model: &Model, n: usize) -> Vec<u32> {
    let vocab = model.config.n_vocab as u64;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % vocab) as u32
        })
        .collect()
}

/// Runs `one` once untimed, then `reps` times timed; returns the seconds of each timed run.
fn repeat(reps: usize, mut one: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    let mut secs = Vec::with_capacity(reps);
    for rep in 0..=reps {
        let start = Instant::now();
        one()?;
        if rep > 0 {
            secs.push(start.elapsed().as_secs_f64());
        }
    }
    Ok(secs)
}

/// Tokens per second of `reps` prefills of a `p`-token prompt, each as one batch.
pub fn prefill_rates(model: &Model, reps: usize, p: usize) -> Result<Vec<f64>> {
    let tokens = test_tokens(model, p);
    let mut session = model.session(p + 1);
    let secs = repeat(reps, || {
        session.reset();
        session.eval(&tokens, Logits::Last).map(drop)
    })?;
    Ok(secs.iter().map(|s| p as f64 / s).collect())
}

/// Tokens per second of `reps` runs of `n` single-token steps.
pub fn decode_rates(model: &Model, reps: usize, n: usize) -> Result<Vec<f64>> {
    let tokens = test_tokens(model, n);
    let mut session = model.session(n + 1);
    let secs = repeat(reps, || {
        session.reset();
        for &t in &tokens {
            session.eval(&[t], Logits::Last)?;
        }
        Ok(())
    })?;
    Ok(secs.iter().map(|s| n as f64 / s).collect())
}

/// Seconds from a `p`-token prompt to its first sampled (greedy) token, `reps` times.
pub fn first_token_secs(model: &Model, reps: usize, p: usize) -> Result<Vec<f64>> {
    let tokens = test_tokens(model, p);
    let mut session = model.session(p + 1);
    repeat(reps, || {
        session.reset();
        let logits = session.eval(&tokens, Logits::Last)?;
        std::hint::black_box(argmax(&logits));
        Ok(())
    })
}
