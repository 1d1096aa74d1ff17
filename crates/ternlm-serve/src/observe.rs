//! The middleware every request passes through: it names the request's route (the router's
//! template, or `other`), refuses new work while the server drains, turns every error the
//! router or an extractor produced into an OpenAI-style JSON body, and once the response has
//! been sent (or its client left) counts it in the metrics and writes its log line.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};

use crate::error::ApiError;
use crate::metrics::OTHER_ROUTE;
use crate::request_log::{Line, RequestRecord};
use crate::server::AppState;

/// The router's routes, the only values the `endpoint` label takes besides `other`.
pub const ROUTES: &[&str] = &["/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/models/{id}", "/health", "/health/live", "/health/ready", "/metrics"];

/// The status a request is counted and logged with when its client left before an answer.
pub const CLIENT_CLOSED: u16 = 499;

/// The peer of a connection, put on each of its requests by the connection loop.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

fn route_of(req: &Request) -> &'static str {
    let matched = req.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    matched.and_then(|m| ROUTES.iter().copied().find(|r| *r == m)).unwrap_or(OTHER_ROUTE)
}

/// A response body that runs `on_end` when it is dropped: after its last byte was sent, or
/// when the client went away mid-body.
pub struct Guarded<G> {
    inner: Body,
    _guard: G,
}

impl<G> Guarded<G> {
    pub fn new(inner: Body, guard: G) -> Self {
        Self { inner, _guard: guard }
    }
}

impl<G: Unpin + Send + 'static> http_body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Counts and logs a request when dropped.
struct Finished {
    st: Arc<AppState>,
    record: Arc<RequestRecord>,
    client: Option<SocketAddr>,
    method: String,
    route: &'static str,
    status: u16,
    started: Instant,
}

impl Drop for Finished {
    fn drop(&mut self) {
        self.st.metrics.request(self.route, self.status);
        let details = self.record.details();
        if let Some(p) = details.prompt_tokens
            && self.status < 400
        {
            self.st.metrics.prompt_tokens.fetch_add(p as u64, Ordering::Relaxed);
        }
        // Orchestrators probe every few seconds per replica: a passing probe is counted but
        // not logged, or probes would bury the requests; a failing one is logged.
        if matches!(self.route, "/health/live" | "/health/ready") && self.status < 400 {
            return;
        }
        let line = Line { client: self.client, method: &self.method, route: self.route, status: self.status, total: self.started.elapsed(), details };
        if let Some(text) = line.render(self.st.cfg.log_format) {
            self.st.log.write(text);
        }
    }
}

pub async fn observe(State(st): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_of(&req);
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let client = req.extensions().get::<ClientAddr>().map(|c| c.0);
    let record = Arc::new(RequestRecord::default());
    req.extensions_mut().insert(record.clone());
    let draining = st.draining.load(Ordering::Relaxed);
    // Counted and logged even when the client leaves before any answer (this future is then
    // dropped): as nginx's 499, "client closed request".
    let mut finished = Finished { st, record, client, method, route, status: CLIENT_CLOSED, started };
    let resp = if draining && !route.starts_with("/health") && route != "/metrics" { ApiError::unavailable("the server is shutting down").into_response() } else { next.run(req).await };
    let mut resp = json_errors(resp, &finished.method, &path);
    if draining {
        // Let the client's next request find another server.
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    finished.status = resp.status().as_u16();
    resp.map(|b| Body::new(Guarded::new(b, finished)))
}

/// An error response without a JSON body (the router's 405, an extractor's rejection)
/// gets the OpenAI-style body every other error has; its headers (`Allow`, `Retry-After`)
/// stay.
fn json_errors(resp: Response, method: &str, path: &str) -> Response {
    let status = resp.status();
    let is_json = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let err = if status == StatusCode::METHOD_NOT_ALLOWED {
        let allowed = resp.headers().get(header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        ApiError::method_not_allowed(method, path, &allowed)
    } else {
        ApiError::from_status(status, path)
    };
    let (mut parts, _) = resp.into_parts();
    let fresh = err.into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (k, v) in fresh.headers() {
        parts.headers.insert(k.clone(), v.clone());
    }
    let (_, body) = fresh.into_parts();
    Response::from_parts(parts, body)
}
