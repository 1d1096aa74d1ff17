//! Prometheus metrics in the text exposition format: requests by route and status, tokens
//! in and out, queue depth and running sequences, connections, and histograms of time to
//! first token and of the time between tokens.
//!
//! Requests are counted by route template (`/v1/models/{id}`), never by the raw path, and
//! paths that match no route count as `other`: what a client sends cannot add series, so
//! the exposition stays the same size however many distinct paths arrive.

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

/// The label for requests that matched no route.
pub const OTHER_ROUTE: &str = "other";

/// A label value escaped as the exposition format asks (backslash, quote, newline).
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Debug)]
pub struct Metrics {
    /// (route template or [`OTHER_ROUTE`], status) -> count.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Connections open now.
    pub connections: AtomicU64,
    /// Connections refused at the `--max-connections` limit.
    pub connections_refused: AtomicU64,
    /// Connections closed by a header, body or idle timeout.
    pub connections_timed_out: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub ttft: Histogram,
    pub per_token: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::default(),
            connections: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            connections_timed_out: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            ttft: Histogram::new(TTFT_BOUNDS),
            per_token: Histogram::new(TOKEN_BOUNDS),
        }
    }
}

impl Metrics {
    /// Counts a request under its route template (one of the router's, or [`OTHER_ROUTE`]).
    pub fn request(&self, route: &'static str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route, status)).or_default() += 1;
        }
    }

    /// The exposition; `log_lines_dropped` comes from the request log's writer.
    pub fn render(&self, sched: &Stats, log_lines_dropped: u64) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP ternlm_requests_total Requests by route and HTTP status.\n# TYPE ternlm_requests_total counter");
        if let Ok(m) = self.requests.lock() {
            for ((route, status), n) in m.iter() {
                let _ = writeln!(out, "ternlm_requests_total{{endpoint=\"{}\",status=\"{status}\"}} {n}", escape_label(route));
            }
        }
        let load = |a: &std::sync::atomic::AtomicUsize| a.load(Ordering::Relaxed) as u64;
        for (name, help, v) in [
            ("ternlm_prompt_tokens_total", "Prompt tokens of answered requests.", self.prompt_tokens.load(Ordering::Relaxed)),
            ("ternlm_prompt_tokens_prefilled_total", "Prompt tokens run through the model (an abandoned prompt counts only what was fed).", load(&sched.prefilled_tokens)),
            ("ternlm_requests_abandoned_total", "Requests whose client left before their first token, cancelled unrun or part-prefilled.", load(&sched.abandoned)),
            ("ternlm_connections_refused_total", "Connections refused at --max-connections.", self.connections_refused.load(Ordering::Relaxed)),
            ("ternlm_connections_timed_out_total", "Connections closed by the header, body or idle timeout.", self.connections_timed_out.load(Ordering::Relaxed)),
            ("ternlm_log_lines_dropped_total", "Request log lines dropped because stderr did not keep up.", log_lines_dropped),
            ("ternlm_generated_tokens_total", "Tokens generated.", self.generated_tokens.load(Ordering::Relaxed)),
            ("ternlm_draft_proposed_total", "Drafted tokens proposed for verification (speculative decoding).", load(&sched.draft_proposed)),
            ("ternlm_draft_accepted_total", "Drafted tokens that verification accepted.", load(&sched.draft_accepted)),
            ("ternlm_prompt_tokens_cached_total", "Prompt tokens whose KV an earlier request's cache held (not prefilled again).", load(&sched.cached_prompt_tokens)),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        for (name, help, v) in [
            ("ternlm_queue_depth", "Requests waiting for a slot.", sched.queued.load(Ordering::Relaxed)),
            ("ternlm_active_sequences", "Sequences being generated.", sched.active.load(Ordering::Relaxed)),
            ("ternlm_open_connections", "HTTP connections open.", self.connections.load(Ordering::Relaxed) as usize),
            ("ternlm_kv_cache_positions", "KV positions held by running sequences.", sched.kv_used.load(Ordering::Relaxed)),
            ("ternlm_kv_cache_capacity", "KV positions all slots can hold (parallel x context).", sched.kv_capacity.load(Ordering::Relaxed)),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let kv = sched.kv_utilization();
        let _ = writeln!(
            out,
            "# HELP ternlm_kv_cache_utilization Running sequences' share of the KV positions the slots can hold (0 to 1).\n# TYPE ternlm_kv_cache_utilization gauge\nternlm_kv_cache_utilization {kv}"
        );
        render_vllm_aliases(sched, kv, &mut out);
        self.ttft.render("ternlm_time_to_first_token_seconds", "From request to first generated token.", &mut out);
        self.per_token.render("ternlm_time_per_output_token_seconds", "Between consecutive generated tokens of a request.", &mut out);
        out
    }
}

/// The same numbers under vLLM's names, which inference gateways (the Gateway API Inference
/// Extension's endpoint picker, llm-d) and autoscaling rules written for vLLM read. Mapping
/// (README, "Metrics"): waiting = `ternlm_queue_depth`, running = `ternlm_active_sequences`,
/// KV usage = `ternlm_kv_cache_utilization` (under both the current and the older name),
/// prefix-cache queries and hits = prompt tokens admitted and prompt tokens taken from a
/// cache (tokens, as vLLM counts them).
fn render_vllm_aliases(sched: &Stats, kv: f64, out: &mut String) {
    let load = |a: &std::sync::atomic::AtomicUsize| a.load(Ordering::Relaxed);
    for (name, help, v) in [
        ("vllm:num_requests_waiting", "Requests waiting for a slot (ternlm_queue_depth).", load(&sched.queued) as f64),
        ("vllm:num_requests_running", "Requests being generated (ternlm_active_sequences).", load(&sched.active) as f64),
        ("vllm:kv_cache_usage_perc", "KV cache usage, 0 to 1 (ternlm_kv_cache_utilization).", kv),
        ("vllm:gpu_cache_usage_perc", "KV cache usage, 0 to 1, under vLLM's older name (ternlm_kv_cache_utilization).", kv),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    for (name, help, v) in [
        ("vllm:prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache (prompt tokens admitted).", load(&sched.prompt_tokens)),
        ("vllm:prefix_cache_hits_total", "Prompt tokens found in the prefix cache (ternlm_prompt_tokens_cached_total).", load(&sched.cached_prompt_tokens)),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
