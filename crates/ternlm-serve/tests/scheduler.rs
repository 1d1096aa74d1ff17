//! The continuous-batching scheduler on real models: greedy results are the same alone and
//! among 8 concurrent requests; a long prompt is prefilled in slices while a running stream
//! keeps getting tokens; a client that goes away is cancelled at the next step; a full queue
//! rejects; bad prompts get an error event; deadlines cancel; a chat's next turn reuses the
//! cache of the turn before without changing its tokens.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ternlm::{LoadOptions, Model, SamplerConfig, StopReason};
use ternlm_serve::{Event, EventSink, Finish, Job, Rejected, Scheduler, SchedulerConfig};

fn tiny() -> Arc<Model> {
    static M: OnceLock<Arc<Model>> = OnceLock::new();
    M.get_or_init(|| Arc::new(common::tiny_model(2))).clone()
}

fn smollm2() -> Arc<Model> {
    static M: OnceLock<Arc<Model>> = OnceLock::new();
    M.get_or_init(|| {
        let path = match std::env::var_os("TERNLM_SMOLLM2") {
            Some(p) => PathBuf::from(p),
            None => ternlm_hub::resolve_model(None, false).expect("the default model is cached or can be fetched"),
        };
        Arc::new(Model::load(path, &LoadOptions { threads: 2, ..Default::default() }).unwrap())
    })
    .clone()
}

/// A job whose events arrive on the returned channel.
fn job(prompt: Vec<u32>, max_tokens: usize) -> (Job, Receiver<Event>) {
    let (tx, rx) = channel();
    let sink = Box::new(move |e: Event| tx.send(e).is_ok());
    (Job::new(prompt, max_tokens, SamplerConfig::greedy(), sink), rx)
}

/// Collects a job's tokens until it is done.
fn collect(rx: &Receiver<Event>) -> (Vec<u32>, StopReason) {
    let (toks, f) = collect_finish(rx);
    (toks, f.reason)
}

/// [`collect`], with the job's closing report.
fn collect_finish(rx: &Receiver<Event>) -> (Vec<u32>, Finish) {
    let mut toks = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(120)).expect("the scheduler answers") {
            Event::Token(t) if t.id != u32::MAX => toks.push(t.id),
            Event::Token(_) => {}
            Event::Done(f) => {
                assert_eq!(f.completion_tokens, toks.len() + usize::from(f.reason == StopReason::Eos));
                return (toks, f);
            }
            Event::Error(e) => panic!("job failed: {e}"),
            Event::Started { .. } | Event::Prompt(_) => {}
        }
    }
}

/// A chat's next turn: the prompt is the last prompt, its answer and a new question. With
/// `cache_prompt` the earlier request's cache supplies all of that but the answer's last
/// token (sampled, never fed back); the tokens are the same as with every prompt prefilled
/// in full.
fn next_turn_reuses_the_cache(model: Arc<Model>) {
    let first = model.tokenizer.encode("The capital of Germany is", true, false).unwrap();
    let question = model.tokenizer.encode(" And the capital of France?", false, false).unwrap();
    let run = |cache_prompt: bool| {
        let cfg = SchedulerConfig { parallel: 2, n_ctx: 256, max_queue: 4, prefill_chunk: 8, cache_prompt, ..Default::default() };
        let sched = Scheduler::start(model.clone(), cfg);
        let (j, rx) = job(first.clone(), 6);
        sched.submit(j).unwrap();
        let (answer, f) = collect_finish(&rx);
        assert_eq!((f.reason, f.cached_tokens), (StopReason::Length, 0));
        let next: Vec<u32> = first.iter().chain(&answer).chain(&question).copied().collect();
        let (j, rx) = job(next, 6);
        sched.submit(j).unwrap();
        let (toks, f) = collect_finish(&rx);
        let cached = sched.stats().cached_prompt_tokens.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(cached, f.cached_tokens);
        (answer, toks, f.cached_tokens)
    };
    let (answer, reused, cached) = run(true);
    let (answer_full, full, none) = run(false);
    assert_eq!(answer, answer_full);
    assert_eq!(reused, full, "the next turn's tokens differ with the cache reused");
    assert_eq!(none, 0);
    assert_eq!(cached, first.len() + answer.len() - 1);
}

#[test]
fn next_turn_reuses_the_cache_ternary() {
    next_turn_reuses_the_cache(tiny());
}

#[test]
fn next_turn_reuses_the_cache_smollm2() {
    next_turn_reuses_the_cache(smollm2());
}

const PROMPTS: [&str; 8] =
    ["The capital of Germany is", "Once upon a time,", "1, 2, 3, 4,", "def fibonacci(n):", "The quick brown fox", "My favourite colour is", "Water boils at", "In 1969, the first"];

fn alone_and_together(model: Arc<Model>, n: usize) {
    let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| model.tokenizer.encode(p, true, false).unwrap()).collect();
    let cfg = SchedulerConfig { parallel: 8, n_ctx: 256, max_queue: 16, prefill_chunk: 8, ..Default::default() };
    let sched = Scheduler::start(model.clone(), cfg);
    let alone: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            let (j, rx) = job(p.clone(), n);
            sched.submit(j).unwrap();
            collect(&rx).0
        })
        .collect();
    let rxs: Vec<Receiver<Event>> = prompts
        .iter()
        .map(|p| {
            let (j, rx) = job(p.clone(), n);
            sched.submit(j).unwrap();
            rx
        })
        .collect();
    for (i, rx) in rxs.iter().enumerate() {
        assert_eq!(collect(rx).0, alone[i], "prompt {i}: tokens differ between alone and among 8");
    }
    assert!(sched.stats().steps.load(std::sync::atomic::Ordering::Relaxed) > 0);
}

#[test]
fn greedy_is_the_same_alone_and_among_eight_ternary() {
    alone_and_together(tiny(), 12);
}

#[test]
fn greedy_is_the_same_alone_and_among_eight_smollm2() {
    alone_and_together(smollm2(), 12);
}

#[test]
fn a_long_prompt_is_prefilled_in_slices_while_a_stream_runs() {
    let model = tiny();
    let sched = Scheduler::start(model.clone(), SchedulerConfig { parallel: 2, n_ctx: 512, max_queue: 4, prefill_chunk: 16, ..Default::default() });
    let short = model.tokenizer.encode("Hello there", true, false).unwrap();
    let long: Vec<u32> = (0..240).map(|i| 300 + (i * 7) % 500).collect();
    let (ja, rxa) = job(short, 60);
    sched.submit(ja).unwrap();
    // Let A start streaming, then send the long prompt.
    assert!(matches!(rxa.recv_timeout(Duration::from_secs(60)).unwrap(), Event::Started { .. }));
    assert!(matches!(rxa.recv_timeout(Duration::from_secs(60)).unwrap(), Event::Token(_)));
    let (jb, rxb) = job(long, 2);
    sched.submit(jb).unwrap();
    assert!(matches!(rxb.recv_timeout(Duration::from_secs(60)).unwrap(), Event::Started { .. }));
    assert!(matches!(rxb.recv_timeout(Duration::from_secs(60)).unwrap(), Event::Token(_)));
    // B's prompt needs 15 steps of 16 tokens; A got a token in each of them.
    let a_tokens = 1 + rxa.try_iter().filter(|e| matches!(e, Event::Token(_))).count();
    assert!(a_tokens >= 15, "the running stream got {a_tokens} tokens while 240 prompt tokens were fed");
}

#[test]
fn a_client_that_goes_away_is_cancelled() {
    let model = tiny();
    let sched = Scheduler::start(model.clone(), SchedulerConfig { parallel: 2, n_ctx: 256, max_queue: 4, prefill_chunk: 64, ..Default::default() });
    let prompt = model.tokenizer.encode("Hello", true, false).unwrap();
    let (tx, rx) = channel();
    // Started, then three tokens.
    let mut left = 4;
    let sink = Box::new(move |e: Event| {
        let _ = tx.send(e);
        left -= 1;
        left > 0
    });
    sched.submit(Job::new(prompt.clone(), 200, SamplerConfig::greedy(), sink)).unwrap();
    let events: Vec<Event> = rx.iter().filter(|e| !matches!(e, Event::Started { .. })).take_while(|e| !matches!(e, Event::Done(_))).collect();
    assert_eq!(events.len(), 3, "three tokens, then cancelled: {events:?}");
    // The slot is free again: another request runs to completion.
    let (j, rx2) = job(prompt, 5);
    sched.submit(j).unwrap();
    assert_eq!(collect(&rx2).1, StopReason::Length);
}

#[test]
fn a_full_queue_rejects_and_bad_prompts_get_errors() {
    let model = tiny();
    let sched = Scheduler::start(model.clone(), SchedulerConfig { parallel: 1, n_ctx: 64, max_queue: 1, prefill_chunk: 64, ..Default::default() });
    let prompt = model.tokenizer.encode("Hello", true, false).unwrap();
    let mut rejected = 0;
    let mut rxs = Vec::new();
    for _ in 0..20 {
        let (j, rx) = job(prompt.clone(), 40);
        match sched.submit(j) {
            Ok(()) => rxs.push(rx),
            Err(Rejected::QueueFull(1)) => rejected += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(rejected > 0, "20 submissions into a queue of 1 behind one slot must overflow");
    for rx in &rxs {
        collect(rx);
    }
    for (bad, why) in [(vec![], "empty"), (vec![1u32; 64], "context"), (vec![u32::MAX], "vocabulary")] {
        let (j, rx) = job(bad, 4);
        sched.submit(j).unwrap();
        match rx.recv_timeout(Duration::from_secs(60)).unwrap() {
            Event::Error(e) => assert!(e.contains(why), "{e}"),
            other => panic!("expected an error, got {other:?}"),
        }
    }
}

#[test]
fn deadlines_cancel_and_logprobs_are_reported() {
    let model = tiny();
    let sched = Scheduler::start(model.clone(), SchedulerConfig { parallel: 2, n_ctx: 256, max_queue: 4, prefill_chunk: 64, ..Default::default() });
    let prompt = model.tokenizer.encode("Hello", true, false).unwrap();
    let (mut j, rx) = job(prompt.clone(), 10_000);
    j.deadline = Some(Instant::now() + Duration::from_millis(300));
    sched.submit(j).unwrap();
    assert_eq!(collect(&rx).1, StopReason::Cancelled);

    let (mut j, rx) = job(prompt, 3);
    j.logprobs = Some(3);
    sched.submit(j).unwrap();
    assert!(matches!(rx.recv_timeout(Duration::from_secs(60)).unwrap(), Event::Started { .. }));
    match rx.recv_timeout(Duration::from_secs(60)).unwrap() {
        Event::Token(t) => {
            let lp = t.logprob.unwrap();
            assert!(lp <= 0.0 && lp.is_finite());
            assert_eq!(t.top.len(), 3);
            assert_eq!(t.top[0].0, t.id, "greedy picks the most likely token");
            assert!((t.top[0].1 - lp).abs() < 1e-6 && t.top[0].1 >= t.top[1].1 && t.top[1].1 >= t.top[2].1);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_kv_budget_limits_the_sequences() {
    let model = tiny();
    let per = ternlm_serve::kv_bytes_per_slot(&model, 256);
    assert_eq!(ternlm_serve::slots_within(&model, 256, 8, None), Ok(8));
    assert_eq!(ternlm_serve::slots_within(&model, 256, 8, Some(3 * per + 1)), Ok(3));
    assert_eq!(ternlm_serve::slots_within(&model, 256, 2, Some(5 * per)), Ok(2));
    assert!(ternlm_serve::slots_within(&model, 256, 8, Some(per - 1)).unwrap_err().contains("holds no sequence"));
}

/// A sink whose client can be made to leave without any event being sent.
struct Watched {
    tx: std::sync::mpsc::Sender<Event>,
    gone: Arc<AtomicBool>,
}

impl EventSink for Watched {
    fn send(&mut self, e: Event) -> bool {
        !self.gone.load(Ordering::Relaxed) && self.tx.send(e).is_ok()
    }

    fn is_closed(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }
}

fn watched_job(prompt: Vec<u32>, max_tokens: usize) -> (Job, Receiver<Event>, Arc<AtomicBool>) {
    let (tx, rx) = channel();
    let gone = Arc::new(AtomicBool::new(false));
    (Job::new(prompt, max_tokens, SamplerConfig::greedy(), Box::new(Watched { tx, gone: gone.clone() })), rx, gone)
}

#[test]
fn abandoned_prompts_stop_between_prefill_slices_and_in_the_queue() {
    let model = tiny();
    let sched = Scheduler::start(model.clone(), SchedulerConfig { parallel: 1, n_ctx: 1024, max_queue: 8, prefill_chunk: 8, ..Default::default() });
    let long: Vec<u32> = (0..900).map(|i| 300 + (i * 7) % 500).collect();
    let mut gones = Vec::new();
    let mut rxs = Vec::new();
    for k in 0..4u32 {
        let mut p = long.clone();
        p[0] += k; // distinct prompts: no cache reuse between them
        let (j, rx, gone) = watched_job(p, 4);
        sched.submit(j).unwrap();
        gones.push(gone);
        rxs.push(rx);
    }
    // The first is being prefilled (it got its slot); then every client leaves.
    assert!(matches!(rxs[0].recv_timeout(Duration::from_secs(60)).unwrap(), Event::Started { .. }));
    std::thread::sleep(Duration::from_millis(50));
    for g in &gones {
        g.store(true, Ordering::Relaxed);
    }
    let t = Instant::now();
    let short = model.tokenizer.encode("Hello", true, false).unwrap();
    let (j, rx) = job(short.clone(), 3);
    sched.submit(j).unwrap();
    assert_eq!(collect(&rx).1, StopReason::Length);
    let stats = sched.stats();
    let prefilled = stats.prefilled_tokens.load(Ordering::Relaxed);
    assert!(prefilled < long.len() + short.len(), "4 abandoned prompts of {} tokens: {prefilled} prompt tokens were still run", long.len());
    assert_eq!(stats.abandoned.load(Ordering::Relaxed), 4);
    assert!(t.elapsed() < Duration::from_secs(10), "the short request waited {:?}", t.elapsed());
}

#[test]
fn the_queue_bound_holds_under_staggered_arrivals() {
    let model = tiny();
    let sched = Scheduler::start(model.clone(), SchedulerConfig { parallel: 1, n_ctx: 4096, max_queue: 2, prefill_chunk: 64, ..Default::default() });
    let prompt = model.tokenizer.encode("Hello", true, false).unwrap();
    let (runner, rx_runner, gone) = watched_job(prompt.clone(), 4000);
    sched.submit(runner).unwrap();
    assert!(matches!(rx_runner.recv_timeout(Duration::from_secs(60)).unwrap(), Event::Started { .. }));
    let mut results = Vec::new();
    let mut waiting = Vec::new();
    for _ in 0..8 {
        let (j, rx, g) = watched_job(prompt.clone(), 2);
        results.push(sched.submit(j));
        waiting.push((rx, g));
        assert!(sched.stats().queued.load(Ordering::Relaxed) <= 2);
        std::thread::sleep(Duration::from_millis(30));
    }
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(accepted, 2, "{results:?}");
    assert!(results[2..].iter().all(|r| *r == Err(Rejected::QueueFull(2))));
    gone.store(true, Ordering::Relaxed);
    for (rx, _) in waiting.iter().take(2) {
        collect(rx);
    }
}

#[test]
fn prompt_logprobs_match_the_logprobs_of_generated_tokens() {
    let model = tiny();
    let sched = Scheduler::start(model.clone(), SchedulerConfig { parallel: 2, n_ctx: 256, max_queue: 4, prefill_chunk: 3, ..Default::default() });
    let q = model.tokenizer.encode("The capital of Germany is", true, false).unwrap();
    // Generate two tokens after q with their log-probabilities.
    let (mut j, rx) = job(q.clone(), 2);
    j.logprobs = Some(2);
    sched.submit(j).unwrap();
    let generated: Vec<(u32, f32)> = rx
        .iter()
        .take_while(|e| !matches!(e, Event::Done(_)))
        .filter_map(|e| match e {
            Event::Token(t) if t.id != u32::MAX => Some((t.id, t.logprob.unwrap())),
            _ => None,
        })
        .collect();
    // The same tokens as part of a prompt, prefilled in slices of 3.
    let mut p = q.clone();
    p.extend(generated.iter().map(|g| g.0));
    let (mut j, rx) = job(p.clone(), 1);
    j.logprobs = Some(2);
    j.prompt_logprobs = true;
    sched.submit(j).unwrap();
    let prompt_lp = rx
        .iter()
        .find_map(|e| match e {
            Event::Prompt(v) => Some(v),
            _ => None,
        })
        .expect("the prompt's log-probabilities");
    assert_eq!(prompt_lp.len(), p.len());
    assert_eq!(prompt_lp.iter().map(|t| t.id).collect::<Vec<_>>(), p);
    assert!(prompt_lp[0].logprob.is_none());
    assert!(prompt_lp[1..].iter().all(|t| t.logprob.is_some_and(|l| l <= 0.0) && t.top.len() == 2));
    for (k, (_, lp)) in generated.iter().enumerate() {
        let got = prompt_lp[q.len() + k].logprob.unwrap();
        assert!((got - lp).abs() < 1e-4, "token {k}: {got} as a prompt token, {lp} when generated");
    }
}

#[test]
fn cache_groups_do_not_share_prompts() {
    let model = tiny();
    let sched = Scheduler::start(model.clone(), SchedulerConfig { parallel: 1, n_ctx: 256, max_queue: 4, prefill_chunk: 64, ..Default::default() });
    let prompt = model.tokenizer.encode("A secret PIN is 4711 and", true, false).unwrap();
    let run = |group: Option<u64>| {
        let (mut j, rx) = job(prompt.clone(), 2);
        j.cache_group = group;
        sched.submit(j).unwrap();
        collect_finish(&rx).1.cached_tokens
    };
    assert_eq!(run(Some(1)), 0);
    assert_eq!(run(Some(2)), 0, "another group must not see group 1's prompt");
    assert_eq!(run(Some(2)), prompt.len() - 1, "its own group reuses it");
    assert_eq!(run(None), 0);
    assert_eq!(run(Some(2)), 0, "a request without a group left nothing behind for others");
}

/// Speculative decoding in the server: eight greedy requests drafting with prompt lookup
/// (always, so every decode step verifies drafts), all verified in shared batched steps,
/// give exactly the tokens plain decoding gives alone, and the scheduler counts the drafts
/// (accepted ones are tokens that came several to a step).
#[test]
fn speculative_requests_verify_together_and_keep_their_tokens() {
    let model = smollm2();
    let texts: Vec<String> = PROMPTS.iter().map(|p| format!("{p} {p} {p}")).collect();
    let prompts: Vec<Vec<u32>> = texts.iter().map(|p| model.tokenizer.encode(p, true, false).unwrap()).collect();
    let cfg = SchedulerConfig { parallel: 8, n_ctx: 256, max_queue: 16, prefill_chunk: 16, ..Default::default() };
    let sched = Scheduler::start(model.clone(), cfg);
    let plain: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            let (j, rx) = job(p.clone(), 16);
            sched.submit(j).unwrap();
            collect(&rx).0
        })
        .collect();
    let rxs: Vec<Receiver<Event>> = prompts
        .iter()
        .map(|p| {
            let (mut j, rx) = job(p.clone(), 16);
            j.speculate = ternlm::Speculation { mode: ternlm::SpeculateMode::Lookup, draft_max: 4, draft_min: 4 };
            sched.submit(j).unwrap();
            rx
        })
        .collect();
    for (i, rx) in rxs.iter().enumerate() {
        assert_eq!(collect(rx).0, plain[i], "prompt {i}: speculative tokens differ from plain decoding");
    }
    let (proposed, accepted) = (sched.stats().draft_proposed.load(Ordering::Relaxed), sched.stats().draft_accepted.load(Ordering::Relaxed));
    assert!(proposed > 0 && accepted > 0 && accepted <= proposed, "{accepted} of {proposed} drafts accepted");
}
