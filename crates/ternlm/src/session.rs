//! A generation session: one [`Sequence`] over a loaded model, driven one step at a time by
//! [`Model::step`]. It reuses the cached prefix a new prompt shares with the last one
//! (multi-turn chat), reports progress on long prompts, and streams text as it comes.

use std::time::{Duration, Instant};

use crate::backend::Logits;
use crate::error::{ModelError, Result};
use crate::model::Model;
use crate::sequence::{GenerateParams, SeqEvent, Sequence, StopReason};

pub struct Session<'m> {
    model: &'m Model,
    seq: Sequence,
    progress: Option<Box<dyn FnMut(usize, usize) + 'm>>,
}

/// Prompt tokens per batch when a progress hook is set: small enough that a long prompt
/// reports often, large enough that the weights are still read once for many tokens.
const PROGRESS_CHUNK: usize = 256;

#[derive(Clone, Debug)]
pub struct Generation {
    /// Prompt tokens, all of them, including any reused from the cache.
    pub prompt_tokens: usize,
    /// Prompt tokens actually evaluated (the rest came from the cache).
    pub prompt_evaluated: usize,
    /// Generated ids, ending with the end-of-generation token when that stopped it.
    pub tokens: Vec<u32>,
    /// Generated text, without the end-of-generation token.
    pub text: String,
    pub stop: StopReason,
    pub prompt_time: Duration,
    /// From the first generated token to the last.
    pub gen_time: Duration,
    /// Forward steps made while generating (one per generated token after the first,
    /// fewer when speculation got several tokens from one step).
    pub gen_evals: usize,
    /// Drafted tokens proposed for verification, how many of them were accepted, and the
    /// steps that verified them.
    pub draft_proposed: usize,
    pub draft_accepted: usize,
    pub draft_steps: usize,
}

impl Generation {
    pub fn prompt_tokens_per_s(&self) -> f64 {
        rate(self.prompt_evaluated, self.prompt_time)
    }

    /// Tokens generated after the first per second of `gen_time`: with speculation, more
    /// than the steps per second.
    pub fn gen_tokens_per_s(&self) -> f64 {
        rate(self.tokens.len().saturating_sub(1), self.gen_time)
    }
}

fn rate(n: usize, t: Duration) -> f64 {
    if n == 0 || t.is_zero() { 0.0 } else { n as f64 / t.as_secs_f64() }
}

impl<'m> Session<'m> {
    pub(crate) fn new(model: &'m Model, n_ctx: usize) -> Self {
        Self { model, seq: model.new_sequence(n_ctx), progress: None }
    }

    /// Reports prompt processing as it goes: `hook(done, total)` after each batch of a
    /// prompt longer than one batch, so a front end can show progress on a long prompt.
    /// Batches give the same logits as one pass over the whole prompt.
    pub fn on_prompt_progress(&mut self, hook: impl FnMut(usize, usize) + 'm) {
        self.progress = Some(Box::new(hook));
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }

    pub fn n_ctx(&self) -> usize {
        self.seq.n_ctx()
    }

    /// Tokens evaluated so far (the cache's contents).
    pub fn history(&self) -> &[u32] {
        self.seq.tokens()
    }

    pub fn reset(&mut self) {
        self.seq.reset();
    }

    /// Evaluates `tokens` after the history and returns logits for the last (or every) one.
    pub fn eval(&mut self, tokens: &[u32], which: Logits) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(ModelError::EmptyPrompt);
        }
        self.seq.push(tokens, which);
        let out = self.model.step(&mut [&mut self.seq], None);
        if out.is_err() {
            // Nothing was written: drop what was queued, so the session stays usable.
            let len = self.seq.len();
            self.seq.truncate(len);
        }
        out?;
        Ok(self.seq.take_logits())
    }

    /// Generates a continuation of `prompt`. `on_text(chunk, token)` receives text as it
    /// becomes complete UTF-8 and returns `false` to stop early; a last flush of bytes that
    /// never completed a character comes with the token `u32::MAX`.
    pub fn generate(&mut self, prompt: &[u32], params: &GenerateParams, on_text: &mut dyn FnMut(&str, u32) -> bool) -> Result<Generation> {
        let t0 = Instant::now();
        let kept = self.seq.start(self.model, prompt, params)?;
        let total = prompt.len() - kept;
        let budget = (self.progress.is_some() && total > PROGRESS_CHUNK).then_some(PROGRESS_CHUNK);
        let mut out = Generation {
            prompt_tokens: prompt.len(),
            prompt_evaluated: total,
            tokens: Vec::new(),
            text: String::new(),
            stop: StopReason::Length,
            prompt_time: Duration::ZERO,
            gen_time: Duration::ZERO,
            gen_evals: 0,
            draft_proposed: 0,
            draft_accepted: 0,
            draft_steps: 0,
        };
        let mut first: Option<Instant> = None;
        let result = loop {
            if !self.seq.is_active() {
                break Ok(());
            }
            let prefilling = self.seq.is_prefilling();
            if let Err(e) = self.model.step(&mut [&mut self.seq], budget) {
                break Err(e);
            }
            if prefilling && let (Some(hook), Some(_)) = (self.progress.as_mut(), budget) {
                hook(total - self.seq.pending(), total);
            }
            if prefilling && !self.seq.is_prefilling() {
                out.prompt_time = t0.elapsed();
                first = Some(Instant::now());
            }
            let mut stopped = false;
            for e in self.seq.take_events() {
                if let SeqEvent::Token(t) = e {
                    out.text.push_str(&t.text);
                    if !on_text(&t.text, t.id) {
                        stopped = true;
                        break;
                    }
                }
            }
            if stopped {
                self.seq.cancel();
                break Ok(());
            }
        };
        out.tokens = self.seq.generated().to_vec();
        out.stop = self.seq.stop_reason().unwrap_or(StopReason::Length);
        out.gen_evals = self.seq.decode_steps();
        (out.draft_proposed, out.draft_accepted, out.draft_steps) = self.seq.draft_counts();
        if let Some(f) = first {
            out.gen_time = f.elapsed();
        }
        let tail = self.seq.finish_text();
        if result.is_ok() && !tail.is_empty() {
            out.text.push_str(&tail);
            on_text(&tail, u32::MAX);
        }
        result.map(|()| out)
    }
}
