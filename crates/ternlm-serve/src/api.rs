//! The OpenAI request bodies ternlm accepts (`/v1/chat/completions`, `/v1/completions`),
//! checked into one [`Params`] the handlers run: sampling, limits, stop strings, log-
//! probabilities and streaming options, with llama.cpp's sampling extensions (`top_k`,
//! `min_p`, `repeat_penalty`, `repeat_last_n`). Unknown fields are ignored, as OpenAI-
//! compatible servers do, but a known parameter ternlm does not implement (tools, response
//! formats, grammars, ...) is a 400 that names it rather than a silent 200; so are wrong
//! types and out-of-range values.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use ternlm::{Message, SamplerConfig};

use crate::error::ApiError;

/// Sampling used when a request does not say (`ternlm serve --temperature` and friends).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingDefaults {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
}

impl Default for SamplingDefaults {
    /// OpenAI's: temperature 1 and nucleus 1, no other cut.
    fn default() -> Self {
        Self { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, repeat_penalty: 1.0 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The fields both endpoints share.
#[derive(Debug, Deserialize, Default)]
pub struct Common {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub max_tokens: Option<i64>,
    #[serde(default)]
    pub max_completion_tokens: Option<i64>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub stop: Option<OneOrMany>,
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub n: Option<i64>,
    #[serde(default)]
    pub top_k: Option<i64>,
    #[serde(default)]
    pub min_p: Option<f32>,
    #[serde(default)]
    pub repeat_penalty: Option<f32>,
    #[serde(default)]
    pub repeat_last_n: Option<i64>,
    /// llama.cpp's name for `max_tokens`.
    #[serde(default)]
    pub n_predict: Option<i64>,
    #[serde(default)]
    pub logit_bias: Option<HashMap<String, f32>>,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    #[serde(flatten)]
    pub common: Common,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    #[serde(flatten)]
    pub common: Common,
    pub prompt: Prompt,
    #[serde(default)]
    pub logprobs: Option<i64>,
    #[serde(default)]
    pub echo: Option<bool>,
}

/// Everything a handler needs to run a request.
#[derive(Debug, Clone)]
pub struct Params {
    /// `None`: until the model stops or the context fills.
    pub max_tokens: Option<usize>,
    pub sampler: SamplerConfig,
    pub stop: Vec<String>,
    /// Alternatives per token to report; `None` when log-probabilities are off.
    pub logprobs: Option<usize>,
    pub stream: bool,
    pub include_usage: bool,
}

/// Parses a JSON body, turning serde's complaint into a 400, after refusing parameters that
/// ternlm knows but does not implement.
pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid("the request body is empty; send a JSON object", None));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("invalid request body: {e}"), None))?;
    let Value::Object(fields) = value else {
        return Err(ApiError::invalid("invalid request body: send a JSON object", None));
    };
    refuse_unsupported(&fields)?;
    serde_json::from_value(Value::Object(fields)).map_err(|e| ApiError::invalid(format!("invalid request body: {e}"), None))
}

/// A parameter ternlm does not implement, and whether a value of it asks for nothing (the
/// default, which is accepted).
type Unsupported = (&'static str, fn(&Value) -> bool);

fn is_null(v: &Value) -> bool {
    v.is_null()
}

fn is_null_or_empty(v: &Value) -> bool {
    v.is_null() || v.as_array().is_some_and(Vec::is_empty) || v.as_str().is_some_and(str::is_empty)
}

fn is_null_or_false(v: &Value) -> bool {
    v.is_null() || v == &Value::Bool(false)
}

// Only the values llama.cpp documents as "off" are accepted for its sampler extensions.
fn is_null_or_zero(v: &Value) -> bool {
    v.is_null() || v.as_f64() == Some(0.0)
}

fn is_null_or_one(v: &Value) -> bool {
    v.is_null() || v.as_f64() == Some(1.0)
}

const UNSUPPORTED: &[Unsupported] = &[
    ("tools", is_null_or_empty),
    ("tool_choice", |v| v.is_null() || v == "none"),
    ("functions", is_null_or_empty),
    ("function_call", |v| v.is_null() || v == "none"),
    ("response_format", |v| v.is_null() || v.get("type").is_some_and(|t| t == "text")),
    ("audio", is_null),
    ("modalities", |v| v.is_null() || v.as_array().is_some_and(|a| a.iter().all(|m| m == "text"))),
    ("prediction", is_null),
    ("web_search_options", is_null),
    ("reasoning_effort", is_null),
    ("suffix", is_null_or_empty),
    ("best_of", |v| v.is_null() || v.as_i64() == Some(1)),
    ("grammar", is_null_or_empty),
    ("json_schema", is_null),
    ("mirostat", is_null_or_zero),
    ("typical_p", is_null_or_one),
    ("tfs_z", is_null_or_one),
    ("dry_multiplier", is_null_or_zero),
    ("xtc_probability", is_null_or_zero),
    ("dynatemp_range", is_null_or_zero),
    ("samplers", is_null),
    ("ignore_eos", is_null_or_false),
    ("n_probs", is_null_or_zero),
];

fn refuse_unsupported(fields: &Map<String, Value>) -> Result<(), ApiError> {
    for (name, harmless) in UNSUPPORTED {
        if let Some(v) = fields.get(*name)
            && !harmless(v)
        {
            return Err(ApiError::invalid(format!("{name} is not supported by ternlm yet; remove it from the request"), Some(name)));
        }
    }
    Ok(())
}

fn range(v: Option<f32>, lo: f32, hi: f32, name: &'static str) -> Result<Option<f32>, ApiError> {
    match v {
        Some(x) if !(x.is_finite() && (lo..=hi).contains(&x)) => Err(ApiError::invalid(format!("{name} must be between {lo} and {hi}, got {x}"), Some(name))),
        other => Ok(other),
    }
}

impl Common {
    /// Checks the shared fields; `default_max` applies when the request names no limit,
    /// `defaults` for sampling it does not set, and `n_vocab` bounds `logit_bias` ids.
    pub fn params(&self, default_max: Option<usize>, logprobs: Option<usize>, defaults: &SamplingDefaults, n_vocab: usize) -> Result<Params, ApiError> {
        if let Some(n) = self.n
            && n != 1
        {
            return Err(ApiError::invalid(format!("n = {n} is not supported: ternlm returns one choice per request"), Some("n")));
        }
        let max = match self.max_completion_tokens.or(self.max_tokens).or(self.n_predict) {
            Some(m) if m < 1 => {
                return Err(ApiError::invalid(format!("max_tokens must be at least 1, got {m}"), Some("max_tokens")));
            }
            Some(m) => Some(m as usize),
            None => default_max,
        };
        let temperature = range(self.temperature, 0.0, 2.0, "temperature")?.unwrap_or(defaults.temperature);
        let top_p = range(self.top_p, 0.0, 1.0, "top_p")?.unwrap_or(defaults.top_p);
        let top_k = match self.top_k {
            Some(k) if k < 0 => return Err(ApiError::invalid(format!("top_k must be 0 (off) or more, got {k}"), Some("top_k"))),
            Some(k) => k as usize,
            None => defaults.top_k,
        };
        let min_p = range(self.min_p, 0.0, 1.0, "min_p")?.unwrap_or(defaults.min_p);
        let repeat_penalty = range(self.repeat_penalty, 0.0, 10.0, "repeat_penalty")?.unwrap_or(defaults.repeat_penalty);
        let repeat_last_n = match self.repeat_last_n {
            Some(n) if !(0..=1 << 20).contains(&n) => return Err(ApiError::invalid(format!("repeat_last_n must be between 0 and {}, got {n}", 1 << 20), Some("repeat_last_n"))),
            Some(n) => n as usize,
            None => 64,
        };
        let logit_bias = match &self.logit_bias {
            None => Vec::new(),
            Some(m) if m.len() > 1024 => return Err(ApiError::invalid(format!("logit_bias has {} entries; at most 1024 are allowed", m.len()), Some("logit_bias"))),
            Some(m) => {
                let mut v = Vec::with_capacity(m.len());
                for (k, &b) in m {
                    let id = k
                        .trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|&id| (id as usize) < n_vocab)
                        .ok_or_else(|| ApiError::invalid(format!("logit_bias key {k:?} is not a token id of this model (0 to {})", n_vocab.saturating_sub(1)), Some("logit_bias")))?;
                    if !(b.is_finite() && (-100.0..=100.0).contains(&b)) {
                        return Err(ApiError::invalid(format!("logit_bias values must be between -100 and 100, got {b} for token {id}"), Some("logit_bias")));
                    }
                    v.push((id, b));
                }
                v.sort_unstable_by_key(|e| e.0);
                v
            }
        };
        let presence = range(self.presence_penalty, -2.0, 2.0, "presence_penalty")?.unwrap_or(0.0);
        let frequency = range(self.frequency_penalty, -2.0, 2.0, "frequency_penalty")?.unwrap_or(0.0);
        let seed = match self.seed {
            Some(s) => s as u64,
            None => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
        };
        let stop = match &self.stop {
            None => Vec::new(),
            Some(OneOrMany::One(s)) => vec![s.clone()],
            Some(OneOrMany::Many(v)) if v.len() > 4 => {
                return Err(ApiError::invalid(format!("stop has {} sequences; at most 4 are allowed", v.len()), Some("stop")));
            }
            Some(OneOrMany::Many(v)) => v.clone(),
        };
        let sampler = SamplerConfig { temperature, top_k, top_p, min_p, repeat_penalty, presence_penalty: presence, frequency_penalty: frequency, repeat_last_n, seed, logit_bias };
        let stream = self.stream.unwrap_or(false);
        let include_usage = stream && self.stream_options.as_ref().is_some_and(|o| o.include_usage);
        Ok(Params { max_tokens: max, sampler, stop, logprobs, stream, include_usage })
    }
}

impl ChatRequest {
    pub fn logprobs(&self) -> Result<Option<usize>, ApiError> {
        match (self.logprobs.unwrap_or(false), self.top_logprobs) {
            (_, Some(k)) if !(0..=20).contains(&k) => Err(ApiError::invalid(format!("top_logprobs must be between 0 and 20, got {k}"), Some("top_logprobs"))),
            (false, Some(_)) => Err(ApiError::invalid("top_logprobs needs logprobs: true", Some("top_logprobs"))),
            (true, k) => Ok(Some(k.unwrap_or(0) as usize)),
            (false, None) => Ok(None),
        }
    }

    /// The conversation as the chat template takes it (text parts joined).
    pub fn messages(&self) -> Result<Vec<Message>, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid("messages is empty: send at least one message", Some("messages")));
        }
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "developer" | "tool") {
                    return Err(ApiError::invalid(format!("messages[{i}].role {:?} is not system, user, assistant, developer or tool", m.role), Some("messages")));
                }
                let text = match &m.content {
                    None => String::new(),
                    Some(Content::Text(t)) => t.clone(),
                    Some(Content::Parts(parts)) => {
                        let mut s = String::new();
                        for p in parts {
                            if p.kind != "text" {
                                return Err(ApiError::invalid(format!("messages[{i}] has a {:?} part; ternlm models read text only", p.kind), Some("messages")));
                            }
                            s.push_str(p.text.as_deref().unwrap_or(""));
                        }
                        s
                    }
                };
                let role = if m.role == "developer" { "system" } else { m.role.as_str() };
                Ok(Message::new(role, text))
            })
            .collect()
    }
}

impl CompletionRequest {
    pub fn logprobs(&self) -> Result<Option<usize>, ApiError> {
        match self.logprobs {
            Some(k) if !(0..=5).contains(&k) => Err(ApiError::invalid(format!("logprobs must be between 0 and 5, got {k}"), Some("logprobs"))),
            Some(k) => Ok(Some(k as usize)),
            None => Ok(None),
        }
    }
}
