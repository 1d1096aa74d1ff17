//! The continuous-batching scheduler: a bounded queue in, per-sequence KV cache slots, and a
//! step loop on a dedicated thread (inference never runs on an async runtime's workers).
//!
//! Each step is one [`Model::step`] over the running sequences: one token for every decoding
//! sequence (with its drafted tokens when it speculates), then prompt tokens of admitted
//! sequences up to `prefill_chunk` in total, oldest first, so a long prompt is
//! prefilled over several steps while the running streams keep getting a token per step.
//! Because every row of a batched step is computed independently, a sequence's tokens do not
//! depend on what it is batched with: greedy results are the same alone or among many. For
//! the same reason a finished sequence's cache can serve a later prompt that starts with what
//! it held (see `prompt_cache`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ternlm::{GenerateParams, Model, SamplerConfig, SeqEvent, Sequence, Speculation, StopReason, TokenInfo};

use crate::prompt_cache::PromptCache;
use crate::queue::Queue;

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Sequences decoded together at most (KV cache slots).
    pub parallel: usize,
    /// Context size of each slot, prompt and generated tokens together.
    pub n_ctx: usize,
    /// Requests waiting for a slot at most; more are rejected.
    pub max_queue: usize,
    /// Prompt tokens fed per step across all prefilling sequences.
    pub prefill_chunk: usize,
    /// Reuse a finished sequence's KV cache for a prompt that starts with what it held
    /// (llama.cpp's `cache_prompt`), so only the new part of a prompt is prefilled.
    pub cache_prompt: bool,
    /// Speculative decoding for every request (a draft model must be attached to the model
    /// for [`SpeculateMode::Draft`](ternlm::SpeculateMode::Draft)).
    pub speculate: Speculation,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self { parallel: 4, n_ctx: 4096, max_queue: 64, prefill_chunk: 64, cache_prompt: true, speculate: Speculation::default() }
    }
}

/// Bytes of KV cache one sequence of `n_ctx` positions can grow to (F16 keys and values).
pub fn kv_bytes_per_slot(model: &Model, n_ctx: usize) -> usize {
    let c = &model.config;
    c.n_layer * n_ctx * c.kv_dim() * 2 * 2
}

/// How many sequences fit a KV memory budget, at most `parallel`; an error when not even one
/// does.
pub fn slots_within(model: &Model, n_ctx: usize, parallel: usize, budget_bytes: Option<usize>) -> Result<usize, String> {
    let per = kv_bytes_per_slot(model, n_ctx).max(1);
    match budget_bytes {
        None => Ok(parallel.max(1)),
        Some(b) if b < per => Err(format!("a KV budget of {:.1} MB holds no sequence of {n_ctx} tokens ({:.1} MB each)", b as f64 / 1e6, per as f64 / 1e6)),
        Some(b) => Ok((b / per).min(parallel).max(1)),
    }
}

/// One token as it is generated (or, for [`Event::Prompt`], one prompt token).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenEvent {
    pub id: u32,
    /// Text that became complete with this token (possibly empty inside a UTF-8 character).
    pub text: String,
    /// Natural-log probability of the token under the model, when asked for (`None` for the
    /// first prompt token, which nothing predicts).
    pub logprob: Option<f32>,
    /// The most likely alternatives and their log-probabilities, when asked for.
    pub top: Vec<(u32, f32)>,
}

impl From<TokenInfo> for TokenEvent {
    fn from(t: TokenInfo) -> Self {
        Self { id: t.id, text: t.text, logprob: t.logprob, top: t.top }
    }
}

/// How a request ended, with its counts and timings.
#[derive(Clone, Debug, PartialEq)]
pub struct Finish {
    pub reason: StopReason,
    pub prompt_tokens: usize,
    /// Leading prompt tokens whose KV came from an earlier request's cache (not prefilled).
    pub cached_tokens: usize,
    /// Tokens sampled, the end-of-sequence token included.
    pub completion_tokens: usize,
    /// From admission to the first generated token.
    pub time_to_first_token: Option<Duration>,
    /// From submission to admission into a slot.
    pub queued: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The request got a slot; this many leading prompt tokens came from a cache.
    Started {
        cached_tokens: usize,
    },
    /// The prompt's tokens with their log-probabilities (asked for by `prompt_logprobs`),
    /// sent once the prompt is in, before the first generated token.
    Prompt(Vec<TokenEvent>),
    Token(TokenEvent),
    Done(Finish),
    /// The request could not run (e.g. its prompt does not fit the context).
    Error(String),
}

/// Where a request's events go.
pub trait EventSink: Send {
    /// Delivers an event; `false` when nobody listens any more, which cancels the request.
    fn send(&mut self, event: Event) -> bool;
    /// `true` once nobody listens. Checked while the request waits and between prefill
    /// steps, when no event is sent, so an abandoned request costs no further compute.
    fn is_closed(&self) -> bool {
        false
    }
}

impl<F: FnMut(Event) -> bool + Send> EventSink for F {
    fn send(&mut self, event: Event) -> bool {
        self(event)
    }
}

pub type Sink = Box<dyn EventSink>;

pub struct Job {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Report log-probabilities with this many alternatives (0: just the token's own).
    pub logprobs: Option<usize>,
    /// Also report the prompt tokens' log-probabilities (with `logprobs` alternatives): the
    /// prompt is then prefilled in full, never taken from a cache.
    pub prompt_logprobs: bool,
    /// Requests share cached prompts only within one group (one API key, say), so nobody
    /// learns from `cached_tokens` or timing what someone else sent. `None`: this request
    /// neither reuses a cache nor leaves its prompt for others.
    pub cache_group: Option<u64>,
    /// Give up (with [`StopReason::Cancelled`]) when this passes.
    pub deadline: Option<Instant>,
    /// Speculative decoding for this request (verified in the same batched step as every
    /// other sequence's tokens).
    pub speculate: Speculation,
    pub sink: Sink,
}

impl Job {
    /// A request with no log-probabilities, no deadline and cache group 0.
    pub fn new(prompt: Vec<u32>, max_tokens: usize, sampler: SamplerConfig, sink: Sink) -> Self {
        Self { prompt, max_tokens, sampler, logprobs: None, prompt_logprobs: false, cache_group: Some(0), deadline: None, speculate: Speculation::default(), sink }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejected {
    #[error("the queue is full ({0} requests waiting)")]
    QueueFull(usize),
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// Counters the scheduler keeps for metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub queued: AtomicUsize,
    pub active: AtomicUsize,
    pub steps: AtomicUsize,
    /// Prompt tokens of admitted requests.
    pub prompt_tokens: AtomicUsize,
    /// Prompt tokens run through the model (a prompt abandoned half-way counts only what was
    /// fed; cached tokens are not fed).
    pub prefilled_tokens: AtomicUsize,
    /// Prompt tokens taken from a cache instead of prefilled.
    pub cached_prompt_tokens: AtomicUsize,
    pub generated_tokens: AtomicUsize,
    /// Drafted tokens proposed for verification, and accepted by it.
    pub draft_proposed: AtomicUsize,
    pub draft_accepted: AtomicUsize,
    /// Requests cancelled before their first token because nobody waited for them any more.
    pub abandoned: AtomicUsize,
    /// KV positions held by running sequences, and what all slots could hold
    /// (`parallel × n_ctx`): the cache's utilization, as an inference gateway weighs it.
    pub kv_used: AtomicUsize,
    pub kv_capacity: AtomicUsize,
}

impl Stats {
    /// Running sequences' share of the KV positions the slots can hold, 0 to 1.
    pub fn kv_utilization(&self) -> f64 {
        let cap = self.kv_capacity.load(Ordering::Relaxed);
        if cap == 0 { 0.0 } else { (self.kv_used.load(Ordering::Relaxed) as f64 / cap as f64).min(1.0) }
    }
}

pub struct Scheduler {
    queue: Arc<Queue>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<Stats>,
}

struct Slot {
    job: Job,
    seq: Sequence,
    /// Prompt tokens that were in the cache before this request fed any.
    cached: usize,
    /// Drafted tokens proposed and accepted as last counted into the stats.
    drafts_counted: (usize, usize),
    admitted: Instant,
    queued: Duration,
    first_token: Option<Duration>,
}

impl Scheduler {
    pub fn start(model: Arc<Model>, cfg: SchedulerConfig) -> Self {
        let queue = Arc::new(Queue::new(cfg.max_queue));
        let stats = Arc::new(Stats::default());
        let (q, st) = (queue.clone(), stats.clone());
        let thread = std::thread::Builder::new().name("ternlm-scheduler".into()).spawn(move || run(&model, &cfg, &q, &st)).ok();
        Self { queue, thread: Mutex::new(thread), stats }
    }

    /// Queues a request, or says why not (a full queue is the caller's cue for HTTP 429).
    pub fn submit(&self, job: Job) -> Result<(), Rejected> {
        if !self.running() {
            return Err(Rejected::ShuttingDown);
        }
        let depth = self.queue.push(job)?;
        self.stats.queued.store(depth, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the scheduler thread still takes requests (not shut down).
    pub fn running(&self) -> bool {
        matches!(self.thread.lock().as_deref(), Ok(Some(h)) if !h.is_finished())
    }

    /// Requests that may wait at most.
    pub fn max_queue(&self) -> usize {
        self.queue.capacity()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Stops taking requests and lets the queued and running ones finish (a request whose
    /// sink reports itself closed is cancelled at the next step), then joins the thread.
    pub fn shutdown(&self) {
        self.queue.close();
        if let Some(t) = self.thread.lock().ok().and_then(|mut g| g.take()) {
            let _ = t.join();
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn finish(slot: &mut Slot, reason: StopReason) {
    let done =
        Finish { reason, prompt_tokens: slot.job.prompt.len(), cached_tokens: slot.cached, completion_tokens: slot.seq.generated().len(), time_to_first_token: slot.first_token, queued: slot.queued };
    slot.job.sink.send(Event::Done(done));
}

/// Ends a request that never got a slot.
fn finish_waiting(job: &mut Job, submitted: Instant, reason: StopReason) {
    let done = Finish { reason, prompt_tokens: job.prompt.len(), cached_tokens: 0, completion_tokens: 0, time_to_first_token: None, queued: submitted.elapsed() };
    job.sink.send(Event::Done(done));
}

/// Returns a retired slot's sequence to the pool with the tokens it holds.
fn retire(pool: &mut PromptCache, slot: Slot) {
    let Slot { job, mut seq, .. } = slot;
    if job.cache_group.is_none() {
        seq.reset();
    }
    let held = seq.tokens().to_vec();
    pool.put(seq, job.cache_group.unwrap_or(u64::MAX), held.into_iter());
}

/// Why a prompt cannot run at all, if it cannot.
fn prompt_problem(model: &Model, prompt: &[u32], n_ctx: usize) -> Option<String> {
    if prompt.is_empty() {
        Some("the prompt is empty".to_string())
    } else if prompt.len() >= n_ctx {
        Some(format!("the prompt is {} tokens but the context holds {n_ctx} (with room for at least one generated token)", prompt.len()))
    } else {
        model.tokenizer.check_ids(prompt).err().map(|e| e.to_string())
    }
}

fn run(model: &Model, cfg: &SchedulerConfig, queue: &Queue, stats: &Stats) {
    let n_ctx = cfg.n_ctx.clamp(2, 1 << 20);
    let parallel = cfg.parallel.max(1);
    let mut slots: Vec<Slot> = Vec::new();
    let mut spare = PromptCache::new(cfg.cache_prompt);
    stats.kv_capacity.store(parallel * n_ctx, Ordering::Relaxed);
    loop {
        stats.kv_used.store(slots.iter().map(|s| s.seq.len()).sum(), Ordering::Relaxed);
        // Block only when there is nothing to do.
        if slots.is_empty() && !queue.wait() {
            return;
        }
        // Waiting requests whose client left or whose time ran out end here, unrun.
        let now = Instant::now();
        for (mut job, submitted) in queue.remove_where(|j| j.sink.is_closed() || j.deadline.is_some_and(|d| now >= d)) {
            if job.sink.is_closed() {
                stats.abandoned.fetch_add(1, Ordering::Relaxed);
            }
            finish_waiting(&mut job, submitted, StopReason::Cancelled);
        }
        admit(model, n_ctx, parallel, queue, stats, &mut slots, &mut spare);
        stats.queued.store(queue.len(), Ordering::Relaxed);
        stats.active.store(slots.len(), Ordering::Relaxed);
        if slots.is_empty() {
            continue;
        }

        // Deadlines, and clients that left: checked every step, so a prompt being prefilled
        // in slices stops between slices.
        let now = Instant::now();
        let mut i = 0;
        while i < slots.len() {
            let gone = slots[i].job.sink.is_closed();
            if gone || slots[i].job.deadline.is_some_and(|d| now >= d) {
                let mut s = slots.swap_remove(i);
                stats.active.store(slots.len(), Ordering::Relaxed);
                if gone && s.seq.generated().is_empty() {
                    stats.abandoned.fetch_add(1, Ordering::Relaxed);
                }
                finish(&mut s, StopReason::Cancelled);
                retire(&mut spare, s);
            } else {
                i += 1;
            }
        }
        stats.active.store(slots.len(), Ordering::Relaxed);
        if slots.is_empty() {
            continue;
        }

        // One step. Prompts in arrival order: the oldest gets the prefill budget first, so
        // under a burst each prompt's first token comes as early as the ones before it
        // allow, rather than every prompt advancing a slice per step and all of them
        // finishing late together.
        slots.sort_by_key(|s| s.admitted);
        let pending: Vec<usize> = slots.iter().map(|s| s.seq.pending()).collect();
        let outcome = {
            let mut seqs: Vec<&mut Sequence> = slots.iter_mut().map(|s| &mut s.seq).collect();
            model.step(&mut seqs, Some(cfg.prefill_chunk.max(1)))
        };
        stats.steps.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = outcome {
            // A step that cannot run fails every sequence in it rather than looping; what
            // the failed step left in a cache is unknown, so none of it is kept.
            for mut s in slots.drain(..) {
                s.job.sink.send(Event::Error(format!("inference failed: {e}")));
                s.seq.reset();
                retire(&mut spare, s);
            }
            continue;
        }

        // Report, and retire finished sequences.
        let mut done: Vec<(usize, StopReason)> = Vec::new();
        for (i, (s, before)) in slots.iter_mut().zip(pending).enumerate() {
            stats.prefilled_tokens.fetch_add(before - s.seq.pending(), Ordering::Relaxed);
            let (proposed, accepted, _) = s.seq.draft_counts();
            stats.draft_proposed.fetch_add(proposed - s.drafts_counted.0, Ordering::Relaxed);
            stats.draft_accepted.fetch_add(accepted - s.drafts_counted.1, Ordering::Relaxed);
            s.drafts_counted = (proposed, accepted);
            let mut gone = false;
            for e in s.seq.take_events() {
                let event = match e {
                    SeqEvent::Prompt(tokens) => Event::Prompt(tokens.into_iter().map(TokenEvent::from).collect()),
                    SeqEvent::Token(t) => {
                        stats.generated_tokens.fetch_add(1, Ordering::Relaxed);
                        s.first_token.get_or_insert_with(|| s.admitted.elapsed());
                        Event::Token(t.into())
                    }
                };
                if !s.job.sink.send(event) {
                    gone = true;
                    break;
                }
            }
            if gone {
                done.push((i, StopReason::Cancelled));
            } else if let Some(reason) = s.seq.stop_reason() {
                if reason == StopReason::Eos {
                    // The end-of-generation token is counted, though it sends no text.
                    stats.generated_tokens.fetch_add(1, Ordering::Relaxed);
                    s.first_token.get_or_insert_with(|| s.admitted.elapsed());
                }
                done.push((i, reason));
            }
        }
        for (i, reason) in done.into_iter().rev() {
            let mut s = slots.remove(i);
            // Counted out before the client hears the end, so a client that reads /metrics
            // right after its reply does not see itself still running.
            stats.active.store(slots.len(), Ordering::Relaxed);
            let tail = s.seq.finish_text();
            if !tail.is_empty() && reason != StopReason::Cancelled {
                s.job.sink.send(Event::Token(TokenEvent { id: u32::MAX, text: tail, logprob: None, top: Vec::new() }));
            }
            finish(&mut s, reason);
            retire(&mut spare, s);
        }
        stats.active.store(slots.len(), Ordering::Relaxed);
    }
}

/// Moves waiting requests into free slots, each into the pooled sequence that holds the
/// longest prefix of its prompt (or a fresh one).
fn admit(model: &Model, n_ctx: usize, parallel: usize, queue: &Queue, stats: &Stats, slots: &mut Vec<Slot>, spare: &mut PromptCache) {
    while slots.len() < parallel {
        let Some((mut job, submitted)) = queue.pop() else { break };
        if let Some(msg) = prompt_problem(model, &job.prompt, n_ctx) {
            job.sink.send(Event::Error(msg));
            continue;
        }
        let reuse = !job.prompt_logprobs && job.cache_group.is_some();
        // Another cache while the pool is below `parallel`, rather than emptying one that
        // holds some other prompt.
        let may_grow = slots.len() + spare.len() < parallel;
        let (mut seq, cached) = spare.take(&job.prompt, job.cache_group.unwrap_or(u64::MAX), reuse, may_grow).unwrap_or_else(|| (model.new_sequence(n_ctx), 0));
        let params = GenerateParams { max_tokens: job.max_tokens, sampler: job.sampler.clone(), logprobs: job.logprobs, prompt_logprobs: job.prompt_logprobs, speculate: job.speculate };
        if let Err(e) = seq.start(model, &job.prompt, &params) {
            job.sink.send(Event::Error(e.to_string()));
            spare.put(seq, job.cache_group.unwrap_or(u64::MAX), std::iter::empty());
            continue;
        }
        stats.cached_prompt_tokens.fetch_add(cached, Ordering::Relaxed);
        stats.prompt_tokens.fetch_add(job.prompt.len(), Ordering::Relaxed);
        if !job.sink.send(Event::Started { cached_tokens: cached }) {
            stats.abandoned.fetch_add(1, Ordering::Relaxed);
            let held = seq.tokens().to_vec();
            spare.put(seq, job.cache_group.unwrap_or(u64::MAX), held.into_iter());
            continue;
        }
        slots.push(Slot { job, seq, cached, drafts_counted: (0, 0), admitted: Instant::now(), queued: submitted.elapsed(), first_token: None });
    }
}
