//! A sequence: one stream of tokens through a model, with its KV store and, while it
//! generates, its sampler, text decoder, stop rules, log-probability requests and
//! speculative-decoding state. [`Model::step`](crate::Model::step) advances any number of
//! sequences by one batched forward; a session drives one, the server's scheduler many.
//!
//! A sequence either evaluates tokens queued with [`Sequence::push`] (and keeps the logits
//! asked for), or generates after [`Sequence::start`]: its prompt is fed (in slices, if the
//! caller's step budget says so), then each step feeds the token sampled last, with drafted
//! tokens after it when speculation is on, and [`SeqEvent`]s report what came out.

use std::collections::VecDeque;

use crate::backend::{KvStore, Logits};
use crate::error::{ModelError, Result};
use crate::logprob::common_prefix;
use crate::model::Model;
use crate::sampler::{Sampler, SamplerConfig};
use crate::speculate::{DraftControl, Speculation};
use crate::tokenizer::StreamDecoder;

/// What to generate and how.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Report each generated token's log-probability with this many alternatives.
    pub logprobs: Option<usize>,
    /// Also report the prompt tokens' log-probabilities (the whole prompt is then fed, none
    /// of it reused from the cache).
    pub prompt_logprobs: bool,
    pub speculate: Speculation,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self { max_tokens: 256, sampler: SamplerConfig::default(), logprobs: None, prompt_logprobs: false, speculate: Speculation::default() }
    }
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

/// One token that came out of a step (or, in [`SeqEvent::Prompt`], one prompt token).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenInfo {
    pub id: u32,
    /// Text that became complete with this token (possibly empty inside a UTF-8 character;
    /// for prompt tokens, the token's own text).
    pub text: String,
    /// Natural-log probability under the model, when asked for (`None` for the first prompt
    /// token, which nothing predicts).
    pub logprob: Option<f32>,
    /// The most likely alternatives and their log-probabilities, when asked for.
    pub top: Vec<(u32, f32)>,
}

/// What a generating sequence reports after a step.
#[derive(Clone, Debug, PartialEq)]
pub enum SeqEvent {
    /// The prompt's tokens with their log-probabilities (with `prompt_logprobs`), once the
    /// prompt is in, before the first generated token.
    Prompt(Vec<TokenInfo>),
    /// A generated token (never the end-of-generation token, which only ends the sequence).
    Token(TokenInfo),
}

/// Generation state, from [`Sequence::start`] on.
pub(crate) struct Gen {
    pub(crate) params: GenerateParams,
    pub(crate) sampler: Sampler,
    pub(crate) decoder: StreamDecoder,
    pub(crate) prompt: Vec<u32>,
    /// Prompt log-probabilities gathered so far.
    pub(crate) prompt_lp: Vec<TokenInfo>,
    pub(crate) generated: Vec<u32>,
    /// The token sampled last, not yet fed.
    pub(crate) next: Option<u32>,
    pub(crate) stop: Option<StopReason>,
    pub(crate) control: DraftControl,
    pub(crate) decode_steps: usize,
    pub(crate) draft_proposed: usize,
    pub(crate) draft_accepted: usize,
    /// Decode steps that verified drafted tokens.
    pub(crate) draft_steps: usize,
}

pub struct Sequence {
    pub(crate) kv: Box<dyn KvStore>,
    /// The tokens whose keys and values `kv` holds, in order.
    pub(crate) tokens: Vec<u32>,
    /// Tokens waiting to be fed (the rest of a prompt, or pushed tokens).
    pub(crate) feed: VecDeque<u32>,
    /// Which logits of pushed tokens to keep (evaluation only).
    pub(crate) want: Logits,
    /// Logits kept from evaluation.
    pub(crate) logits: Vec<f32>,
    pub(crate) generation: Option<Gen>,
    /// The draft model's sequence alongside this one, once it drafted.
    pub(crate) draft: Option<Box<Sequence>>,
    pub(crate) events: Vec<SeqEvent>,
}

impl std::fmt::Debug for Sequence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequence").field("len", &self.tokens.len()).field("n_ctx", &self.kv.n_ctx()).field("feed", &self.feed.len()).finish_non_exhaustive()
    }
}

impl Sequence {
    pub(crate) fn new(kv: Box<dyn KvStore>) -> Self {
        Self { kv, tokens: Vec::new(), feed: VecDeque::new(), want: Logits::None, logits: Vec::new(), generation: None, draft: None, events: Vec::new() }
    }

    pub fn n_ctx(&self) -> usize {
        self.kv.n_ctx()
    }

    /// The tokens the KV store holds.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Bytes of KV the sequence holds now.
    pub fn kv_bytes(&self) -> usize {
        self.kv.bytes()
    }

    /// Forgets every position from `len` on and anything queued or generating.
    pub fn truncate(&mut self, len: usize) {
        self.kv.truncate(len);
        self.tokens.truncate(len);
        self.feed.clear();
        self.logits.clear();
        self.generation = None;
        self.events.clear();
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        self.truncate(0);
    }

    /// Queues `tokens` to be evaluated by the next steps, keeping the logits `which` asks
    /// for (of the tokens queued since the last [`take_logits`](Self::take_logits)). Ends
    /// any generation.
    pub fn push(&mut self, tokens: &[u32], which: Logits) {
        self.generation = None;
        self.events.clear();
        self.feed.extend(tokens);
        self.want = which;
    }

    /// The logits kept since the last call (`n_vocab` per position asked for).
    pub fn take_logits(&mut self) -> Vec<f32> {
        std::mem::take(&mut self.logits)
    }

    /// Starts generating a continuation of `prompt`: keeps the longest prefix the KV store
    /// already holds (all but the last prompt token at most, since its logits are needed;
    /// none with `prompt_logprobs`) and queues the rest. Returns how many prompt tokens were
    /// kept. The prompt must leave room for one generated token.
    pub fn start(&mut self, model: &Model, prompt: &[u32], params: &GenerateParams) -> Result<usize> {
        if prompt.is_empty() {
            return Err(ModelError::EmptyPrompt);
        }
        if prompt.len() > self.n_ctx() {
            return Err(ModelError::PromptTooLong { prompt: prompt.len(), ctx: self.n_ctx() });
        }
        model.tokenizer.check_ids(prompt)?;
        let keep = if params.prompt_logprobs { 0 } else { common_prefix(&self.tokens, prompt).min(prompt.len() - 1) };
        self.truncate(keep);
        self.feed.extend(&prompt[keep..]);
        let mut sampler = Sampler::new(params.sampler.clone());
        for &t in prompt {
            sampler.accept(t);
        }
        let mut prompt_lp = Vec::new();
        if params.prompt_logprobs {
            let text = String::from_utf8_lossy(model.tokenizer.piece(prompt[0])).into_owned();
            prompt_lp.push(TokenInfo { id: prompt[0], text, logprob: None, top: Vec::new() });
        }
        self.generation = Some(Gen {
            params: params.clone(),
            sampler,
            decoder: StreamDecoder::new(),
            prompt: prompt.to_vec(),
            prompt_lp,
            generated: Vec::new(),
            next: None,
            stop: None,
            control: DraftControl::new(),
            decode_steps: 0,
            draft_proposed: 0,
            draft_accepted: 0,
            draft_steps: 0,
        });
        Ok(keep)
    }

    /// Events of the steps since the last call.
    pub fn take_events(&mut self) -> Vec<SeqEvent> {
        std::mem::take(&mut self.events)
    }

    /// Whether the sequence has work for the next step: tokens to feed, or a generation that
    /// has not stopped.
    pub fn is_active(&self) -> bool {
        !self.feed.is_empty() || self.generation.as_ref().is_some_and(|g| g.stop.is_none())
    }

    /// Whether prompt (or pushed) tokens are still waiting to be fed.
    pub fn is_prefilling(&self) -> bool {
        !self.feed.is_empty()
    }

    /// Prompt tokens still waiting.
    pub fn pending(&self) -> usize {
        self.feed.len()
    }

    /// Why generation stopped, once it has.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.generation.as_ref().and_then(|g| g.stop)
    }

    /// Ends the generation (the caller's cancel): no further step advances it.
    pub fn cancel(&mut self) {
        if let Some(g) = self.generation.as_mut() {
            g.stop.get_or_insert(StopReason::Cancelled);
        }
        self.feed.clear();
    }

    /// Tokens generated so far, the end-of-generation token included when it came.
    pub fn generated(&self) -> &[u32] {
        self.generation.as_ref().map_or(&[], |g| &g.generated)
    }

    /// Text held back because it does not yet complete a UTF-8 character, released now
    /// (call once generation is over).
    pub fn finish_text(&mut self) -> String {
        self.generation.as_mut().map(|g| g.decoder.finish()).unwrap_or_default()
    }

    /// Forward steps made while decoding (after the prompt).
    pub fn decode_steps(&self) -> usize {
        self.generation.as_ref().map_or(0, |g| g.decode_steps)
    }

    /// Drafted tokens proposed and accepted so far in this generation, and the steps that
    /// verified them.
    pub fn draft_counts(&self) -> (usize, usize, usize) {
        self.generation.as_ref().map_or((0, 0, 0), |g| (g.draft_proposed, g.draft_accepted, g.draft_steps))
    }
}
