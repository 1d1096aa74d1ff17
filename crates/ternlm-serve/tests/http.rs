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
use ternlm_serve::{SchedulerConfig, ServeConfig, router};

/// Starts a server and returns its address and state.
fn start(cfg: ServeConfig) -> (String, Arc<AppState>) {
    let model = Arc::new(common::tiny_model(1));
    let state = AppState::new(model, cfg);
    let app = router(state.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap().to_string()).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    (rx.recv().unwrap(), state)
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
    let (addr, _) = start(ServeConfig { api_key: Some("s3cret".into()), ..cfg() });
    let (st, _, body) = http(&addr, "GET", "/v1/models", &[], b"");
    assert_eq!(st, 401);
    assert_eq!(error_of(&body)["code"], "invalid_api_key");
    assert_eq!(http(&addr, "GET", "/v1/models", &[("Authorization", "Bearer s3creT")], b"").0, 401);
    assert_eq!(http(&addr, "GET", "/v1/models", &[("Authorization", "Bearer s3cret")], b"").0, 200);
    assert_eq!(http(&addr, "GET", "/health", &[], b"").0, 200);
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
        (r#"{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}"#, 404, "does not exist"),
    ] {
        let (st, _, b) = post(&addr, chat, body);
        assert_eq!(st, status, "{body}: {b}");
        let e = error_of(&b);
        assert!(e["message"].as_str().unwrap().contains(needle), "{body}: {e}");
        assert!(e["type"].is_string(), "{e}");
    }
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
