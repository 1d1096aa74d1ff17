//! The continuous-batching scheduler on real models: greedy results are the same alone and
//! among 8 concurrent requests; a long prompt is prefilled in slices while a running stream
//! keeps getting tokens; a client that goes away is cancelled at the next step; a full queue
//! rejects; bad prompts get an error event; deadlines cancel; a chat's next turn reuses the
//! cache of the turn before without changing its tokens.

mod common;

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ternlm::{LoadOptions, Model, SamplerConfig, StopReason};
use ternlm_serve::{Event, Finish, Job, Rejected, Scheduler, SchedulerConfig};

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
    (Job { prompt, max_tokens, sampler: SamplerConfig::greedy(), logprobs: None, deadline: None, sink }, rx)
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
        let cfg = SchedulerConfig { parallel: 2, n_ctx: 256, max_queue: 4, prefill_chunk: 8, cache_prompt };
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

const PROMPTS: [&str; 8] = [
    "The capital of Germany is",
    "Once upon a time,",
    "1, 2, 3, 4,",
    "def fibonacci(n):",
    "The quick brown fox",
    "My favourite colour is",
    "Water boils at",
    "In 1969, the first",
];

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
    assert!(matches!(rxa.recv_timeout(Duration::from_secs(60)).unwrap(), Event::Token(_)));
    let (jb, rxb) = job(long, 2);
    sched.submit(jb).unwrap();
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
    let mut left = 3;
    let sink = Box::new(move |e: Event| {
        let _ = tx.send(e);
        left -= 1;
        left > 0
    });
    sched.submit(Job { prompt: prompt.clone(), max_tokens: 200, sampler: SamplerConfig::greedy(), logprobs: None, deadline: None, sink }).unwrap();
    let events: Vec<Event> = rx.iter().take_while(|e| !matches!(e, Event::Done(_))).collect();
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
