//! ternlm's library: load a GGUF model (llama, bitnet, bitnet-25 / bitnet-b1.58), tokenize,
//! render chat templates, run the batched forward pass and generate text. The CLI and the
//! server are thin layers over [`Model`] and [`Session`].
//!
//! ```no_run
//! use ternlm::{LoadOptions, Model, GenerateParams, SamplerConfig};
//! let model = Model::load("model.gguf", &LoadOptions::default())?;
//! let prompt = model.tokenizer.encode("The capital of Germany is", true, false)?;
//! let mut session = model.session(model.default_ctx());
//! let params = GenerateParams { max_tokens: 16, sampler: SamplerConfig::greedy(), ..Default::default() };
//! let out = session.generate(&prompt, &params, &mut |text, _| { print!("{text}"); true })?;
//! # Ok::<(), ternlm::ModelError>(())
//! ```

pub mod arch;
mod backend;
pub mod chat;
pub mod config;
pub mod devices;
pub mod dummy;
pub mod error;
pub mod file_info;
mod forward;
pub mod hf;
mod kv_cache;
pub mod linear;
pub mod logprob;
pub mod machine;
pub mod model;
pub mod perplexity;
pub mod sampler;
pub mod sequence;
pub mod session;
pub mod speculate;
mod step;
pub mod timing;
pub mod tokenizer;
pub mod weight_type;
pub mod weights;

pub use backend::Logits;
pub use chat::{ChatTemplate, Message};
pub use config::Config;
pub use devices::{DeviceChoice, DeviceInfo, devices};
pub use error::{ModelError, Result};
pub use file_info::{ModelFileInfo, TensorTypeCount};
pub use model::{LoadOptions, Model, RenderedChat, TernaryLayout, default_threads, physical_cores, usable_cpus};
pub use sampler::{Sampler, SamplerConfig};
pub use sequence::{GenerateParams, SeqEvent, Sequence, StopReason, TokenInfo};
pub use session::{Generation, Session};
pub use speculate::{DEFAULT_DRAFT_MAX, SpeculateMode, Speculation};
pub use tokenizer::{StreamDecoder, Tokenizer};
pub use weight_type::WeightType;
