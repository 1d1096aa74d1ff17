//! Serving ternlm models to many clients at once. [`Scheduler`] owns the model's compute on
//! a thread of its own and runs continuous batching: every step decodes one token for each
//! active sequence and feeds a slice of any waiting prompt, all in one batched forward pass
//! (one matrix product per linear layer for every sequence together), so a new prompt never
//! stalls the streams already running. Requests arrive through a bounded queue; results
//! leave through each request's own sink, and a sink that reports its client gone cancels
//! the request at the next step, whether it is queued, being prefilled or decoding.
//! [`server`] puts the OpenAI HTTP API in front of it; [`conn`] owns the connections (caps
//! and timeouts) and [`observe`] sees every request (metrics, log, JSON errors).

pub mod api;
pub mod auth;
mod completions;
pub mod conn;
pub mod error;
pub mod metrics;
pub mod observe;
mod prompt_cache;
mod queue;
pub mod request_log;
pub mod scheduler;
pub mod server;
pub mod stop;

pub use api::SamplingDefaults;
pub use auth::ApiKeys;
pub use request_log::LogFormat;
pub use scheduler::{Event, EventSink, Finish, Job, Rejected, Scheduler, SchedulerConfig, Stats, TokenEvent, kv_bytes_per_slot, slots_within};
pub use server::{CacheScope, ServeConfig, bind, router, serve_blocking};
