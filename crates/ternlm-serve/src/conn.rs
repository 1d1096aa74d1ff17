//! Connections: the accept loop with its `--max-connections` cap, the per-connection timers
//! (headers must arrive within `--header-timeout`, an idle keep-alive connection closes after
//! `--idle-timeout`), the JSON bodies of the answers hyper gives to requests it cannot parse,
//! and a shutdown that waits for running requests, never for connections.
//!
//! hyper has a header-read timeout of its own, but it also runs while a keep-alive
//! connection is idle, so it cannot tell a slow header from a quiet client; a small watchdog
//! per connection keeps the two apart.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::error::ApiError;
use crate::metrics::OTHER_ROUTE;
use crate::observe::{ClientAddr, Guarded};
use crate::server::AppState;

const NONE: u64 = u64::MAX;

/// What the watchdog needs to know about one connection.
struct Activity {
    opened: Instant,
    /// Requests handed to the router whose responses have not finished.
    in_flight: AtomicUsize,
    /// Requests handed to the router so far.
    dispatched: AtomicU64,
    /// Milliseconds since `opened` when the connection last became idle.
    idle_since: AtomicU64,
    /// Milliseconds since `opened` of the first byte of a request not yet dispatched.
    reading_since: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self { opened: Instant::now(), in_flight: AtomicUsize::new(0), dispatched: AtomicU64::new(0), idle_since: AtomicU64::new(0), reading_since: AtomicU64::new(NONE) }
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0 && self.reading_since.load(Ordering::Relaxed) == NONE {
            self.reading_since.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.dispatched.fetch_add(1, Ordering::Relaxed);
        self.reading_since.store(NONE, Ordering::Relaxed);
    }

    fn request_ended(&self) {
        if self.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.idle_since.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// Whether the connection has outstayed its welcome: a request's headers still incomplete
    /// after `header`, or nothing at all for `idle`. A connection with a request running is
    /// never timed out here (its body has a timeout of its own, its generation `--timeout`).
    fn expired(&self, header: Option<Duration>, idle: Option<Duration>) -> bool {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return false;
        }
        let now = self.now_ms();
        let reading = self.reading_since.load(Ordering::Relaxed);
        if reading != NONE {
            return header.is_some_and(|h| now.saturating_sub(reading) > h.as_millis() as u64);
        }
        idle.is_some_and(|i| now.saturating_sub(self.idle_since.load(Ordering::Relaxed)) > i.as_millis() as u64)
    }
}

/// Ends a request's accounting when dropped: its connection's and the server's in-flight
/// counts.
struct InFlight {
    conn: Arc<Activity>,
    st: Arc<AppState>,
}

impl InFlight {
    fn new(conn: Arc<Activity>, st: Arc<AppState>) -> Self {
        conn.request_started();
        st.request_started();
        Self { conn, st }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn.request_ended();
        self.st.request_ended();
    }
}

/// The socket as hyper sees it: reads mark activity, and the bare answer hyper writes for a
/// request it could not parse (400, 414, 431, with an empty body) is replaced by the same
/// status with an OpenAI-style JSON body. Such an answer is the only response head written
/// when no request was dispatched for it, which is how it is told apart.
struct Tracked {
    io: TcpStream,
    activity: Arc<Activity>,
    st: Arc<AppState>,
    heads: u64,
    /// A replacement answer still to be written, and how much of it has been.
    pending: Vec<u8>,
    written: usize,
    replaced: bool,
}

impl Tracked {
    fn flush_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        Poll::Ready(Ok(()))
    }
}

/// The status of a response head hyper wrote for a request it could not parse.
fn automatic_status(buf: &[u8]) -> Option<StatusCode> {
    let rest = buf.strip_prefix(b"HTTP/1.1 ")?;
    let code = std::str::from_utf8(rest.get(..3)?).ok()?.parse::<u16>().ok()?;
    StatusCode::from_u16(code).ok()
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        std::task::ready!(self.flush_pending(cx))?;
        if self.replaced {
            // hyper's own answer was replaced; nothing of it may follow ours.
            return Poll::Ready(Ok(buf.len()));
        }
        if buf.starts_with(b"HTTP/1.1 ") {
            self.heads += 1;
            if self.heads > self.activity.dispatched.load(Ordering::Relaxed)
                && let Some(status) = automatic_status(buf)
            {
                self.st.metrics.request(OTHER_ROUTE, status.as_u16());
                self.pending = ApiError::from_status(status, "").raw_response();
                self.written = 0;
                self.replaced = true;
                std::task::ready!(self.flush_pending(cx))?;
                return Poll::Ready(Ok(buf.len()));
            }
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.flush_pending(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.flush_pending(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves one connection until it closes, times out, or `stop` fires.
async fn serve_connection(stream: TcpStream, peer: SocketAddr, app: Router, st: Arc<AppState>) {
    let activity = Arc::new(Activity::new());
    let io = Tracked { io: stream, activity: activity.clone(), st: st.clone(), heads: 0, pending: Vec::new(), written: 0, replaced: false };
    let (svc_activity, svc_st) = (activity.clone(), st.clone());
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        // Counted from here until the response body is dropped, sent or abandoned.
        let guard = InFlight::new(svc_activity.clone(), svc_st.clone());
        req.extensions_mut().insert(ClientAddr(peer));
        let app = app.clone();
        async move {
            let resp = match app.oneshot(req.map(Body::new)).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(resp.map(|b| Body::new(Guarded::new(b, guard))))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Our watchdog times headers out (hyper's timer would also close idle keep-alive
    // connections at the header timeout).
    builder.timer(TokioTimer::new()).header_read_timeout(None).keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let (header, idle) = (st.cfg.header_timeout, st.cfg.idle_timeout);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = &mut conn => break,
            _ = tick.tick() => {
                if activity.expired(header, idle) {
                    st.metrics.connections_timed_out.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

/// Answers a connection over the limit and closes it (within a second, whatever the client).
async fn refuse(mut stream: TcpStream, limit: usize) {
    let answer = ApiError::too_many_connections(limit).raw_response();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&answer).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Accepts connections until `stop` resolves, then closes every connection still open.
/// Returns once all of them are gone.
pub async fn accept_loop(listener: TcpListener, app: Router, st: Arc<AppState>, stop: impl std::future::Future<Output = ()>) {
    let limit = st.cfg.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(limit));
    let mut conns = JoinSet::new();
    let mut refusals = JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else {
                    // Out of file descriptors and the like: let it pass rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let (app, st) = (app.clone(), st.clone());
                        st.metrics.connections.fetch_add(1, Ordering::Relaxed);
                        conns.spawn(async move {
                            serve_connection(stream, peer, app, st.clone()).await;
                            st.metrics.connections.fetch_sub(1, Ordering::Relaxed);
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        st.metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
                        refusals.spawn(refuse(stream, limit));
                    }
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            Some(_) = refusals.join_next(), if !refusals.is_empty() => {}
        }
    }
    conns.abort_all();
    refusals.abort_all();
    while conns.join_next().await.is_some() {}
    st.metrics.connections.store(0, Ordering::Relaxed);
}
