//! The continuous-batching scheduler: a bounded queue in, per-sequence KV cache slots, and a
//! step loop on a dedicated thread (inference never runs on an async runtime's workers).
//!
//! Each step builds one [`forward_batch`] call: one token for every decoding sequence, then
//! prompt tokens of admitted sequences up to `prefill_chunk` in total, so a long prompt is
//! prefilled over several steps while the running streams keep getting a token per step.
//! Because every row of a batched step is computed independently, a sequence's tokens do not
//! depend on what it is batched with: greedy results are the same alone or among many. For
//! the same reason a finished sequence's cache can serve a later prompt that starts with what
//! it held (see `prompt_cache`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ternlm::forward::{Scratch, Segment, forward_batch};
use ternlm::kv_cache::KvCache;
use ternlm::{Logits, Model, Sampler, SamplerConfig, StopReason, StreamDecoder};

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
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self { parallel: 4, n_ctx: 4096, max_queue: 64, prefill_chunk: 64, cache_prompt: true }
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
    pub sink: Sink,
}

impl Job {
    /// A request with no log-probabilities, no deadline and cache group 0.
    pub fn new(prompt: Vec<u32>, max_tokens: usize, sampler: SamplerConfig, sink: Sink) -> Self {
        Self { prompt, max_tokens, sampler, logprobs: None, prompt_logprobs: false, cache_group: Some(0), deadline: None, sink }
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
    /// Requests cancelled before their first token because nobody waited for them any more.
    pub abandoned: AtomicUsize,
}

pub struct Scheduler {
    queue: Arc<Queue>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<Stats>,
}

struct Slot {
    job: Job,
    cache: KvCache,
    /// Prompt tokens already in the cache.
    fed: usize,
    /// Prompt tokens that were in the cache before this request fed any.
    cached: usize,
    /// Every token sampled so far, in order (all but the last are fed back into the cache).
    sampled: Vec<u32>,
    /// The token to feed next once the prompt is in (the last one sampled).
    next: Option<u32>,
    /// Log-probabilities of the prompt tokens so far (with `prompt_logprobs`).
    prompt_lp: Vec<TokenEvent>,
    sampler: Sampler,
    decoder: StreamDecoder,
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
        if !matches!(self.thread.lock().as_deref(), Ok(Some(_))) {
            return Err(Rejected::ShuttingDown);
        }
        let depth = self.queue.push(job)?;
        self.stats.queued.store(depth, Ordering::Relaxed);
        Ok(())
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

/// `log_softmax(logits)[id]` and the `k` most likely (id, logprob), best first.
fn logprobs(logits: &[f32], id: u32, k: usize) -> (f32, Vec<(u32, f32)>) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let lse = max + logits.iter().map(|&v| f64::from(v - max).exp()).sum::<f64>().ln() as f32;
    let mut top: Vec<(u32, f32)> = Vec::new();
    if k > 0 {
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        let k = k.min(idx.len());
        idx.select_nth_unstable_by(k - 1, |&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
        idx.truncate(k);
        idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
        top = idx.into_iter().map(|i| (i, logits[i as usize] - lse)).collect();
    }
    (logits[id as usize] - lse, top)
}

fn finish(slot: &mut Slot, reason: StopReason) {
    let done = Finish { reason, prompt_tokens: slot.job.prompt.len(), cached_tokens: slot.cached, completion_tokens: slot.sampled.len(), time_to_first_token: slot.first_token, queued: slot.queued };
    slot.job.sink.send(Event::Done(done));
}

/// Ends a request that never got a slot.
fn finish_waiting(job: &mut Job, submitted: Instant, reason: StopReason) {
    let done = Finish { reason, prompt_tokens: job.prompt.len(), cached_tokens: 0, completion_tokens: 0, time_to_first_token: None, queued: submitted.elapsed() };
    job.sink.send(Event::Done(done));
}

/// Returns a retired slot's cache to the pool with the tokens it holds: the prompt, then
/// the sampled tokens that were fed back.
fn retire(pool: &mut PromptCache, slot: Slot) {
    let Slot { job, mut cache, sampled, .. } = slot;
    if job.cache_group.is_none() {
        cache.truncate(0);
    }
    pool.put(cache, job.cache_group.unwrap_or(u64::MAX), job.prompt.into_iter().chain(sampled));
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

/// Log-probabilities of `tokens[1..]` from the logits of the positions before each (`rows`
/// holds `n_vocab` logits per position, the first for the position of `tokens[0]`).
fn prompt_logprobs(model: &Model, rows: &[f32], tokens: &[u32], k: usize, out: &mut Vec<TokenEvent>) {
    let n_vocab = model.config.n_vocab;
    for (row, &next) in rows.chunks_exact(n_vocab).zip(tokens.iter().skip(1)) {
        let (lp, top) = logprobs(row, next, k);
        out.push(TokenEvent { id: next, text: String::new(), logprob: Some(lp), top });
    }
}

fn run(model: &Model, cfg: &SchedulerConfig, queue: &Queue, stats: &Stats) {
    let mcfg = &model.config;
    let n_vocab = mcfg.n_vocab;
    let tok = &model.tokenizer;
    let n_ctx = cfg.n_ctx.clamp(2, 1 << 20);
    let parallel = cfg.parallel.max(1);
    let mut slots: Vec<Slot> = Vec::new();
    let mut spare = PromptCache::new(cfg.cache_prompt);
    let mut scratch = Scratch::default();
    loop {
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
        // Admission into free slots.
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
            let (cache, cached) = spare.take(&job.prompt, job.cache_group.unwrap_or(u64::MAX), reuse, may_grow).unwrap_or_else(|| (KvCache::new(mcfg.n_layer, n_ctx, mcfg.kv_dim()), 0));
            stats.cached_prompt_tokens.fetch_add(cached, Ordering::Relaxed);
            let mut sampler = Sampler::new(job.sampler.clone());
            for &t in &job.prompt {
                sampler.accept(t);
            }
            stats.prompt_tokens.fetch_add(job.prompt.len(), Ordering::Relaxed);
            let mut prompt_lp = Vec::new();
            if job.prompt_logprobs {
                prompt_lp.push(TokenEvent { id: job.prompt[0], text: String::new(), logprob: None, top: Vec::new() });
            }
            if !job.sink.send(Event::Started { cached_tokens: cached }) {
                stats.abandoned.fetch_add(1, Ordering::Relaxed);
                spare.put(cache, job.cache_group.unwrap_or(u64::MAX), job.prompt.iter().copied());
                continue;
            }
            slots.push(Slot {
                job,
                cache,
                fed: cached,
                cached,
                sampled: Vec::new(),
                next: None,
                prompt_lp,
                sampler,
                decoder: StreamDecoder::new(),
                admitted: Instant::now(),
                queued: submitted.elapsed(),
                first_token: None,
            });
        }
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
                if gone && s.sampled.is_empty() {
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

        // One step: decoders first (one token each), then prompt slices within the budget.
        let mut budget = cfg.prefill_chunk.max(1);
        let decoding = slots.iter().any(|s| s.next.is_some());
        let mut plan: Vec<(usize, Vec<u32>, Logits)> = Vec::with_capacity(slots.len());
        for (i, s) in slots.iter().enumerate() {
            if let Some(t) = s.next {
                plan.push((i, vec![t], Logits::Last));
            }
        }
        // Prompts in arrival order: the oldest gets the budget first, so under a burst each
        // prompt's first token comes as early as the ones before it allow, rather than every
        // prompt advancing a slice per step and all of them finishing late together.
        let mut prefilling: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].next.is_none() && slots[i].fed < slots[i].job.prompt.len()).collect();
        prefilling.sort_by_key(|&i| slots[i].admitted);
        for i in prefilling {
            let s = &slots[i];
            if budget > 0 || (!decoding && plan.is_empty()) {
                let take = (s.job.prompt.len() - s.fed).min(budget.max(1));
                budget = budget.saturating_sub(take);
                let end = s.fed + take;
                let logits = if s.job.prompt_logprobs {
                    Logits::All
                } else if end == s.job.prompt.len() {
                    Logits::Last
                } else {
                    Logits::None
                };
                plan.push((i, s.job.prompt[s.fed..end].to_vec(), logits));
            }
        }
        let outputs = {
            let mut chosen: Vec<Option<&mut Slot>> = slots.iter_mut().map(Some).collect();
            let mut segs: Vec<Segment<'_>> = Vec::with_capacity(plan.len());
            for (i, toks, logits) in &plan {
                if let Some(s) = chosen[*i].take() {
                    segs.push(Segment { cache: &mut s.cache, tokens: toks, logits: *logits });
                }
            }
            forward_batch(mcfg, &model.weights, model.pool(), &mut segs, &mut scratch)
        };
        stats.steps.fetch_add(1, Ordering::Relaxed);
        let outputs = match outputs {
            Ok(o) => o,
            Err(e) => {
                // A step that cannot run fails every sequence in it rather than looping.
                for (i, _, _) in &plan {
                    slots[*i].job.sink.send(Event::Error(format!("inference failed: {e}")));
                }
                let mut failed: Vec<usize> = plan.iter().map(|p| p.0).collect();
                failed.sort_unstable_by(|a, b| b.cmp(a));
                for i in failed {
                    // What the failed step left in the cache is unknown: keep none of it.
                    let mut s = slots.swap_remove(i);
                    s.cache.truncate(0);
                    retire(&mut spare, s);
                }
                continue;
            }
        };

        // Sample, emit, and retire finished sequences.
        let mut done: Vec<(usize, StopReason)> = Vec::new();
        for ((i, toks, kind), logits) in plan.iter().zip(outputs) {
            let s = &mut slots[*i];
            let mut logits = logits.as_slice();
            if s.next.is_none() {
                let start = s.fed;
                s.fed += toks.len();
                stats.prefilled_tokens.fetch_add(toks.len(), Ordering::Relaxed);
                if *kind == Logits::All {
                    let k = s.job.logprobs.unwrap_or(0);
                    prompt_logprobs(model, logits, &s.job.prompt[start..(s.fed + 1).min(s.job.prompt.len())], k, &mut s.prompt_lp);
                    logits = &logits[logits.len().saturating_sub(n_vocab)..];
                }
                if s.fed < s.job.prompt.len() {
                    continue;
                }
                if s.job.prompt_logprobs {
                    let mut events = std::mem::take(&mut s.prompt_lp);
                    for e in &mut events {
                        e.text = String::from_utf8_lossy(tok.piece(e.id)).into_owned();
                    }
                    if !s.job.sink.send(Event::Prompt(events)) {
                        done.push((*i, StopReason::Cancelled));
                        continue;
                    }
                }
            }
            let id = s.sampler.sample(logits);
            s.sampler.accept(id);
            s.sampled.push(id);
            stats.generated_tokens.fetch_add(1, Ordering::Relaxed);
            if s.first_token.is_none() {
                s.first_token = Some(s.admitted.elapsed());
            }
            if tok.is_eog(id) {
                done.push((*i, StopReason::Eos));
                continue;
            }
            let (logprob, top) = match s.job.logprobs {
                Some(k) => {
                    let (lp, top) = logprobs(logits, id, k);
                    (Some(lp), top)
                }
                None => (None, Vec::new()),
            };
            let text = s.decoder.push(tok.piece(id));
            if !s.job.sink.send(Event::Token(TokenEvent { id, text, logprob, top })) {
                done.push((*i, StopReason::Cancelled));
            } else if s.sampled.len() >= s.job.max_tokens {
                done.push((*i, StopReason::Length));
            } else if s.cache.len() + 1 > s.cache.n_ctx() {
                done.push((*i, StopReason::ContextFull));
            } else {
                s.next = Some(id);
            }
        }
        done.sort_unstable_by_key(|d| std::cmp::Reverse(d.0));
        for (i, reason) in done {
            let mut s = slots.swap_remove(i);
            let tail = s.decoder.finish();
            if !tail.is_empty() && reason != StopReason::Cancelled {
                s.job.sink.send(Event::Token(TokenEvent { id: u32::MAX, text: tail, logprob: None, top: Vec::new() }));
            }
            finish(&mut s, reason);
            retire(&mut spare, s);
        }
        stats.active.store(slots.len(), Ordering::Relaxed);
    }
}
