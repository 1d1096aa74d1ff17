//! Errors of the model library. Each names what was wrong (the tensor, the key, the token
//! count) so the CLI can print one clear line.

use ternlm_format::FormatError;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("unknown architecture {0:?} (ternlm runs llama, bitnet, bitnet-25 / bitnet-b1.58)")]
    UnknownArchitecture(String),
    #[error("bad hyperparameter {key}: {reason}")]
    BadHyperparameter { key: String, reason: String },
    #[error("tensor {name:?}: {reason}")]
    BadTensor { name: String, reason: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error(
        "message {index}: its content holds control-token text that cannot be told apart from the chat template's own markup (the template transforms the content), so it cannot be tokenized safely; remove the control-token text"
    )]
    ChatContent { index: usize },
    #[error("the prompt is {prompt} tokens but the context holds {ctx} (raise --ctx-size or shorten the prompt)")]
    PromptTooLong { prompt: usize, ctx: usize },
    #[error("the context of {ctx} tokens is full")]
    ContextFull { ctx: usize },
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    BadToken { id: u32, n_vocab: usize },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("{0}")]
    Invalid(String),
    #[error("a KV cache made by another backend was given to the {backend} backend")]
    ForeignKv { backend: &'static str },
    #[error("the draft model does not fit the target: {0}")]
    DraftMismatch(String),
    #[error("GPU: {0}")]
    Gpu(String),
    #[error("{path}: {reason}")]
    Checkpoint { path: std::path::PathBuf, reason: String },
}

pub type Result<T> = std::result::Result<T, ModelError>;

pub(crate) fn bad_tensor(name: &str, reason: impl Into<String>) -> ModelError {
    ModelError::BadTensor { name: name.to_string(), reason: reason.into() }
}
