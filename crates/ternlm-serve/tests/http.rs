//! The HTTP layer against a live server on 127.0.0.1 (a tiny ternary fixture model): the
//! bearer key, a full queue answering 429 with Retry-After, the body limit, OpenAI-style
//! errors for every kind of bad request, and a client that disconnects mid-stream freeing
//! its sequence.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ternlm_serve::server::AppState;
use ternlm_serve::{ApiKeys, CacheScope, SchedulerConfig, ServeConfig, router};

/// A running server: its address, state, and the switch that starts its shutdown.
struct Server {
    addr: String,
    state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Server {
    /// Starts the drain (as SIGTERM does) and returns how long the server took to finish.
    fn shut_down(&mut self, limit: Duration) -> Option<Duration> {
        let t = Instant::now();
        let _ = self.stop.take()?.send(());
        self.done.recv_timeout(limit).ok().map(|()| t.elapsed())
    }
}

/// Starts a server on 127.0.0.1 with the connection loop `ternlm serve` uses.
fn serve(cfg: ServeConfig) -> Server {
    let model = Arc::new(common::tiny_model(1));
    let state = AppState::new(model, cfg);
    let app = router(state.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let st = state.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap().to_string()).unwrap();
            let signal = async move {
                let _ = stop_rx.await;
            };
            ternlm_serve::conn::accept_loop(l, app, st.clone(), ternlm_serve::server::drain(st, signal)).await;
        });
        let _ = done_tx.send(());
    });
    Server { addr: rx.recv().unwrap(), state, stop: Some(stop_tx), done: done_rx }
}

/// Starts a server and returns its address and state.
fn start(cfg: ServeConfig) -> (String, Arc<AppState>) {
    let s = serve(cfg);
    // The server lives as long as the test process.
    let out = (s.addr.clone(), s.state.clone());
    std::mem::forget(s);
    out
}

fn cfg() -> ServeConfig {
    ServeConfig { model_name: "tiny".into(), scheduler: SchedulerConfig { parallel: 2, n_ctx: 256, max_queue: 8, prefill_chunk: 32, ..Default::default() }, ..Default::default() }
}

/// A raw HTTP/1.1 request; returns (status, headers in lower case, body).
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn post(addr: &str, path: &str, body: &str) -> (u16, String, String) {
    http(addr, "POST", path, &[("Content-Type", "application/json")], body.as_bytes())
}

/// The `error` object of an OpenAI-style error body (chunked bodies are unwrapped).
fn error_of(body: &str) -> serde_json::Value {
    let start = body.find('{').expect("a JSON body");
    let end = body.rfind('}').expect("a JSON body");
    let v: serde_json::Value = serde_json::from_str(&body[start..=end]).expect("the error body is JSON");
    v["error"].clone()
}

#[test]
fn the_api_key_is_required_on_v1_only() {
    let (addr, _) = start(ServeConfig { api_keys: ApiKeys::new(["s3cret".to_string()]), ..cfg() });
    let (st, head, body) = http(&addr, "GET", "/v1/models", &[], b"");
    assert_eq!(st, 401);
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    assert_eq!(error_of(&body)["code"], "invalid_api_key");
    assert_eq!(http(&addr, "GET", "/v1/models", &[("Authorization", "Bearer s3creT")], b"").0, 401);
    assert_eq!(http(&addr, "GET", "/v1/models", &[("Authorization", "Bearer s3cret")], b"").0, 200);
    assert_eq!(http(&addr, "GET", "/v1/models", &[("Authorization", "bearer s3cret")], b"").0, 200, "the scheme is case-insensitive");
    assert_eq!(http(&addr, "GET", "/health", &[], b"").0, 200);
    // /metrics is behind the key too.
    assert_eq!(http(&addr, "GET", "/metrics", &[], b"").0, 401);
    assert_eq!(http(&addr, "GET", "/metrics", &[("Authorization", "Bearer s3cret")], b"").0, 200);
    let (open, _) = start(ServeConfig { api_keys: ApiKeys::new(["s3cret".to_string()]), metrics_public: true, ..cfg() });
    assert_eq!(http(&open, "GET", "/metrics", &[], b"").0, 200, "--metrics-public");
    assert_eq!(http(&open, "GET", "/v1/models", &[], b"").0, 401);
}

#[test]
fn bad_requests_get_openai_style_errors() {
    let (addr, _) = start(ServeConfig { max_body: 2048, ..cfg() });
    let chat = "/v1/chat/completions";
    for (body, status, needle) in [
        ("{not json", 400, "invalid request body"),
        ("", 400, "empty"),
        (r#"{"messages": "hi"}"#, 400, "invalid"),
        (r#"{"messages": []}"#, 400, "messages is empty"),
        (r#"{"messages": [{"role": "wizard", "content": "hi"}]}"#, 400, "role"),
        (r#"{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}"#, 400, "invalid type"),
        (r#"{"messages": [{"role": "user", "content": "hi"}], "temperature": 9}"#, 400, "temperature"),
        (r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}"#, 400, "max_tokens"),
        (r#"{"messages": [{"role": "user", "content": "hi"}], "n": 3}"#, 400, "n = 3"),
        (r#"{"messages": [{"role": "user", "content": "hi"}], "stop": ["a","b","c","d","e"]}"#, 400, "stop"),
        (r#"{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}]}"#, 400, "tools"),
        (r#"{"messages": [{"role": "user", "content": "hi"}], "tool_choice": "auto"}"#, 400, "tool_choice"),
        (r#"{"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}}"#, 400, "response_format"),
        (r#"{"messages": [{"role": "user", "content": "hi"}], "grammar": "root ::= x"}"#, 400, "grammar"),
        (r#"{"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"abc": 5}}"#, 400, "logit_bias"),
        (r#"{"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"99999999": 5}}"#, 400, "logit_bias"),
        (r#"{"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"5": 500}}"#, 400, "logit_bias"),
        (r#"{"messages": [{"role": "user", "content": "hi"}], "top_k": -1}"#, 400, "top_k"),
        (r#"{"messages": [{"role": "user", "content": "hi"}], "min_p": 2}"#, 400, "min_p"),
        (r#"{"messages": [{"role": "user", "content": "hi"}], "repeat_penalty": 99}"#, 400, "repeat_penalty"),
        (r#"[1, 2]"#, 400, "JSON object"),
    ] {
        let (st, _, b) = post(&addr, chat, body);
        assert_eq!(st, status, "{body}: {b}");
        let e = error_of(&b);
        assert!(e["message"].as_str().unwrap().contains(needle), "{body}: {e}");
        assert!(e["type"].is_string(), "{e}");
    }
    for (body, param) in [(r#"{"prompt": "Hi", "suffix": "end"}"#, "suffix"), (r#"{"prompt": "Hi", "best_of": 3}"#, "best_of")] {
        let (st, _, b) = post(&addr, "/v1/completions", body);
        assert_eq!(st, 400, "{body}: {b}");
        assert_eq!(error_of(&b)["param"], param, "{b}");
    }
    // Harmless values of those parameters are accepted.
    let harmless = r#"{"prompt": "Hi", "max_tokens": 1, "suffix": "", "best_of": 1, "tools": [], "tool_choice": "none", "response_format": {"type": "text"}}"#;
    assert_eq!(post(&addr, "/v1/completions", harmless).0, 200, "{harmless}");
    let long = format!(r#"{{"prompt": [{}], "max_tokens": 2}}"#, vec!["5"; 300].join(","));
    let (st, _, b) = post(&addr, "/v1/completions", &long);
    assert_eq!(st, 400, "{b}");
    assert_eq!(error_of(&b)["code"], "context_length_exceeded");
    let (st, _, b) = post(&addr, "/v1/completions", &format!(r#"{{"prompt": "{}"}}"#, "x".repeat(4096)));
    assert_eq!(st, 413, "{b}");
    assert!(error_of(&b)["message"].as_str().unwrap().contains("2048"));
    let (st, _, b) = http(&addr, "GET", "/v1/nowhere", &[], b"");
    assert_eq!(st, 404);
    assert!(error_of(&b)["message"].as_str().unwrap().contains("/v1/nowhere"));
    // Any model name is served unless --strict-model.
    let (st, _, b) = post(&addr, "/v1/completions", r#"{"model": "gpt-4o-mini", "prompt": "Hello", "max_tokens": 2}"#);
    assert_eq!(st, 200, "{b}");
    let (strict, _) = start(ServeConfig { strict_model: true, ..cfg() });
    let (st, _, b) = post(&strict, "/v1/completions", r#"{"model": "gpt-4o-mini", "prompt": "Hello", "max_tokens": 2}"#);
    assert_eq!(st, 404, "{b}");
    assert!(error_of(&b)["message"].as_str().unwrap().contains("does not exist"));
    // Still serving.
    let (st, _, b) = post(&addr, "/v1/completions", r#"{"prompt": "Hello", "max_tokens": 3, "temperature": 0}"#);
    assert_eq!(st, 200, "{b}");
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    let (addr, _) = start(ServeConfig { scheduler: SchedulerConfig { parallel: 1, n_ctx: 512, max_queue: 1, prefill_chunk: 32, ..Default::default() }, ..cfg() });
    let handles: Vec<_> = (0..12)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || post(&addr, "/v1/completions", r#"{"prompt": "Hello", "max_tokens": 200, "temperature": 0}"#))
        })
        .collect();
    let results: Vec<(u16, String, String)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let busy: Vec<&(u16, String, String)> = results.iter().filter(|r| r.0 == 429).collect();
    assert!(!busy.is_empty(), "12 requests into 1 slot and a queue of 1 must overflow: {:?}", results.iter().map(|r| r.0).collect::<Vec<_>>());
    assert!(busy.iter().all(|r| r.1.contains("retry-after: 1")), "{:?}", busy[0].1);
    assert_eq!(error_of(&busy[0].2)["type"], "rate_limit_error");
    assert!(results.iter().all(|r| r.0 == 200 || r.0 == 429));
}

#[test]
fn a_client_leaving_mid_stream_frees_its_sequence() {
    let (addr, state) = start(cfg());
    let mut s = TcpStream::connect(&addr).unwrap();
    let body = r#"{"prompt": "Hello", "max_tokens": 5000, "temperature": 0, "stream": true}"#;
    write!(s, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut events = 0;
    let mut line = String::new();
    while events < 3 && r.read_line(&mut line).unwrap() > 0 {
        if line.starts_with("data: ") {
            events += 1;
        }
        line.clear();
    }
    assert_eq!(state.scheduler.stats().active.load(Ordering::Relaxed), 1);
    drop(r);
    drop(s);
    let t = Instant::now();
    while state.scheduler.stats().active.load(Ordering::Relaxed) != 0 {
        assert!(t.elapsed() < Duration::from_secs(20), "the abandoned sequence is still running");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (st, _, m) = http(&addr, "GET", "/metrics", &[], b"");
    assert_eq!(st, 200);
    assert!(m.contains("ternlm_active_sequences 0") && m.contains("ternlm_time_to_first_token_seconds_count"), "{m}");
}

/// Whether the server closes `s` within `limit` (reads until end of stream); returns what
/// it sent first.
fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<String> {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let t = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(String::from_utf8_lossy(&out).into_owned()),
            Err(_) => return None,
        }
        if t.elapsed() > limit {
            return None;
        }
    }
}

fn metrics_text(addr: &str) -> String {
    let (st, _, m) = http(addr, "GET", "/metrics", &[], b"");
    assert_eq!(st, 200);
    m
}

fn metric(m: &str, name: &str) -> f64 {
    m.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())).unwrap_or_else(|| panic!("{name} missing from:\n{m}"))
}

/// Every sample line of a text exposition is `name{label="value",...} number`.
fn assert_parses(m: &str) {
    for l in m.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {l}"));
        assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{l}");
        if let Some((_, labels)) = series.split_once('{') {
            let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("{l}"));
            for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("{l}"));
                assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{l}");
                assert!(!v.trim_end_matches('"').contains('"') || v.contains("\\\""), "{l}");
            }
        }
    }
}

#[test]
fn metrics_labels_stay_bounded_whatever_paths_arrive() {
    let (addr, _) = start(cfg());
    for i in 0..20 {
        http(&addr, "GET", &format!("/v1/models/warm{i}"), &[], b"");
        http(&addr, "GET", &format!("/nowhere/{i}"), &[], b"");
    }
    let before = metrics_text(&addr);
    for i in 0..1500 {
        let id = format!("{i}-\"quoted\"-{}", "x".repeat(2000));
        http(&addr, "GET", &format!("/v1/models/{}", id.replace('"', "%22")), &[], b"");
        http(&addr, "POST", &format!("/random/{i}/\"{}", "y".repeat(500)).replace('"', "%22"), &[], b"");
    }
    let after = metrics_text(&addr);
    assert_parses(&after);
    let series = |m: &str| m.lines().filter(|l| l.starts_with("ternlm_requests_total{")).count();
    assert_eq!(series(&before) + 1, series(&after), "only the POST to an unknown path adds a series:\n{after}");
    assert!(after.len() < before.len() + 200, "/metrics grew from {} to {} bytes", before.len(), after.len());
    assert!(after.contains(r#"endpoint="/v1/models/{id}",status="404""#) && after.contains(r#"endpoint="other",status="404""#), "{after}");
    assert!(!after.contains("quoted") && !after.contains("xxxx"));
}

#[test]
fn abandoned_long_prompts_are_not_prefilled() {
    let (addr, state) = start(ServeConfig { scheduler: SchedulerConfig { parallel: 1, n_ctx: 2048, max_queue: 16, prefill_chunk: 16, ..Default::default() }, ..cfg() });
    let prompt_of = |k: usize| format!(r#"{{"prompt": [{}], "max_tokens": 4, "temperature": 0}}"#, (0..1900).map(|i| (300 + (i * 7 + k) % 500).to_string()).collect::<Vec<_>>().join(","));
    for k in 0..6 {
        let mut s = TcpStream::connect(&addr).unwrap();
        let body = prompt_of(k);
        write!(s, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        drop(s);
    }
    let t = Instant::now();
    let (st, _, b) = post(&addr, "/v1/completions", r#"{"prompt": "Hello", "max_tokens": 2, "temperature": 0}"#);
    assert_eq!(st, 200, "{b}");
    let waited = t.elapsed();
    let m = metrics_text(&addr);
    let prefilled = metric(&m, "ternlm_prompt_tokens_prefilled_total");
    assert!(prefilled < 3.0 * 1900.0, "6 abandoned prompts of 1900 tokens: {prefilled} prompt tokens were run");
    assert!(waited < Duration::from_secs(10), "the short request waited {waited:?}");
    assert_eq!(state.scheduler.stats().queued.load(Ordering::Relaxed), 0);
    // Counted as nginx counts a client that closed its request.
    assert!(m.contains(r#"ternlm_requests_total{endpoint="/v1/completions",status="499"}"#), "{m}");
}

/// A streaming completion of `max_tokens` tokens, read up to its first event: the stream
/// and a reader over it.
fn open_stream(addr: &str, max_tokens: usize) -> (TcpStream, BufReader<TcpStream>) {
    let mut s = TcpStream::connect(addr).unwrap();
    let body = format!(r#"{{"prompt": "Hello", "max_tokens": {max_tokens}, "temperature": 0, "stream": true}}"#);
    write!(s, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    while r.read_line(&mut line).unwrap() > 0 && !line.starts_with("data: ") {
        line.clear();
    }
    (s, r)
}

#[test]
fn max_queue_bounds_waiting_requests_under_staggered_arrivals() {
    let (addr, _) = start(ServeConfig { scheduler: SchedulerConfig { parallel: 1, n_ctx: 2048, max_queue: 2, prefill_chunk: 32, ..Default::default() }, ..cfg() });
    // One long stream holds the only slot.
    let (s, r) = open_stream(&addr, 2000);
    let handles: Vec<_> = (0..8)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(if i == 0 { 0 } else { 150 }));
            let addr = addr.clone();
            std::thread::spawn(move || post(&addr, "/v1/completions", r#"{"prompt": "Hi", "max_tokens": 1, "temperature": 0}"#))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    drop(r);
    drop(s);
    let codes: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap().0).collect();
    assert_eq!(codes.iter().filter(|&&c| c == 200).count(), 2, "{codes:?}");
    assert_eq!(codes.iter().filter(|&&c| c == 429).count(), 6, "{codes:?}");
}

/// Orchestrators' probes: live and ready need no key; ready turns 503 while the queue is
/// full and back once it has room; the vLLM-named gauges an inference gateway reads agree
/// with ternlm's own.
#[test]
fn readiness_follows_the_queue_and_gateway_metrics_agree() {
    let keys = ApiKeys::new(["k".to_string()]);
    let (addr, _) =
        start(ServeConfig { api_keys: keys, metrics_public: true, scheduler: SchedulerConfig { parallel: 1, n_ctx: 4096, max_queue: 1, prefill_chunk: 32, ..Default::default() }, ..cfg() });
    let auth = [("Authorization", "Bearer k"), ("Content-Type", "application/json")];
    assert_eq!(http(&addr, "GET", "/health/live", &[], b"").0, 200);
    let (st, _, b) = http(&addr, "GET", "/health/ready", &[], b"");
    assert_eq!(st, 200, "{b}");
    let idle = metrics_text(&addr);
    assert_parses(&idle);
    for (name, want) in [("vllm:num_requests_waiting", 0.0), ("vllm:num_requests_running", 0.0), ("vllm:kv_cache_usage_perc", 0.0), ("vllm:gpu_cache_usage_perc", 0.0)] {
        assert_eq!(metric(&idle, name), want, "{name}");
    }
    // One long stream holds the only slot, a second request waits: the queue is full.
    let mut s = TcpStream::connect(&addr).unwrap();
    let body = r#"{"prompt": "Hello", "max_tokens": 4000, "temperature": 0, "stream": true}"#;
    write!(s, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    while r.read_line(&mut line).unwrap() > 0 && !line.starts_with("data: ") {
        line.clear();
    }
    let a = addr.clone();
    let waiting = std::thread::spawn(move || http(&a, "POST", "/v1/completions", &auth, br#"{"prompt": "Hi", "max_tokens": 1}"#).0);
    let t = Instant::now();
    let busy = loop {
        let m = metrics_text(&addr);
        if metric(&m, "vllm:num_requests_waiting") == 1.0 || t.elapsed() > Duration::from_secs(10) {
            break m;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(metric(&busy, "vllm:num_requests_waiting"), metric(&busy, "ternlm_queue_depth"));
    assert_eq!((metric(&busy, "vllm:num_requests_waiting"), metric(&busy, "vllm:num_requests_running")), (1.0, 1.0), "{busy}");
    let kv = metric(&busy, "vllm:kv_cache_usage_perc");
    assert!(kv > 0.0 && kv <= 1.0 && kv == metric(&busy, "ternlm_kv_cache_utilization"), "{kv}");
    let (st, _, b) = http(&addr, "GET", "/health/ready", &[], b"");
    assert_eq!(st, 503, "{b}");
    assert!(b.contains("queue is full"), "{b}");
    assert_eq!(http(&addr, "GET", "/health/live", &[], b"").0, 200);
    drop(r);
    drop(s);
    assert_eq!(waiting.join().unwrap(), 200);
    let t = Instant::now();
    while http(&addr, "GET", "/health/ready", &[], b"").0 != 200 {
        assert!(t.elapsed() < Duration::from_secs(10), "ready again once the queue has room");
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = metrics_text(&addr);
    assert!(metric(&after, "vllm:prefix_cache_queries_total") >= metric(&after, "vllm:prefix_cache_hits_total"));
    assert_eq!(metric(&after, "vllm:prefix_cache_hits_total"), metric(&after, "ternlm_prompt_tokens_cached_total"));
}

#[test]
fn huge_prompts_are_refused_before_tokenizing_and_health_stays_fast() {
    let (addr, _) = start(ServeConfig { max_body: 8 << 20, ..cfg() });
    let big = format!(r#"{{"prompt": "{}", "max_tokens": 2}}"#, "word ".repeat(800_000));
    let senders: Vec<_> = (0..2)
        .map(|_| {
            let (addr, big) = (addr.clone(), big.clone());
            std::thread::spawn(move || post(&addr, "/v1/completions", &big))
        })
        .collect();
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(http(&addr, "GET", "/health", &[], b"").0, 200);
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    for h in senders {
        let (st, _, b) = h.join().unwrap();
        assert_eq!(st, 400, "{b}");
        let e = error_of(&b);
        assert_eq!(e["code"], "context_length_exceeded");
        assert!(e["message"].as_str().unwrap().contains("bytes"), "{e}");
    }
    assert!(worst < Duration::from_millis(500), "/health took {worst:?} during two 4 MB prompts");
}

#[test]
fn slow_or_idle_connections_are_closed_and_connections_are_capped() {
    let secs = |s: u64| Some(Duration::from_secs(s));
    let (addr, _) = start(ServeConfig { header_timeout: secs(1), body_timeout: secs(1), idle_timeout: secs(2), max_connections: 6, ..cfg() });
    // A half-sent request line.
    let mut half = TcpStream::connect(&addr).unwrap();
    half.write_all(b"GET /health HT").unwrap();
    // Headers one byte at a time, every 300 ms.
    let slow_addr = addr.clone();
    let slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(&slow_addr).unwrap();
        let t = Instant::now();
        for b in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n" {
            if s.write_all(&[*b]).is_err() {
                return t.elapsed();
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        Duration::MAX
    });
    // A body that stops arriving: 408 with a JSON error.
    let mut stalled = TcpStream::connect(&addr).unwrap();
    stalled.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"prompt\": ").unwrap();
    // An idle keep-alive connection after one request.
    let mut idle = TcpStream::connect(&addr).unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    assert!(closed_within(&mut half, Duration::from_secs(4)).is_some(), "a half-sent request line stays open");
    let answer = closed_within(&mut stalled, Duration::from_secs(4)).expect("a stalled body stays open");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(error_of(&answer)["type"], "invalid_request_error");
    assert!(closed_within(&mut idle, Duration::from_secs(5)).is_some(), "an idle keep-alive connection stays open");
    let slow_for = slow.join().unwrap();
    assert!(slow_for < Duration::from_secs(4), "one byte per 300 ms kept the headers open for {slow_for:?}");

    // The cap: six connections open, the seventh is refused with a JSON 503.
    let open: Vec<TcpStream> = (0..6).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(&addr).unwrap();
    let refused = closed_within(&mut extra, Duration::from_secs(3)).expect("the connection over the cap is closed");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(error_of(&refused)["message"].as_str().unwrap().contains("connections"));
    drop(open);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(http(&addr, "GET", "/health", &[], b"").0, 200, "connections are accepted again below the cap");
    let m = metrics_text(&addr);
    assert!(metric(&m, "ternlm_connections_timed_out_total") >= 3.0, "{m}");
    assert!(metric(&m, "ternlm_connections_refused_total") >= 1.0, "{m}");
}

#[test]
fn every_error_is_json_even_below_the_router() {
    let (addr, _) = start(cfg());
    let (st, head, b) = http(&addr, "GET", "/v1/chat/completions", &[], b"");
    assert_eq!(st, 405);
    assert!(head.contains("allow: post"), "{head}");
    assert!(error_of(&b)["message"].as_str().unwrap().contains("GET"), "{b}");
    let raw = |bytes: &[u8]| {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(bytes).unwrap();
        closed_within(&mut s, Duration::from_secs(10)).expect("answered and closed")
    };
    let many_headers: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    for (request, status) in [
        (b"\x00\x01\x02 not http\r\n\r\n".to_vec(), "400"),
        (b"GET /health HTTP/1.1\r\nBad Header\r\n\r\n".to_vec(), "400"),
        (format!("GET /health HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n").into_bytes(), "431"),
        (format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)).into_bytes(), "414"),
    ] {
        let answer = raw(&request);
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{status}: {answer:.200}");
        assert!(answer.to_ascii_lowercase().contains("content-type: application/json"), "{answer}");
        assert!(error_of(&answer)["message"].is_string(), "{answer}");
    }
    // A good request on a fresh connection still works.
    assert_eq!(http(&addr, "GET", "/health", &[], b"").0, 200);
}

#[test]
fn shutdown_is_bounded_whatever_clients_do() {
    let mut server = serve(ServeConfig { grace: Duration::from_secs(2), ..cfg() });
    let addr = server.addr.clone();
    // A half-sent request and a long stream are in progress when the signal comes.
    let mut half = TcpStream::connect(&addr).unwrap();
    half.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{").unwrap();
    let (_s, mut r) = open_stream(&addr, 100000);
    let stop = server.stop.take().unwrap();
    let t = Instant::now();
    stop.send(()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Draining: health says so and new work is refused, while the stream still runs.
    let (st, _, b) = http(&addr, "GET", "/health", &[], b"");
    assert_eq!(st, 503, "{b}");
    let (st, _, b) = http(&addr, "GET", "/health/ready", &[], b"");
    assert_eq!(st, 503, "not ready while draining: {b}");
    assert_eq!(http(&addr, "GET", "/health/live", &[], b"").0, 200, "alive while draining");
    let (st, _, b) = post(&addr, "/v1/completions", r#"{"prompt": "Hi", "max_tokens": 1}"#);
    assert_eq!(st, 503, "{b}");
    assert_eq!(error_of(&b)["type"], "server_error");
    // The stream is cancelled when the grace period ends and the server is gone soon after.
    let rest = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = r.read_to_string(&mut all);
        all
    });
    server.done.recv_timeout(Duration::from_secs(8)).expect("the server finished within the grace period and a little more");
    let took = t.elapsed();
    // Neither the stream nor the half-sent body holds it past the grace period by more than
    // a moment.
    assert!(took >= Duration::from_secs(2) && took < Duration::from_millis(3500), "shutdown took {took:?}");
    let tail = rest.join().unwrap();
    assert!(tail.contains("shutting down") || tail.contains("[DONE]") || tail.is_empty(), "{tail:.300}");
    drop(half);
    assert!(TcpStream::connect(&addr).map(|mut c| closed_within(&mut c, Duration::from_secs(2)).is_some()).unwrap_or(true), "the listener is closed");
}

#[test]
fn an_idle_server_shuts_down_at_once() {
    let mut server = serve(ServeConfig { grace: Duration::from_secs(10), ..cfg() });
    let _idle = TcpStream::connect(&server.addr).unwrap();
    let took = server.shut_down(Duration::from_secs(5)).expect("shut down");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

/// `usage.prompt_tokens_details.cached_tokens` of a completion.
fn cached_of(body: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap()
}

#[test]
fn the_prompt_cache_is_scoped_to_the_api_key() {
    let keys = ApiKeys::new(["alice".to_string(), "bob".to_string()]);
    let secret = r#"{"prompt": "Alice's PIN is 4711 and her account", "max_tokens": 2, "temperature": 0}"#;
    let as_ = |addr: &str, key: &str| {
        let (st, _, b) = http(addr, "POST", "/v1/completions", &[("Content-Type", "application/json"), ("Authorization", &format!("Bearer {key}"))], secret.as_bytes());
        assert_eq!(st, 200, "{b}");
        cached_of(&b)
    };
    let (addr, _) = start(ServeConfig { api_keys: keys.clone(), ..cfg() });
    assert_eq!(as_(&addr, "alice"), 0);
    assert_eq!(as_(&addr, "bob"), 0, "bob must not see alice's cached prompt");
    assert!(as_(&addr, "alice") > 0, "alice reuses her own");
    let (global, _) = start(ServeConfig { api_keys: keys.clone(), cache_scope: CacheScope::Global, ..cfg() });
    assert_eq!(as_(&global, "alice"), 0);
    assert!(as_(&global, "bob") > 0, "--cache-scope global shares");
    let (off, _) = start(ServeConfig { api_keys: keys, cache_scope: CacheScope::Off, ..cfg() });
    as_(&off, "alice");
    assert_eq!(as_(&off, "alice"), 0);
}

fn completion(addr: &str, body: &str) -> serde_json::Value {
    let (st, _, b) = post(addr, "/v1/completions", body);
    assert_eq!(st, 200, "{body}: {b}");
    serde_json::from_str(&b).unwrap()
}

#[test]
fn sampling_parameters_are_honoured() {
    let (addr, _) = start(cfg());
    let base = completion(&addr, r#"{"prompt": "The capital of Germany is", "max_tokens": 1, "temperature": 0, "logprobs": 1}"#);
    let first = base["choices"][0]["logprobs"]["tokens"][0].as_str().unwrap().to_string();
    // logit_bias: +100 forces a token, -100 bans the greedy one.
    let forced = completion(&addr, r#"{"prompt": "The capital of Germany is", "max_tokens": 1, "temperature": 0, "logit_bias": {"330": 100}}"#);
    let banned = completion(&addr, &format!(r#"{{"prompt": "The capital of Germany is", "max_tokens": 1, "temperature": 0, "logprobs": 1, "logit_bias": {{"{}": -100}}}}"#, token_id(&first)));
    assert_eq!(forced["choices"][0]["text"], token_text(330));
    assert_ne!(banned["choices"][0]["logprobs"]["tokens"][0].as_str().unwrap(), first);
    // top_k 1 is greedy whatever the temperature; min_p 1 keeps only the most likely token.
    for extra in [r#""top_k": 1"#, r#""min_p": 1.0"#] {
        for seed in 0..4 {
            let v = completion(&addr, &format!(r#"{{"prompt": "The capital of Germany is", "max_tokens": 1, "temperature": 1.5, "seed": {seed}, "logprobs": 1, {extra}}}"#));
            assert_eq!(v["choices"][0]["logprobs"]["tokens"][0].as_str().unwrap(), first, "{extra}");
        }
    }
    // A huge repeat penalty changes a greedy continuation that repeats itself.
    let plain = completion(&addr, r#"{"prompt": "1 1 1 1 1 1 1 1", "max_tokens": 6, "temperature": 0}"#);
    let penalized = completion(&addr, r#"{"prompt": "1 1 1 1 1 1 1 1", "max_tokens": 6, "temperature": 0, "repeat_penalty": 10}"#);
    assert_ne!(plain["choices"][0]["text"], penalized["choices"][0]["text"]);
    // Server-side defaults apply when a request sets nothing: temperature 0 makes a request
    // without a temperature greedy.
    let (greedy, _) = start(ServeConfig { sampling: ternlm_serve::SamplingDefaults { temperature: 0.0, ..Default::default() }, ..cfg() });
    let a = completion(&greedy, r#"{"prompt": "Once upon a time", "max_tokens": 8}"#);
    let b = completion(&greedy, r#"{"prompt": "Once upon a time", "max_tokens": 8}"#);
    let g = completion(&addr, r#"{"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}"#);
    assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"]);
    assert_eq!(a["choices"][0]["text"], g["choices"][0]["text"]);
}

/// The tiny model's token texts.
fn vocabulary() -> &'static [String] {
    static VOCAB: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    VOCAB.get_or_init(|| {
        let m = common::tiny_model(1);
        (0..m.tokenizer.n_vocab() as u32).map(|i| String::from_utf8_lossy(m.tokenizer.piece(i)).into_owned()).collect()
    })
}

/// The id of the token whose text is `text`.
fn token_id(text: &str) -> u32 {
    vocabulary().iter().position(|t| t == text).unwrap_or_else(|| panic!("no token {text:?}")) as u32
}

fn token_text(id: u32) -> String {
    vocabulary()[id as usize].clone()
}

#[test]
fn usage_and_logprobs_add_up() {
    let (addr, _) =
        start(ServeConfig { timeout: Some(Duration::from_millis(1500)), scheduler: SchedulerConfig { parallel: 2, n_ctx: 2048, max_queue: 8, prefill_chunk: 32, ..Default::default() }, ..cfg() });
    // An immediate end of sequence (EOS forced by logit_bias) is one completion token.
    let eos = completion(&addr, r#"{"prompt": "Hello there", "max_tokens": 5, "temperature": 0, "logit_bias": {"2": 100}}"#);
    assert_eq!(eos["choices"][0]["finish_reason"], "stop");
    assert_eq!(eos["usage"]["completion_tokens"], 1, "{eos}");
    // A stop string: the cache hit is still reported, and the prompt is counted.
    let before = metric(&metrics_text(&addr), "ternlm_prompt_tokens_total");
    let text = completion(&addr, r#"{"prompt": "The capital of Germany is", "max_tokens": 12, "temperature": 0}"#)["choices"][0]["text"].as_str().unwrap().to_string();
    let stop: String = text.chars().skip(3).take(2).collect();
    let stopped = completion(&addr, &format!(r#"{{"prompt": "The capital of Germany is", "max_tokens": 12, "temperature": 0, "stop": [{}]}}"#, serde_json::to_string(&stop).unwrap()));
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop", "{stopped}");
    assert!(stopped["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() > 0, "{stopped}");
    assert!(stopped["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let after = metric(&metrics_text(&addr), "ternlm_prompt_tokens_total");
    assert_eq!(after - before, 2.0 * stopped["usage"]["prompt_tokens"].as_f64().unwrap(), "both requests' prompts are counted");
    // echo with logprobs: the prompt's tokens come first (the first with no log-probability)
    // and every offset points at its token in the returned text.
    let v = completion(&addr, r#"{"prompt": "The capital of Germany is", "max_tokens": 4, "temperature": 0, "echo": true, "logprobs": 2}"#);
    let choice = &v["choices"][0];
    let text = choice["text"].as_str().unwrap();
    let lp = &choice["logprobs"];
    let tokens: Vec<&str> = lp["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let n_prompt = v["usage"]["prompt_tokens"].as_u64().unwrap() as usize;
    assert_eq!(tokens.len(), n_prompt + v["usage"]["completion_tokens"].as_u64().unwrap() as usize);
    assert!(lp["token_logprobs"][0].is_null() && lp["token_logprobs"][1].as_f64().unwrap() <= 0.0);
    let chars: Vec<char> = text.chars().collect();
    for (i, t) in tokens.iter().enumerate() {
        let at = lp["text_offset"][i].as_u64().unwrap() as usize;
        let here: String = chars[at..].iter().take(t.chars().count()).collect();
        assert_eq!(&here, t, "token {i} at offset {at} of {text:?}");
    }
    assert!(text.starts_with("The capital of Germany is"));
    // A request that runs out of time returns what it generated, ended as by a length limit.
    let slow = completion(&addr, r#"{"prompt": "Once upon a time", "max_tokens": 100000, "temperature": 0}"#);
    assert_eq!(slow["choices"][0]["finish_reason"], "length");
    assert!(!slow["choices"][0]["text"].as_str().unwrap().is_empty());
    assert!(slow["usage"]["completion_tokens"].as_u64().unwrap() > 0);
}

/// A server that speculates answers as a plain one does (greedy, prompt lookup always
/// drafting) and counts what it drafted in /metrics.
#[test]
fn speculative_serving_answers_the_same_and_counts_drafts() {
    let body = r#"{"prompt": "one two three four one two three four one two", "max_tokens": 12, "temperature": 0}"#;
    let (plain, _) = start(cfg());
    let spec = ternlm::Speculation { mode: ternlm::SpeculateMode::Lookup, draft_max: 4, draft_min: 4 };
    let (fast, _) = start(ServeConfig { scheduler: SchedulerConfig { speculate: spec, ..cfg().scheduler }, ..cfg() });
    let text = |addr: &str| {
        let (st, _, b) = post(addr, "/v1/completions", body);
        assert_eq!(st, 200, "{b}");
        serde_json::from_str::<serde_json::Value>(&b).unwrap()["choices"][0]["text"].as_str().unwrap().to_string()
    };
    assert_eq!(text(&fast), text(&plain));
    let m = metrics_text(&fast);
    assert_parses(&m);
    assert!(metric(&m, "ternlm_draft_proposed_total") > 0.0, "{m}");
    assert!(metric(&m, "ternlm_draft_accepted_total") <= metric(&m, "ternlm_draft_proposed_total"));
    assert_eq!(metric(&metrics_text(&plain), "ternlm_draft_proposed_total"), 0.0);
}
