//! A generation session: one KV cache and its token history over a loaded model. It
//! evaluates prompts as one batch, decodes token by token, reuses the cached prefix a new
//! prompt shares with the last one (multi-turn chat), and streams text as it is generated.

use std::time::{Duration, Instant};

use crate::error::{ModelError, Result};
use crate::forward::{Logits, Scratch, forward};
use crate::kv_cache::KvCache;
use crate::model::Model;
use crate::sampler::{Sampler, SamplerConfig};
use crate::tokenizer::StreamDecoder;

pub struct Session<'m> {
    model: &'m Model,
    cache: KvCache,
    scratch: Scratch,
    history: Vec<u32>,
    progress: Option<Box<dyn FnMut(usize, usize) + 'm>>,
}

/// Prompt tokens per batch when a progress hook is set: small enough that a long prompt
/// reports often, large enough that the weights are still read once for many tokens.
const PROGRESS_CHUNK: usize = 256;

#[derive(Clone, Debug)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-generation token.
    Eos,
    /// `max_tokens` were generated.
    Length,
    /// The context filled up.
    ContextFull,
    /// The caller asked to stop.
    Cancelled,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eos => "eos",
            Self::Length => "limit",
            Self::ContextFull => "context",
            Self::Cancelled => "cancelled",
        }
    }
}

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
    pub gen_time: Duration,
    /// Forward passes made while generating (one per generated token after the first).
    pub gen_evals: usize,
}

impl Generation {
    pub fn prompt_tokens_per_s(&self) -> f64 {
        rate(self.prompt_evaluated, self.prompt_time)
    }

    pub fn gen_tokens_per_s(&self) -> f64 {
        rate(self.gen_evals, self.gen_time)
    }
}

fn rate(n: usize, t: Duration) -> f64 {
    if n == 0 || t.is_zero() { 0.0 } else { n as f64 / t.as_secs_f64() }
}

impl<'m> Session<'m> {
    pub(crate) fn new(model: &'m Model, n_ctx: usize) -> Self {
        let c = &model.config;
        Self { model, cache: KvCache::new(c.n_layer, n_ctx, c.kv_dim()), scratch: Scratch::default(), history: Vec::new(), progress: None }
    }

    /// Reports prompt processing as it goes: `hook(done, total)` after each batch of a
    /// prompt longer than one batch, so a front end can show progress on a long prompt.
    /// Batches give the same logits as one pass over the whole prompt.
    pub fn on_prompt_progress(&mut self, hook: impl FnMut(usize, usize) + 'm) {
        self.progress = Some(Box::new(hook));
    }

    /// Evaluates a prompt's new tokens: one batch, or batches of [`PROGRESS_CHUNK`] with
    /// progress reports when a hook is set.
    fn eval_prompt(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        if self.progress.is_none() || tokens.len() <= PROGRESS_CHUNK {
            return self.eval(tokens, Logits::Last);
        }
        let mut logits = Vec::new();
        for (i, chunk) in tokens.chunks(PROGRESS_CHUNK).enumerate() {
            let last = (i + 1) * PROGRESS_CHUNK >= tokens.len();
            logits = self.eval(chunk, if last { Logits::Last } else { Logits::None })?;
            if let Some(hook) = self.progress.as_mut() {
                hook(((i + 1) * PROGRESS_CHUNK).min(tokens.len()), tokens.len());
            }
        }
        Ok(logits)
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }

    pub fn n_ctx(&self) -> usize {
        self.cache.n_ctx()
    }

    /// Tokens evaluated so far (the cache's contents).
    pub fn history(&self) -> &[u32] {
        &self.history
    }

    pub fn reset(&mut self) {
        self.cache.truncate(0);
        self.history.clear();
    }

    /// Evaluates `tokens` after the history and returns logits for the last (or every) one.
    pub fn eval(&mut self, tokens: &[u32], which: Logits) -> Result<Vec<f32>> {
        let m = self.model;
        let logits = forward(&m.config, &m.weights, m.pool(), &mut self.cache, tokens, which, &mut self.scratch)?;
        self.history.extend_from_slice(tokens);
        Ok(logits)
    }

    /// Keeps the longest cached prefix of `prompt` (leaving at least one token to evaluate)
    /// and returns its length.
    fn reuse_prefix(&mut self, prompt: &[u32]) -> usize {
        let common = self.history.iter().zip(prompt).take_while(|(a, b)| a == b).count();
        let keep = common.min(prompt.len().saturating_sub(1));
        self.cache.truncate(keep);
        self.history.truncate(keep);
        keep
    }

    /// Generates a continuation of `prompt`. `on_text(chunk, token)` receives text as it
    /// becomes complete UTF-8 and returns `false` to stop early; a last flush of bytes that
    /// never completed a character comes with the token `u32::MAX`.
    pub fn generate(&mut self, prompt: &[u32], params: &GenerateParams, on_text: &mut dyn FnMut(&str, u32) -> bool) -> Result<Generation> {
        if prompt.is_empty() {
            return Err(ModelError::EmptyPrompt);
        }
        let n_ctx = self.n_ctx();
        if prompt.len() > n_ctx {
            return Err(ModelError::PromptTooLong { prompt: prompt.len(), ctx: n_ctx });
        }
        self.model.tokenizer.check_ids(prompt)?;
        let tok = &self.model.tokenizer;
        let mut sampler = Sampler::new(params.sampler.clone());
        for &t in prompt {
            sampler.accept(t);
        }

        let t0 = Instant::now();
        let kept = self.reuse_prefix(prompt);
        let mut logits = self.eval_prompt(&prompt[kept..])?;
        let prompt_time = t0.elapsed();

        let t1 = Instant::now();
        let mut out = Generation {
            prompt_tokens: prompt.len(),
            prompt_evaluated: prompt.len() - kept,
            tokens: Vec::new(),
            text: String::new(),
            stop: StopReason::Length,
            prompt_time,
            gen_time: Duration::ZERO,
            gen_evals: 0,
        };
        let mut decoder = StreamDecoder::new();
        while out.tokens.len() < params.max_tokens {
            let next = sampler.sample(&logits);
            sampler.accept(next);
            out.tokens.push(next);
            if tok.is_eog(next) {
                out.stop = StopReason::Eos;
                break;
            }
            let chunk = decoder.push(tok.piece(next));
            out.text.push_str(&chunk);
            if !on_text(&chunk, next) {
                out.stop = StopReason::Cancelled;
                break;
            }
            if out.tokens.len() == params.max_tokens {
                break;
            }
            if self.cache.len() >= n_ctx {
                out.stop = StopReason::ContextFull;
                break;
            }
            logits = self.eval(&[next], Logits::Last)?;
            out.gen_evals += 1;
        }
        let tail = decoder.finish();
        if !tail.is_empty() {
            out.text.push_str(&tail);
            on_text(&tail, u32::MAX);
        }
        out.gen_time = t1.elapsed();
        Ok(out)
    }
}
