//! One line per request on stderr once its response has been sent (or its client left):
//! method, route, status, prompt, cached and completion tokens, time to first token, total
//! time and the client's address, as text or JSON. Prompt text only with `--log-prompts`:
//! prompts are the users' data.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
    /// No request log.
    Off,
}

/// Lines waiting for stderr at most; more are dropped (and counted) rather than waited for.
const PENDING_LINES: usize = 4096;

/// Writes log lines to stderr on a thread of its own, so a stderr nobody drains (a full pipe)
/// can never stall the threads that answer requests.
#[derive(Debug)]
pub struct LogWriter {
    tx: Mutex<Option<SyncSender<String>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Lines dropped because stderr did not keep up.
    pub dropped: AtomicU64,
}

impl LogWriter {
    pub fn stderr() -> Self {
        let (tx, rx) = sync_channel::<String>(PENDING_LINES);
        let spawned = std::thread::Builder::new().name("ternlm-log".into()).spawn(move || {
            for line in rx {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{line}");
            }
        });
        let (tx, thread) = match spawned {
            Ok(t) => (Some(tx), Some(t)),
            Err(_) => (None, None),
        };
        Self { tx: Mutex::new(tx), thread: Mutex::new(thread), dropped: AtomicU64::new(0) }
    }

    /// Queues a line; drops it when too many are waiting or the writer is closed.
    pub fn write(&self, line: String) {
        let sent = self.tx.lock().ok().and_then(|tx| tx.as_ref().map(|tx| tx.try_send(line).is_ok()));
        if sent != Some(true) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes out what is queued and stops the writer (at exit).
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

/// What a handler learned about its request, for the log line.
#[derive(Clone, Debug, Default)]
pub struct Details {
    pub prompt_tokens: Option<usize>,
    pub cached_tokens: Option<usize>,
    pub completion_tokens: Option<usize>,
    pub time_to_first_token: Option<Duration>,
    pub finish_reason: Option<&'static str>,
    /// The prompt as the model saw it (kept only with `--log-prompts`).
    pub prompt: Option<String>,
}

/// A request's [`Details`], filled in by its handler while it runs.
#[derive(Debug, Default)]
pub struct RequestRecord(Mutex<Details>);

impl RequestRecord {
    pub fn update(&self, f: impl FnOnce(&mut Details)) {
        if let Ok(mut d) = self.0.lock() {
            f(&mut d);
        }
    }

    pub fn details(&self) -> Details {
        self.0.lock().map(|d| d.clone()).unwrap_or_default()
    }
}

/// Everything one log line says.
pub struct Line<'a> {
    pub client: Option<SocketAddr>,
    pub method: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub total: Duration,
    pub details: Details,
}

impl Line<'_> {
    pub fn render(&self, format: LogFormat) -> Option<String> {
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let d = &self.details;
        let client = self.client.map_or_else(|| "-".to_string(), |a| a.to_string());
        match format {
            LogFormat::Off => None,
            LogFormat::Json => {
                let mut v = json!({
                    "ts": (ts * 1000.0).round() / 1000.0,
                    "client": client,
                    "method": self.method,
                    "route": self.route,
                    "status": self.status,
                    "prompt_tokens": d.prompt_tokens,
                    "cached_tokens": d.cached_tokens,
                    "completion_tokens": d.completion_tokens,
                    "ttft_s": d.time_to_first_token.map(|t| t.as_secs_f64()),
                    "total_s": self.total.as_secs_f64(),
                    "finish_reason": d.finish_reason,
                });
                if let Some(p) = &d.prompt {
                    v["prompt"] = Value::String(p.clone());
                }
                Some(v.to_string())
            }
            LogFormat::Text => {
                let n = |v: Option<usize>| v.map_or_else(|| "-".to_string(), |n| n.to_string());
                let ttft = d.time_to_first_token.map_or_else(|| "-".to_string(), |t| format!("{:.3}s", t.as_secs_f64()));
                let mut s = format!(
                    "ternlm: {ts:.3} {client} {} {} {} prompt={} cached={} completion={} ttft={ttft} total={:.3}s",
                    self.method,
                    self.route,
                    self.status,
                    n(d.prompt_tokens),
                    n(d.cached_tokens),
                    n(d.completion_tokens),
                    self.total.as_secs_f64()
                );
                if let Some(r) = d.finish_reason {
                    s.push_str(&format!(" finish={r}"));
                }
                if let Some(p) = &d.prompt {
                    // Debug quoting keeps a prompt on one line, whatever it contains.
                    s.push_str(&format!(" prompt={p:?}"));
                }
                Some(s)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(prompt: Option<&str>) -> Line<'static> {
        Line {
            client: "127.0.0.1:5000".parse().ok(),
            method: "POST",
            route: "/v1/chat/completions",
            status: 200,
            total: Duration::from_millis(1500),
            details: Details { prompt_tokens: Some(12), completion_tokens: Some(3), prompt: prompt.map(str::to_string), ..Default::default() },
        }
    }

    #[test]
    fn text_and_json_lines_say_the_same() {
        let t = line(None).render(LogFormat::Text).unwrap();
        assert!(t.contains("127.0.0.1:5000 POST /v1/chat/completions 200 prompt=12 cached=- completion=3 ttft=- total=1.500s"), "{t}");
        let j: Value = serde_json::from_str(&line(None).render(LogFormat::Json).unwrap()).unwrap();
        assert_eq!((j["status"].as_u64(), j["prompt_tokens"].as_u64(), j["route"].as_str()), (Some(200), Some(12), Some("/v1/chat/completions")));
        assert!(j.get("prompt").is_none());
        assert!(line(None).render(LogFormat::Off).is_none());
    }

    #[test]
    fn a_logged_prompt_stays_on_one_line() {
        let t = line(Some("line one\nline two \"quoted\"")).render(LogFormat::Text).unwrap();
        assert!(!t.contains('\n') && t.contains(r#"prompt="line one\nline two \"quoted\"""#), "{t}");
    }
}
