//! Prometheus metrics in the text exposition format: requests by endpoint and status,
//! tokens in and out, queue depth and running sequences, and histograms of time to first
//! token and of the time between tokens.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::scheduler::Stats;

/// A histogram with fixed upper bounds (seconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    total: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(), sum_micros: AtomicU64::new(0), total: AtomicU64::new(0) }
    }

    pub fn observe(&self, seconds: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if seconds <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", c.load(Ordering::Relaxed));
        }
        let total = self.total.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {total}");
    }
}

const TTFT_BOUNDS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const TOKEN_BOUNDS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub ttft: Histogram,
    pub per_token: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::default(),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            ttft: Histogram::new(TTFT_BOUNDS),
            per_token: Histogram::new(TOKEN_BOUNDS),
        }
    }
}

impl Metrics {
    pub fn request(&self, endpoint: &str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((endpoint.to_string(), status)).or_default() += 1;
        }
    }

    pub fn render(&self, sched: &Stats) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP ternlm_requests_total Requests by endpoint and HTTP status.\n# TYPE ternlm_requests_total counter");
        if let Ok(m) = self.requests.lock() {
            for ((ep, status), n) in m.iter() {
                let _ = writeln!(out, "ternlm_requests_total{{endpoint=\"{ep}\",status=\"{status}\"}} {n}");
            }
        }
        for (name, help, v) in [
            ("ternlm_prompt_tokens_total", "Prompt tokens of finished requests.", self.prompt_tokens.load(Ordering::Relaxed)),
            ("ternlm_generated_tokens_total", "Tokens generated.", self.generated_tokens.load(Ordering::Relaxed)),
            (
                "ternlm_prompt_tokens_cached_total",
                "Prompt tokens whose KV an earlier request's cache held (not prefilled again).",
                sched.cached_prompt_tokens.load(Ordering::Relaxed) as u64,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        for (name, help, v) in [
            ("ternlm_queue_depth", "Requests waiting for a slot.", sched.queued.load(Ordering::Relaxed)),
            ("ternlm_active_sequences", "Sequences being generated.", sched.active.load(Ordering::Relaxed)),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        self.ttft.render("ternlm_time_to_first_token_seconds", "From request to first generated token.", &mut out);
        self.per_token.render("ternlm_time_per_output_token_seconds", "Between consecutive generated tokens of a request.", &mut out);
        out
    }
}
