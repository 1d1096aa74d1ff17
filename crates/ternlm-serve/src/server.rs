//! The OpenAI-compatible HTTP server (axum on tokio): routes, bearer-key check, body limit,
//! request handling for chat and text completions (JSON or server-sent events), models,
//! health and metrics, and graceful shutdown. Inference never runs here: requests go to the
//! [`Scheduler`]'s thread and come back as events.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use ternlm::{Model, StopReason};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use crate::api::{ChatRequest, CompletionRequest, Params, Prompt, parse};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::scheduler::{Event, Job, Rejected, Scheduler, SchedulerConfig, TokenEvent};
use crate::stop::{Matched, StopMatcher};

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub host: String,
    pub port: u16,
    /// The id clients name in `model` (and `/v1/models` lists).
    pub model_name: String,
    pub api_key: Option<String>,
    pub scheduler: SchedulerConfig,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// Longest a request may run.
    pub timeout: Duration,
    /// After SIGTERM/Ctrl-C, how long running requests may finish before they are cancelled.
    pub grace: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            model_name: "ternlm".into(),
            api_key: None,
            scheduler: SchedulerConfig::default(),
            max_body: 4 << 20,
            timeout: Duration::from_secs(600),
            grace: Duration::from_secs(10),
        }
    }
}

pub struct AppState {
    pub model: Arc<Model>,
    pub scheduler: Scheduler,
    pub metrics: Metrics,
    pub cfg: ServeConfig,
    /// Set on SIGTERM: new requests get 503.
    pub draining: AtomicBool,
    /// Set when the grace period ends: running requests are cancelled at their next step.
    pub cancel_all: Arc<AtomicBool>,
    next_id: AtomicU64,
    started: u64,
}

type Shared = Arc<AppState>;

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl AppState {
    pub fn new(model: Arc<Model>, cfg: ServeConfig) -> Shared {
        let scheduler = Scheduler::start(model.clone(), cfg.scheduler.clone());
        Arc::new(Self {
            model,
            scheduler,
            metrics: Metrics::default(),
            cfg,
            draining: AtomicBool::new(false),
            cancel_all: Arc::new(AtomicBool::new(false)),
            next_id: AtomicU64::new(1),
            started: unix_now(),
        })
    }

    fn id(&self, prefix: &str) -> String {
        format!("{prefix}-{:x}{:06x}", self.started, self.next_id.fetch_add(1, Ordering::Relaxed))
    }
}

/// The router with every endpoint, the key check and the body limit.
pub fn router(state: Shared) -> Router {
    let limit = state.cfg.max_body;
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model_by_id))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .merge(v1)
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|req: Request| async move { ApiError::not_found(req.uri().path()) })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn auth(State(st): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(key) = &st.cfg.api_key {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
        // Constant time, so the key cannot be guessed byte by byte from response times.
        let ok: bool = given.as_bytes().ct_eq(key.as_bytes()).into();
        if !ok {
            st.metrics.request(req.uri().path(), 401);
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

async fn health(State(st): State<Shared>) -> Response {
    if st.draining.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "shutting down"}))).into_response();
    }
    Json(json!({"status": "ok"})).into_response()
}

async fn metrics(State(st): State<Shared>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], st.metrics.render(st.scheduler.stats())).into_response()
}

fn model_object(st: &AppState) -> Value {
    json!({"id": st.cfg.model_name, "object": "model", "created": st.started, "owned_by": "ternlm"})
}

async fn models(State(st): State<Shared>) -> Response {
    st.metrics.request("/v1/models", 200);
    Json(json!({"object": "list", "data": [model_object(&st)]})).into_response()
}

async fn model_by_id(State(st): State<Shared>, axum::extract::Path(id): axum::extract::Path<String>) -> Response {
    if id != st.cfg.model_name {
        st.metrics.request("/v1/models", 404);
        return ApiError::model_not_found(&id, &st.cfg.model_name).into_response();
    }
    st.metrics.request("/v1/models", 200);
    Json(model_object(&st)).into_response()
}

/// Which API a request came through (they differ only in the shape of their answers).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

impl Kind {
    fn endpoint(self) -> &'static str {
        match self {
            Self::Chat => "/v1/chat/completions",
            Self::Text => "/v1/completions",
        }
    }
}

fn body_or_error(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|e| if e.status() == StatusCode::PAYLOAD_TOO_LARGE { ApiError::too_large(limit) } else { ApiError::invalid(e.body_text(), None) })
}

fn check_model(st: &AppState, name: Option<&str>) -> Result<(), ApiError> {
    match name {
        None | Some("") => Ok(()),
        Some(n) if n == st.cfg.model_name => Ok(()),
        Some(n) => Err(ApiError::model_not_found(n, &st.cfg.model_name)),
    }
}

async fn chat(State(st): State<Shared>, body: Result<Bytes, BytesRejection>) -> Response {
    let result = async {
        let body = body_or_error(body, st.cfg.max_body)?;
        let req: ChatRequest = parse(&body)?;
        check_model(&st, req.common.model.as_deref())?;
        let messages = req.messages()?;
        let params = req.common.params(None, req.logprobs()?)?;
        let rendered = st
            .model
            .render_chat(&messages, true)
            .map_err(|e| ApiError::invalid(format!("the chat template failed: {e}"), Some("messages")))?
            .ok_or_else(|| ApiError::invalid("this model has no chat template; use /v1/completions", Some("messages")))?;
        let prompt = st.model.encode_rendered(&rendered).map_err(|e| ApiError::invalid(e.to_string(), Some("messages")))?;
        Ok::<_, ApiError>((prompt, params))
    }
    .await;
    match result {
        Ok((prompt, params)) => run(st, Kind::Chat, prompt, params, String::new()).await,
        Err(e) => {
            st.metrics.request(Kind::Chat.endpoint(), e.status.as_u16());
            e.into_response()
        }
    }
}

async fn completions(State(st): State<Shared>, body: Result<Bytes, BytesRejection>) -> Response {
    let result = async {
        let body = body_or_error(body, st.cfg.max_body)?;
        let req: CompletionRequest = parse(&body)?;
        check_model(&st, req.common.model.as_deref())?;
        let params = req.common.params(Some(16), req.logprobs()?)?;
        let tok = &st.model.tokenizer;
        let (prompt, text) = match &req.prompt {
            Prompt::Text(t) => (tok.encode(t, true, false).map_err(|e| ApiError::invalid(e.to_string(), Some("prompt")))?, t.clone()),
            Prompt::Texts(v) if v.len() == 1 => (tok.encode(&v[0], true, false).map_err(|e| ApiError::invalid(e.to_string(), Some("prompt")))?, v[0].clone()),
            Prompt::Texts(v) => return Err(ApiError::invalid(format!("prompt has {} texts; ternlm takes one per request", v.len()), Some("prompt"))),
            Prompt::Tokens(ids) => {
                tok.check_ids(ids).map_err(|e| ApiError::invalid(e.to_string(), Some("prompt")))?;
                (ids.clone(), tok.decode(ids))
            }
        };
        if prompt.is_empty() {
            return Err(ApiError::invalid("the prompt is empty", Some("prompt")));
        }
        let echo = if req.echo.unwrap_or(false) { text } else { String::new() };
        Ok::<_, ApiError>((prompt, params, echo))
    }
    .await;
    match result {
        Ok((prompt, params, echo)) => run(st, Kind::Text, prompt, params, echo).await,
        Err(e) => {
            st.metrics.request(Kind::Text.endpoint(), e.status.as_u16());
            e.into_response()
        }
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
    /// Prompt tokens served from a cache, known once the scheduler reports the end.
    cached_tokens: usize,
    completion_tokens: usize,
    started: Instant,
    last_token: Option<Instant>,
    params: Params,
}

/// One step of a request's progress.
enum Step {
    Text { text: String, token: Option<TokenEvent> },
    Finished { tail: String, reason: &'static str },
    Failed(ApiError),
}

impl Running {
    async fn next(&mut self) -> Step {
        let Some(ev) = self.rx.recv().await else {
            return Step::Failed(ApiError::internal("the scheduler stopped"));
        };
        match ev {
            Event::Token(t) => {
                let now = Instant::now();
                if t.id != u32::MAX {
                    self.completion_tokens += 1;
                    self.st.metrics.generated_tokens.fetch_add(1, Ordering::Relaxed);
                    match self.last_token {
                        None => self.st.metrics.ttft.observe((now - self.started).as_secs_f64()),
                        Some(prev) => self.st.metrics.per_token.observe((now - prev).as_secs_f64()),
                    }
                    self.last_token = Some(now);
                }
                let token = (t.id != u32::MAX).then_some(t.clone());
                match self.stop.push(&t.text) {
                    Matched::Continue(text) => Step::Text { text, token },
                    // Closing the receiver cancels the job at its next step.
                    Matched::Stop(text) => {
                        self.rx.close();
                        Step::Finished { tail: text, reason: "stop" }
                    }
                }
            }
            Event::Done(f) => {
                self.st.metrics.prompt_tokens.fetch_add(f.prompt_tokens as u64, Ordering::Relaxed);
                self.cached_tokens = f.cached_tokens;
                let tail = self.stop.finish();
                match f.reason {
                    StopReason::Eos => Step::Finished { tail, reason: "stop" },
                    StopReason::Length | StopReason::ContextFull => Step::Finished { tail, reason: "length" },
                    StopReason::Cancelled if self.st.cancel_all.load(Ordering::Relaxed) => Step::Failed(ApiError::unavailable("the server is shutting down")),
                    StopReason::Cancelled => Step::Failed(ApiError::timeout()),
                }
            }
            Event::Error(msg) => Step::Failed(ApiError::invalid(msg, None)),
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

async fn run(st: Shared, kind: Kind, prompt: Vec<u32>, params: Params, echo: String) -> Response {
    let endpoint = kind.endpoint();
    let fail = |st: &Shared, e: ApiError| {
        st.metrics.request(endpoint, e.status.as_u16());
        e.into_response()
    };
    if st.draining.load(Ordering::Relaxed) {
        return fail(&st, ApiError::unavailable("the server is shutting down"));
    }
    let n_ctx = st.cfg.scheduler.n_ctx;
    if prompt.len() >= n_ctx {
        return fail(&st, ApiError::context_length(format!("the prompt is {} tokens; the context holds {n_ctx}, with room for at least one generated token", prompt.len())));
    }
    let room = n_ctx - prompt.len();
    let max_tokens = params.max_tokens.unwrap_or(room).min(room);
    let prompt_tokens = prompt.len();
    let (tx, rx) = unbounded_channel();
    let cancel = st.cancel_all.clone();
    let job = Job {
        prompt,
        max_tokens,
        sampler: params.sampler.clone(),
        logprobs: params.logprobs,
        deadline: Some(Instant::now() + st.cfg.timeout),
        sink: Box::new(move |e| !cancel.load(Ordering::Relaxed) && tx.send(e).is_ok()),
    };
    match st.scheduler.submit(job) {
        Ok(()) => {}
        Err(Rejected::QueueFull(n)) => return fail(&st, ApiError::queue_full(n)),
        Err(Rejected::ShuttingDown) => return fail(&st, ApiError::unavailable("the server is shutting down")),
    }
    let running = Running {
        id: st.id(if kind == Kind::Chat { "chatcmpl" } else { "cmpl" }),
        created: unix_now(),
        st: st.clone(),
        kind,
        rx,
        stop: StopMatcher::new(params.stop.clone()),
        prompt_tokens,
        cached_tokens: 0,
        completion_tokens: 0,
        started: Instant::now(),
        last_token: None,
        params,
    };
    if running.params.stream {
        st.metrics.request(endpoint, 200);
        Sse::new(sse_stream(running, echo)).keep_alive(KeepAlive::default()).into_response()
    } else {
        whole(running, echo).await
    }
}

async fn whole(mut r: Running, echo: String) -> Response {
    let endpoint = r.kind.endpoint();
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
            Step::Failed(e) => {
                r.st.metrics.request(endpoint, e.status.as_u16());
                return e.into_response();
            }
        }
    };
    r.st.metrics.request(endpoint, 200);
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
            let logprobs = if want_lp { text_logprobs(&r, &tokens) } else { Value::Null };
            json!({
                "id": r.id, "object": "text_completion", "created": r.created, "model": model,
                "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": reason}],
                "usage": r.usage(),
            })
        }
    };
    Json(body).into_response()
}

/// The legacy completions log-probability object.
fn text_logprobs(r: &Running, tokens: &[TokenEvent]) -> Value {
    let mut offset = 0;
    let mut offsets = Vec::new();
    for t in tokens {
        offsets.push(offset);
        offset += r.token_text(t.id).len();
    }
    json!({
        "tokens": tokens.iter().map(|t| r.token_text(t.id)).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(|t| t.top.iter().map(|&(id, lp)| (r.token_text(id), json!(lp))).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>(),
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
    // State: the request, events ready to send, and whether the end has been queued.
    let mut first = Vec::new();
    if r.kind == Kind::Chat {
        first.push(chunk(&r, json!({"role": "assistant", "content": ""}), None, Value::Null));
    } else if !echo.is_empty() {
        first.push(chunk(&r, json!({"content": echo}), None, Value::Null));
    }
    stream::unfold((r, std::collections::VecDeque::from(first), false), |(mut r, mut queue, mut ended)| async move {
        loop {
            if let Some(ev) = queue.pop_front() {
                return Some((Ok(ev), (r, queue, ended)));
            }
            if ended {
                return None;
            }
            match r.next().await {
                Step::Text { text, token } => {
                    if text.is_empty() && token.is_none() {
                        continue;
                    }
                    let lp = match (&token, r.params.logprobs) {
                        (Some(t), Some(_)) if r.kind == Kind::Chat => json!({"content": [r.chat_logprob(t)]}),
                        (Some(t), Some(_)) => text_logprobs(&r, std::slice::from_ref(t)),
                        _ => Value::Null,
                    };
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

/// Waits for SIGTERM or Ctrl-C, then drains: new requests get 503 at once, running ones may
/// finish for `grace`, after which they are cancelled at their next step.
pub async fn shutdown_signal(st: Shared) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    eprintln!("ternlm: shutting down: finishing running requests (at most {:?})", st.cfg.grace);
    st.draining.store(true, Ordering::Relaxed);
    let grace = st.cfg.grace;
    let cancel = st.cancel_all.clone();
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        cancel.store(true, Ordering::Relaxed);
    });
}

/// Serves until SIGTERM/Ctrl-C on a runtime of its own; returns once every connection has
/// closed. Prints the address it listens on.
pub fn serve_blocking(model: Arc<Model>, cfg: ServeConfig) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("ternlm-http").enable_all().build()?;
    rt.block_on(async move {
        let addr: SocketAddr = format!("{}:{}", cfg.host, cfg.port)
            .parse()
            .or_else(|_| std::net::ToSocketAddrs::to_socket_addrs(&(cfg.host.as_str(), cfg.port)).and_then(|mut a| a.next().ok_or_else(|| std::io::Error::other("no address"))))?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let state = AppState::new(model, cfg);
        eprintln!("ternlm: serving {} on http://{local} (OpenAI API under /v1)", state.cfg.model_name);
        let app = router(state.clone());
        axum::serve(listener, app).with_graceful_shutdown(shutdown_signal(state.clone())).await?;
        state.scheduler.shutdown();
        Ok(())
    })
}
