//! The completion endpoints (`/v1/chat/completions`, `/v1/completions`): a request is read
//! within the body limits, parsed, templated and tokenized on a blocking thread, handed to
//! the scheduler, and its events turned into one JSON answer or a stream of server-sent
//! events, with usage and log-probabilities.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde_json::{Value, json};
use ternlm::StopReason;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::api::{ChatRequest, CompletionRequest, Params, Prompt, parse};
use crate::auth::Tenant;
use crate::error::ApiError;
use crate::request_log::RequestRecord;
use crate::scheduler::{Event, EventSink, Job, Rejected, TokenEvent};
use crate::server::{AppState, Shared, unix_now};
use crate::stop::{Matched, StopMatcher};

/// Which API a request came through (they differ only in the shape of their answers).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Chat,
    Text,
}

/// Reads a request body within `--max-body` and `--body-timeout`.
async fn read_body(st: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let limit = st.cfg.max_body;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    let collect = axum::body::to_bytes(body, limit);
    let timed = async {
        match st.cfg.body_timeout {
            Some(t) => tokio::time::timeout(t, collect).await.map_err(|_| {
                st.metrics.connections_timed_out.fetch_add(1, Ordering::Relaxed);
                ApiError::body_timeout(t)
            }),
            None => Ok(collect.await),
        }
    };
    // A body still arriving when the grace period ends is not waited for.
    let read = tokio::select! {
        r = timed => r?,
        () = st.cancelled() => return Err(ApiError::unavailable("the server is shutting down")),
    };
    read.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return ApiError::too_large(limit);
            }
            source = s.source();
        }
        ApiError::invalid(format!("the request body could not be read: {e}"), None)
    })
}

/// A request checked and tokenized, ready for the scheduler.
struct Prepared {
    prompt: Vec<u32>,
    params: Params,
    /// Text to send before the completion (`echo`).
    echo: String,
    /// Report the prompt's log-probabilities too (`echo` with `logprobs`).
    prompt_logprobs: bool,
    /// The prompt for the request log (`--log-prompts` only).
    logged_prompt: Option<String>,
}

fn check_model(st: &AppState, name: Option<&str>) -> Result<(), ApiError> {
    match name {
        Some(n) if st.cfg.strict_model && !n.is_empty() && n != st.cfg.model_name => Err(ApiError::model_not_found(n, &st.cfg.model_name)),
        _ => Ok(()),
    }
}

/// Refuses a prompt of `bytes` bytes before tokenizing it when it cannot fit the context
/// whatever its tokens: no token stands for more than `max_piece_len` bytes.
fn check_bytes(st: &AppState, bytes: usize) -> Result<(), ApiError> {
    let n_ctx = st.cfg.scheduler.n_ctx;
    let at_least = bytes.div_ceil(st.model.tokenizer.max_piece_len().max(1));
    if at_least >= n_ctx {
        return Err(ApiError::context_length(format!("the prompt is {bytes} bytes, at least {at_least} tokens; the context holds {n_ctx}, with room for at least one generated token")));
    }
    Ok(())
}

fn prepare_chat(st: &AppState, body: &[u8]) -> Result<Prepared, ApiError> {
    let req: ChatRequest = parse(body)?;
    check_model(st, req.common.model.as_deref())?;
    let messages = req.messages()?;
    let params = req.common.params(None, req.logprobs()?, &st.cfg.sampling, st.model.tokenizer.n_vocab())?;
    let template_failed = |e: ternlm::ModelError| ApiError::invalid(format!("the chat template failed: {e}"), Some("messages"));
    let no_template = || ApiError::invalid("this model has no chat template; use /v1/completions", Some("messages"));
    let rendered = st.model.render_chat_literal(&messages, true).map_err(template_failed)?.ok_or_else(no_template)?;
    check_bytes(st, rendered.text().len())?;
    // Message content is tokenized as plain text: only the template's own markup becomes
    // control tokens, so a user cannot forge another role's turn.
    let prompt = st.model.encode_chat_rendered(&rendered).map_err(template_failed)?;
    let logged_prompt = st.cfg.log_prompts.then(|| rendered.into_text());
    Ok(Prepared { prompt, params, echo: String::new(), prompt_logprobs: false, logged_prompt })
}

fn prepare_text(st: &AppState, body: &[u8]) -> Result<Prepared, ApiError> {
    let req: CompletionRequest = parse(body)?;
    check_model(st, req.common.model.as_deref())?;
    let logprobs = req.logprobs()?;
    let params = req.common.params(Some(16), logprobs, &st.cfg.sampling, st.model.tokenizer.n_vocab())?;
    let tok = &st.model.tokenizer;
    let encode = |t: &str| {
        check_bytes(st, t.len())?;
        tok.encode(t, true, false).map_err(|e| ApiError::invalid(e.to_string(), Some("prompt")))
    };
    let (prompt, text) = match &req.prompt {
        Prompt::Text(t) => (encode(t)?, t.clone()),
        Prompt::Texts(v) if v.len() == 1 => (encode(&v[0])?, v[0].clone()),
        Prompt::Texts(v) => return Err(ApiError::invalid(format!("prompt has {} texts; ternlm takes one per request", v.len()), Some("prompt"))),
        Prompt::Tokens(ids) => {
            tok.check_ids(ids).map_err(|e| ApiError::invalid(e.to_string(), Some("prompt")))?;
            (ids.clone(), tok.decode(ids))
        }
    };
    if prompt.is_empty() {
        return Err(ApiError::invalid("the prompt is empty", Some("prompt")));
    }
    let echo_on = req.echo.unwrap_or(false);
    let prompt_logprobs = echo_on && logprobs.is_some();
    // With log-probabilities the echoed text is the prompt's tokens decoded, so the offsets
    // of those tokens index the text returned.
    let echo = match (echo_on, prompt_logprobs) {
        (false, _) => String::new(),
        (true, true) => tok.decode(&prompt),
        (true, false) => text.clone(),
    };
    let logged_prompt = st.cfg.log_prompts.then_some(text);
    Ok(Prepared { prompt, params, echo, prompt_logprobs, logged_prompt })
}

/// Reads, parses and tokenizes a request on a blocking thread, so the async workers keep
/// answering other requests meanwhile.
async fn prepare(st: &Shared, headers: &HeaderMap, body: Body, kind: Kind) -> Result<Prepared, ApiError> {
    let body = read_body(st, headers, body).await?;
    let st2 = st.clone();
    tokio::task::spawn_blocking(move || match kind {
        Kind::Chat => prepare_chat(&st2, &body),
        Kind::Text => prepare_text(&st2, &body),
    })
    .await
    .map_err(|e| ApiError::internal(format!("preparing the request failed: {e}")))?
}
/// An error answer; one that leaves part of a body unread also closes the connection.
fn fail(e: ApiError) -> Response {
    let closing = matches!(e.status.as_u16(), 408 | 413);
    let mut r = e.into_response();
    if closing {
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

async fn handle(st: Shared, kind: Kind, tenant: Option<Extension<Tenant>>, record: Option<Extension<Arc<RequestRecord>>>, req: Request) -> Response {
    let tenant = tenant.map_or(Tenant(0), |t| t.0);
    let record = record.map_or_else(|| Arc::new(RequestRecord::default()), |r| r.0);
    let (parts, body) = req.into_parts();
    match prepare(&st, &parts.headers, body, kind).await {
        Ok(p) => run(st, kind, p, tenant, record).await,
        Err(e) => fail(e),
    }
}

pub(crate) async fn chat(State(st): State<Shared>, tenant: Option<Extension<Tenant>>, record: Option<Extension<Arc<RequestRecord>>>, req: Request) -> Response {
    handle(st, Kind::Chat, tenant, record, req).await
}

pub(crate) async fn completions(State(st): State<Shared>, tenant: Option<Extension<Tenant>>, record: Option<Extension<Arc<RequestRecord>>>, req: Request) -> Response {
    handle(st, Kind::Text, tenant, record, req).await
}

/// Hands a request's events to its handler. Closed once the handler stops listening (its
/// client left, or a stop string ended the text) or the grace period ends, which the
/// scheduler sees while the request waits, between prefill slices and at every token.
struct ClientSink {
    tx: UnboundedSender<Event>,
    cancel_all: Arc<AtomicBool>,
}

impl EventSink for ClientSink {
    fn send(&mut self, event: Event) -> bool {
        !self.is_closed() && self.tx.send(event).is_ok()
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed() || self.cancel_all.load(Ordering::Relaxed)
    }
}

/// A request on its way: the events of its job and what has been made of them so far.
struct Running {
    st: Shared,
    kind: Kind,
    id: String,
    created: u64,
    rx: UnboundedReceiver<Event>,
    stop: StopMatcher,
    prompt_tokens: usize,
    /// Prompt tokens served from a cache, known once the scheduler admits the request.
    cached_tokens: usize,
    completion_tokens: usize,
    /// The prompt's tokens with their log-probabilities (`echo` with `logprobs`).
    prompt_lp: Vec<TokenEvent>,
    started: Instant,
    last_token: Option<Instant>,
    params: Params,
    record: Arc<RequestRecord>,
}

/// One step of a request's progress.
enum Step {
    Text { text: String, token: Option<TokenEvent> },
    Finished { tail: String, reason: &'static str },
    Failed(ApiError),
}

impl Running {
    /// Times a generated token: time to first token for the first, time per token after.
    fn token_arrived(&mut self) {
        let now = Instant::now();
        match self.last_token {
            None => {
                let ttft = now - self.started;
                self.st.metrics.ttft.observe(ttft.as_secs_f64());
                self.record.update(|d| d.time_to_first_token = Some(ttft));
            }
            Some(prev) => self.st.metrics.per_token.observe((now - prev).as_secs_f64()),
        }
        self.last_token = Some(now);
    }

    fn ended(&mut self, reason: &'static str) {
        let n = self.completion_tokens;
        self.record.update(|d| {
            d.completion_tokens = Some(n);
            d.finish_reason = Some(reason);
        });
    }

    async fn next(&mut self) -> Step {
        loop {
            let Some(ev) = self.rx.recv().await else {
                return Step::Failed(if self.st.cancel_all.load(Ordering::Relaxed) { ApiError::unavailable("the server is shutting down") } else { ApiError::internal("the scheduler stopped") });
            };
            match ev {
                Event::Started { cached_tokens } => {
                    self.cached_tokens = cached_tokens;
                    self.record.update(|d| d.cached_tokens = Some(cached_tokens));
                }
                Event::Prompt(tokens) => self.prompt_lp = tokens,
                Event::Token(t) => {
                    if t.id != u32::MAX {
                        self.completion_tokens += 1;
                        self.st.metrics.generated_tokens.fetch_add(1, Ordering::Relaxed);
                        self.token_arrived();
                        // Kept current, for the log line of a stream its client leaves.
                        let n = self.completion_tokens;
                        self.record.update(|d| d.completion_tokens = Some(n));
                    }
                    let token = (t.id != u32::MAX).then_some(t.clone());
                    return match self.stop.push(&t.text) {
                        Matched::Continue(text) => Step::Text { text, token },
                        // Closing the receiver cancels the job at its next step.
                        Matched::Stop(text) => {
                            self.rx.close();
                            self.ended("stop");
                            Step::Finished { tail: text, reason: "stop" }
                        }
                    };
                }
                Event::Done(f) => {
                    // The scheduler's count includes an end-of-sequence token, which sends
                    // no text.
                    if f.completion_tokens > self.completion_tokens {
                        self.st.metrics.generated_tokens.fetch_add((f.completion_tokens - self.completion_tokens) as u64, Ordering::Relaxed);
                        self.completion_tokens = f.completion_tokens;
                        if self.last_token.is_none() {
                            self.token_arrived();
                        }
                    }
                    self.cached_tokens = f.cached_tokens;
                    let tail = self.stop.finish();
                    let step = match f.reason {
                        StopReason::Eos => Step::Finished { tail, reason: "stop" },
                        StopReason::Length | StopReason::ContextFull => Step::Finished { tail, reason: "length" },
                        // The per-request timeout: what was generated is returned, ended as
                        // by a length limit; with nothing generated it is a 504.
                        StopReason::Cancelled if self.completion_tokens > 0 => Step::Finished { tail, reason: "length" },
                        StopReason::Cancelled => Step::Failed(ApiError::timeout()),
                    };
                    // The log tells a timeout from a length limit, which the API cannot.
                    match (&step, f.reason) {
                        (Step::Finished { .. }, StopReason::Cancelled) => self.ended("timeout"),
                        (Step::Finished { reason, .. }, _) => self.ended(reason),
                        _ => {}
                    }
                    return step;
                }
                Event::Error(msg) => return Step::Failed(ApiError::invalid(msg, None)),
            }
        }
    }

    fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        })
    }

    fn token_text(&self, id: u32) -> String {
        String::from_utf8_lossy(self.st.model.tokenizer.piece(id)).into_owned()
    }

    /// Chat-style log-probabilities of one token.
    fn chat_logprob(&self, t: &TokenEvent) -> Value {
        let entry = |id: u32, lp: f32| {
            let bytes = self.st.model.tokenizer.piece(id).to_vec();
            json!({"token": self.token_text(id), "logprob": lp, "bytes": bytes})
        };
        let mut e = entry(t.id, t.logprob.unwrap_or(0.0));
        e["top_logprobs"] = t.top.iter().map(|&(id, lp)| entry(id, lp)).collect();
        e
    }
}

async fn run(st: Shared, kind: Kind, p: Prepared, tenant: Tenant, record: Arc<RequestRecord>) -> Response {
    if st.draining.load(Ordering::Relaxed) {
        return fail(ApiError::unavailable("the server is shutting down"));
    }
    let n_ctx = st.cfg.scheduler.n_ctx;
    if p.prompt.len() >= n_ctx {
        return fail(ApiError::context_length(format!("the prompt is {} tokens; the context holds {n_ctx}, with room for at least one generated token", p.prompt.len())));
    }
    let room = n_ctx - p.prompt.len();
    let max_tokens = p.params.max_tokens.unwrap_or(room).min(room);
    let prompt_tokens = p.prompt.len();
    record.update(|d| {
        d.prompt_tokens = Some(prompt_tokens);
        d.prompt = p.logged_prompt.clone();
    });
    let (tx, rx) = unbounded_channel();
    let job = Job {
        prompt: p.prompt,
        max_tokens,
        sampler: p.params.sampler.clone(),
        logprobs: p.params.logprobs,
        prompt_logprobs: p.prompt_logprobs,
        cache_group: st.cache_group(tenant),
        deadline: st.cfg.timeout.map(|t| Instant::now() + t),
        speculate: st.cfg.scheduler.speculate,
        sink: Box::new(ClientSink { tx, cancel_all: st.cancel_all.clone() }),
    };
    match st.scheduler.submit(job) {
        Ok(()) => {}
        Err(Rejected::QueueFull(n)) => return fail(ApiError::queue_full(n)),
        Err(Rejected::ShuttingDown) => return fail(ApiError::unavailable("the server is shutting down")),
    }
    let running = Running {
        id: st.id(if kind == Kind::Chat { "chatcmpl" } else { "cmpl" }),
        created: unix_now(),
        st: st.clone(),
        kind,
        rx,
        stop: StopMatcher::new(p.params.stop.clone()),
        prompt_tokens,
        cached_tokens: 0,
        completion_tokens: 0,
        prompt_lp: Vec::new(),
        started: Instant::now(),
        last_token: None,
        params: p.params,
        record,
    };
    if running.params.stream { Sse::new(sse_stream(running, p.echo)).keep_alive(KeepAlive::default()).into_response() } else { whole(running, p.echo).await }
}

async fn whole(mut r: Running, echo: String) -> Response {
    let echo_len = echo.len();
    let mut text = echo;
    let mut tokens: Vec<TokenEvent> = Vec::new();
    let reason = loop {
        match r.next().await {
            Step::Text { text: t, token } => {
                text.push_str(&t);
                tokens.extend(token);
            }
            Step::Finished { tail, reason } => {
                text.push_str(&tail);
                break reason;
            }
            Step::Failed(e) => return fail(e),
        }
    };
    let model = r.st.cfg.model_name.clone();
    let want_lp = r.params.logprobs.is_some();
    let body = match r.kind {
        Kind::Chat => {
            let logprobs = if want_lp { json!({"content": tokens.iter().map(|t| r.chat_logprob(t)).collect::<Vec<_>>()}) } else { Value::Null };
            json!({
                "id": r.id, "object": "chat.completion", "created": r.created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": logprobs, "finish_reason": reason}],
                "usage": r.usage(),
            })
        }
        Kind::Text => {
            let logprobs = if want_lp {
                let mut all = std::mem::take(&mut r.prompt_lp);
                let base = if all.is_empty() { text[..echo_len].chars().count() } else { 0 };
                all.extend(tokens);
                text_logprobs(&r, &all, base)
            } else {
                Value::Null
            };
            json!({
                "id": r.id, "object": "text_completion", "created": r.created, "model": model,
                "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": reason}],
                "usage": r.usage(),
            })
        }
    };
    Json(body).into_response()
}

/// Counts the characters of a byte stream as it grows, each byte looked at once: a
/// character split between two tokens counts once its last byte arrives.
#[derive(Default)]
struct CharCounter {
    bytes: Vec<u8>,
    /// Bytes already counted (a whole-UTF-8 prefix) and the characters in them.
    counted: usize,
    chars: usize,
}

impl CharCounter {
    fn push(&mut self, piece: &[u8]) {
        self.bytes.extend_from_slice(piece);
        let rest = &self.bytes[self.counted..];
        let whole = match std::str::from_utf8(rest) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&rest[..e.valid_up_to()]).unwrap_or(""),
        };
        self.chars += whole.chars().count();
        self.counted += whole.len();
    }
}

/// The legacy completions log-probability object for `tokens`, whose text starts `base`
/// characters into the returned text. Offsets count characters, as OpenAI's do, up to the
/// first character each token completes.
fn text_logprobs(r: &Running, tokens: &[TokenEvent], base: usize) -> Value {
    let tok = &r.st.model.tokenizer;
    let mut text = CharCounter::default();
    let mut offsets = Vec::with_capacity(tokens.len());
    for t in tokens {
        offsets.push(base + text.chars);
        text.push(tok.piece(t.id));
    }
    let top = |t: &TokenEvent| {
        if t.logprob.is_none() {
            return Value::Null;
        }
        Value::Object(t.top.iter().map(|&(id, lp)| (r.token_text(id), json!(lp))).collect())
    };
    json!({
        "tokens": tokens.iter().map(|t| r.token_text(t.id)).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(top).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

fn chunk(r: &Running, delta: Value, finish: Option<&str>, logprobs: Value) -> SseEvent {
    let model = &r.st.cfg.model_name;
    let body = match r.kind {
        Kind::Chat => json!({
            "id": r.id, "object": "chat.completion.chunk", "created": r.created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        }),
        Kind::Text => json!({
            "id": r.id, "object": "text_completion", "created": r.created, "model": model,
            "choices": [{"index": 0, "text": delta.get("content").and_then(|c| c.as_str()).unwrap_or(""), "logprobs": logprobs, "finish_reason": finish}],
        }),
    };
    SseEvent::default().data(body.to_string())
}

fn sse_stream(r: Running, echo: String) -> impl Stream<Item = Result<SseEvent, std::convert::Infallible>> {
    // State: the request, events ready to send, whether the echo is still to be sent, and
    // whether the end has been queued.
    let mut first = Vec::new();
    if r.kind == Kind::Chat {
        first.push(chunk(&r, json!({"role": "assistant", "content": ""}), None, Value::Null));
    }
    let echo = (!echo.is_empty()).then_some(echo);
    // Characters sent so far, for the offsets of streamed log-probabilities.
    stream::unfold((r, std::collections::VecDeque::from(first), echo, 0usize, false), |(mut r, mut queue, mut echo, mut sent, mut ended)| async move {
        loop {
            if let Some(ev) = queue.pop_front() {
                return Some((Ok(ev), (r, queue, echo, sent, ended)));
            }
            if ended {
                return None;
            }
            let step = r.next().await;
            // The echo goes first, with the prompt's log-probabilities once the scheduler
            // has sent them (they come before the first token).
            if let Some(e) = echo.take() {
                let lp = if r.params.logprobs.is_some() && !r.prompt_lp.is_empty() { text_logprobs(&r, &r.prompt_lp, 0) } else { Value::Null };
                sent += e.chars().count();
                queue.push_back(chunk(&r, json!({"content": e}), None, lp));
            }
            match step {
                Step::Text { text, token } => {
                    if text.is_empty() && token.is_none() {
                        continue;
                    }
                    let lp = match (&token, r.params.logprobs) {
                        (Some(t), Some(_)) if r.kind == Kind::Chat => json!({"content": [r.chat_logprob(t)]}),
                        (Some(t), Some(_)) => text_logprobs(&r, std::slice::from_ref(t), sent),
                        _ => Value::Null,
                    };
                    sent += text.chars().count();
                    queue.push_back(chunk(&r, json!({"content": text}), None, lp));
                }
                Step::Finished { tail, reason } => {
                    if !tail.is_empty() {
                        queue.push_back(chunk(&r, json!({"content": tail}), None, Value::Null));
                    }
                    queue.push_back(chunk(&r, json!({}), Some(reason), Value::Null));
                    if r.params.include_usage {
                        let body = json!({"id": r.id, "object": if r.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" },
                                          "created": r.created, "model": r.st.cfg.model_name, "choices": [], "usage": r.usage()});
                        queue.push_back(SseEvent::default().data(body.to_string()));
                    }
                    queue.push_back(SseEvent::default().data("[DONE]"));
                    ended = true;
                }
                Step::Failed(e) => {
                    queue.push_back(SseEvent::default().data(e.body().to_string()));
                    queue.push_back(SseEvent::default().data("[DONE]"));
                    ended = true;
                }
            }
        }
    })
}
