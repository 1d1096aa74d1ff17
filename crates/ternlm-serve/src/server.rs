//! The OpenAI-compatible HTTP server (axum on hyper and tokio): its configuration and state,
//! the routes (completions in [`crate::completions`]), API keys, models, health and
//! metrics, and a shutdown bounded by its grace period. Inference never runs here: requests
//! go to the [`Scheduler`]'s thread and come back as events; templating and tokenizing run on
//! tokio's blocking threads, so a huge prompt never stalls the async workers that answer
//! `/health`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use ternlm::Model;
use tokio::sync::Notify;

use crate::api::SamplingDefaults;
use crate::auth::{ApiKeys, Tenant};
use crate::completions::{chat, completions};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::observe::observe;
use crate::request_log::{LogFormat, LogWriter};
use crate::scheduler::{Scheduler, SchedulerConfig};

/// Which requests may reuse each other's cached prompts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheScope {
    /// Only requests made with the same API key (without keys the server is one tenant).
    #[default]
    Key,
    /// Every request: the most reuse, but `cached_tokens` and time to first token tell a
    /// client how much of its prompt someone else recently sent.
    Global,
    /// No reuse.
    Off,
}

#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The id clients name in `model` (and `/v1/models` lists).
    pub model_name: String,
    /// Refuse requests naming another model (by default any `model` is served, as
    /// llama-server does, since clients hard-code names).
    pub strict_model: bool,
    pub api_keys: ApiKeys,
    /// Serve `/metrics` without a key even when keys are set.
    pub metrics_public: bool,
    pub cache_scope: CacheScope,
    pub scheduler: SchedulerConfig,
    pub sampling: SamplingDefaults,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// Longest a request may generate (`None`: no limit).
    pub timeout: Option<Duration>,
    /// Longest a request's headers may take to arrive.
    pub header_timeout: Option<Duration>,
    /// Longest a request's body may take to arrive.
    pub body_timeout: Option<Duration>,
    /// How long a keep-alive connection may sit idle between requests.
    pub idle_timeout: Option<Duration>,
    /// Connections open at once at most; more are answered 503 and closed.
    pub max_connections: usize,
    /// After SIGTERM/Ctrl-C, how long running requests may finish before they are cancelled.
    pub grace: Duration,
    pub log_format: LogFormat,
    /// Put prompt text in the request log.
    pub log_prompts: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            model_name: "ternlm".into(),
            strict_model: false,
            api_keys: ApiKeys::default(),
            metrics_public: false,
            cache_scope: CacheScope::Key,
            scheduler: SchedulerConfig::default(),
            sampling: SamplingDefaults::default(),
            max_body: 4 << 20,
            timeout: Some(Duration::from_secs(600)),
            header_timeout: Some(Duration::from_secs(10)),
            body_timeout: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(60)),
            max_connections: 256,
            grace: Duration::from_secs(10),
            log_format: LogFormat::Text,
            log_prompts: false,
        }
    }
}

pub struct AppState {
    pub model: Arc<Model>,
    pub scheduler: Scheduler,
    pub metrics: Metrics,
    /// The request log's writer.
    pub log: LogWriter,
    pub cfg: ServeConfig,
    /// Set on SIGTERM: new requests get 503.
    pub draining: AtomicBool,
    /// Set when the grace period ends: running requests are cancelled at their next step.
    pub cancel_all: Arc<AtomicBool>,
    /// Requests between their headers and the end of their response.
    in_flight: AtomicUsize,
    all_done: Notify,
    /// Woken when `cancel_all` is set.
    cancelling: Notify,
    next_id: AtomicU64,
    started: u64,
}

pub(crate) type Shared = Arc<AppState>;

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl AppState {
    pub fn new(model: Arc<Model>, mut cfg: ServeConfig) -> Shared {
        if cfg.cache_scope == CacheScope::Off {
            cfg.scheduler.cache_prompt = false;
        }
        let scheduler = Scheduler::start(model.clone(), cfg.scheduler.clone());
        Arc::new(Self {
            model,
            scheduler,
            metrics: Metrics::default(),
            log: LogWriter::stderr(),
            cfg,
            draining: AtomicBool::new(false),
            cancel_all: Arc::new(AtomicBool::new(false)),
            in_flight: AtomicUsize::new(0),
            all_done: Notify::new(),
            cancelling: Notify::new(),
            next_id: AtomicU64::new(1),
            started: unix_now(),
        })
    }

    pub(crate) fn id(&self, prefix: &str) -> String {
        format!("{prefix}-{:x}{:06x}", self.started, self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn request_ended(&self) {
        if self.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.all_done.notify_waiters();
        }
    }

    /// Cancels every running request (at its next step) and every body still arriving.
    pub fn cancel_everything(&self) {
        self.cancel_all.store(true, Ordering::Relaxed);
        self.cancelling.notify_waiters();
    }

    /// Resolves once [`cancel_everything`](Self::cancel_everything) has been called.
    pub(crate) async fn cancelled(&self) {
        loop {
            let woken = self.cancelling.notified();
            if self.cancel_all.load(Ordering::Relaxed) {
                return;
            }
            woken.await;
        }
    }

    /// Requests whose responses have not finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Waits until no request is in flight, at most `limit`; `true` if none is.
    async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.all_done.notified();
            if self.in_flight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.in_flight() == 0;
            }
        }
    }

    /// The cache group of a tenant's requests (`None`: no reuse).
    pub(crate) fn cache_group(&self, tenant: Tenant) -> Option<u64> {
        match self.cfg.cache_scope {
            CacheScope::Key => Some(tenant.0),
            CacheScope::Global => Some(0),
            CacheScope::Off => None,
        }
    }
}

/// The router with every endpoint, the key check, and the observing middleware.
pub fn router(state: Shared) -> Router {
    let keyed = Router::new().route("/v1/chat/completions", post(chat)).route("/v1/completions", post(completions)).route("/v1/models", get(models)).route("/v1/models/{id}", get(model_by_id));
    let keyed = if state.cfg.metrics_public { keyed } else { keyed.route("/metrics", get(metrics)) };
    let keyed = keyed.route_layer(middleware::from_fn_with_state(state.clone(), auth));
    let open = Router::new().route("/health", get(health)).route("/health/live", get(health_live)).route("/health/ready", get(health_ready));
    let open = if state.cfg.metrics_public { open.route("/metrics", get(metrics)) } else { open };
    Router::new().merge(keyed).merge(open).fallback(|req: Request| async move { ApiError::not_found(req.uri().path()) }).layer(middleware::from_fn_with_state(state.clone(), observe)).with_state(state)
}

async fn auth(State(st): State<Shared>, mut req: Request, next: Next) -> Response {
    match st.cfg.api_keys.check(req.headers().get(header::AUTHORIZATION)) {
        Some(tenant) => {
            req.extensions_mut().insert(tenant);
            next.run(req).await
        }
        None => ApiError::unauthorized().into_response(),
    }
}

async fn health(State(st): State<Shared>) -> Response {
    if st.draining.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "shutting down"}))).into_response();
    }
    Json(json!({"status": "ok"})).into_response()
}

/// Liveness for orchestrators: the process is up and answering, draining or not (a restart
/// would not help a server that is finishing its requests).
async fn health_live() -> Response {
    Json(json!({"status": "alive"})).into_response()
}

/// Readiness for orchestrators and load balancers: the model is loaded (the server answers
/// only once it is), it is not draining, its scheduler runs and its queue has room; else 503
/// with the reason, so new work goes to another replica.
async fn health_ready(State(st): State<Shared>) -> Response {
    let queued = st.scheduler.stats().queued.load(Ordering::Relaxed);
    let max_queue = st.scheduler.max_queue();
    let not_ready = if st.draining.load(Ordering::Relaxed) {
        Some("shutting down")
    } else if !st.scheduler.running() {
        Some("the scheduler has stopped")
    } else if queued >= max_queue {
        Some("the queue is full")
    } else {
        None
    };
    let body = json!({"status": not_ready.unwrap_or("ready"), "queued": queued, "max_queue": max_queue, "running": st.scheduler.stats().active.load(Ordering::Relaxed)});
    match not_ready {
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response(),
        None => Json(body).into_response(),
    }
}

async fn metrics(State(st): State<Shared>) -> Response {
    let dropped = st.log.dropped.load(Ordering::Relaxed);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], st.metrics.render(st.scheduler.stats(), dropped)).into_response()
}

fn model_object(st: &AppState) -> Value {
    json!({"id": st.cfg.model_name, "object": "model", "created": st.started, "owned_by": "ternlm"})
}

async fn models(State(st): State<Shared>) -> Response {
    Json(json!({"object": "list", "data": [model_object(&st)]})).into_response()
}

async fn model_by_id(State(st): State<Shared>, axum::extract::Path(id): axum::extract::Path<String>) -> Response {
    if id != st.cfg.model_name {
        return ApiError::model_not_found(&id, &st.cfg.model_name).into_response();
    }
    Json(model_object(&st)).into_response()
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
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
}

/// Drains after `signal`: new requests get 503 at once and `/health` says so, running ones
/// may finish within the grace period, then whatever still runs is cancelled and given two
/// seconds to send its last bytes. Connections (idle, half-sent) are never waited for.
pub async fn drain(st: Shared, signal: impl std::future::Future<Output = ()>) {
    signal.await;
    note(format_args!("ternlm: shutting down: finishing {} running requests (at most {:?})", st.in_flight(), st.cfg.grace));
    st.draining.store(true, Ordering::Relaxed);
    if !st.wait_idle(st.cfg.grace).await {
        note(format_args!("ternlm: grace period over: cancelling {} requests", st.in_flight()));
        st.cancel_everything();
        st.wait_idle(Duration::from_secs(2)).await;
    }
}

/// Binds the address to serve on (before a model is loaded, so a busy port or a bad host
/// fails at once); the error names the address.
pub fn bind(host: &str, port: u16) -> std::io::Result<std::net::TcpListener> {
    let named = |e: std::io::Error| std::io::Error::new(e.kind(), format!("cannot listen on {host}:{port}: {e}"));
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port)).map_err(named)?.collect();
    if addrs.is_empty() {
        return Err(named(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the host resolves to no address")));
    }
    std::net::TcpListener::bind(&addrs[..]).map_err(named)
}

/// Serves on `listener` until SIGTERM/Ctrl-C and the drain after it, on a runtime of its
/// own. Prints the address it listens on.
pub fn serve_blocking(model: Arc<Model>, cfg: ServeConfig, listener: std::net::TcpListener) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("ternlm-http").enable_all().build()?;
    let state = rt.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let local = listener.local_addr()?;
        let state = AppState::new(model, cfg);
        if !local.ip().is_loopback() && state.cfg.api_keys.is_empty() {
            note(format_args!("ternlm: WARNING: listening on {local} without an API key: anyone who can reach it can use it (set --api-key or --api-key-file)"));
        }
        note(format_args!("ternlm: serving {} on http://{local} (OpenAI API under /v1)", state.cfg.model_name));
        let app = router(state.clone());
        crate::conn::accept_loop(listener, app, state.clone(), drain(state.clone(), shutdown_signal())).await;
        Ok::<_, std::io::Error>(state)
    })?;
    state.cancel_everything();
    state.scheduler.shutdown();
    drop(rt);
    state.log.close();
    Ok(())
}

/// A line on stderr; a closed stderr must not bring the server down.
fn note(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}
