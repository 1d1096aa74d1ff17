//! The OpenAI request bodies ternlm accepts (`/v1/chat/completions`, `/v1/completions`),
//! checked into one [`Params`] the handlers run: sampling, limits, stop strings, log-
//! probabilities and streaming options. Unknown fields are ignored, as OpenAI-compatible
//! servers do; wrong types and out-of-range values are 400s that name the parameter.

use serde::Deserialize;
use ternlm::{Message, SamplerConfig};

use crate::error::ApiError;

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

/// Parses a JSON body, turning serde's complaint into a 400.
pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid("the request body is empty; send a JSON object", None));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("invalid request body: {e}"), None))
}

fn range(v: Option<f32>, lo: f32, hi: f32, name: &'static str) -> Result<Option<f32>, ApiError> {
    match v {
        Some(x) if !(x.is_finite() && (lo..=hi).contains(&x)) => Err(ApiError::invalid(format!("{name} must be between {lo} and {hi}, got {x}"), Some(name))),
        other => Ok(other),
    }
}

impl Common {
    /// Checks the shared fields; `default_max` applies when the request names no limit.
    pub fn params(&self, default_max: Option<usize>, logprobs: Option<usize>) -> Result<Params, ApiError> {
        if let Some(n) = self.n
            && n != 1
        {
            return Err(ApiError::invalid(format!("n = {n} is not supported: ternlm returns one choice per request"), Some("n")));
        }
        let max = match (self.max_completion_tokens, self.max_tokens) {
            (Some(m), _) | (None, Some(m)) if m < 1 => {
                return Err(ApiError::invalid(format!("max_tokens must be at least 1, got {m}"), Some("max_tokens")));
            }
            (Some(m), _) | (None, Some(m)) => Some(m as usize),
            (None, None) => default_max,
        };
        let temperature = range(self.temperature, 0.0, 2.0, "temperature")?.unwrap_or(1.0);
        let top_p = range(self.top_p, 0.0, 1.0, "top_p")?.unwrap_or(1.0);
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
        // OpenAI's sampling: temperature and nucleus only (no top-k or min-p cut).
        let sampler = SamplerConfig {
            temperature,
            top_k: 0,
            top_p,
            min_p: 0.0,
            repeat_penalty: 1.0,
            presence_penalty: presence,
            frequency_penalty: frequency,
            repeat_last_n: 64,
            seed,
            logit_bias: Vec::new(),
        };
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
