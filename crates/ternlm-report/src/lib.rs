//! `ternlm report` and `ternlm fit`: which machine runs a model fastest and cheapest.
//!
//! - [`schema`]: the report's data (one JSON document per run, versioned), shared by the
//!   measurement, the renderers and `report merge`.
//! - [`probe`]: the machine section (CPU, caches, memory, OS, the bandwidth and int8
//!   ceilings at each thread count) and the energy counters.
//! - [`measure`]: one cell: a model with its options timed on this machine.
//! - [`cost`]: what an hour, and so a million tokens, costs.
//! - [`fit`]: predictions for hardware from a table, and the ranking "what to buy".
//! - [`json`]: reading a report back (refusing other schema versions) and the JSON Schema
//!   that documents its layout (`schema/report.schema.json`).
//! - [`render`]: Markdown, a self-contained HTML page, and its SVG charts.
//! - [`merge`](mod@merge): several runs in one report, for one page comparing machines.
//! - [`error`]: what reading, merging and rendering can fail on.
//!
//! The crate sits beside `ternlm-serve`: it uses the model crate's API only, and the CLI
//! drives it.

pub mod cost;
pub mod error;
pub mod fit;
pub mod json;
pub mod measure;
pub mod merge;
pub mod probe;
pub mod render;
pub mod schema;

pub use error::ReportError;
pub use json::{JSON_SCHEMA, parse, to_json};
pub use merge::merge;
pub use render::{html, markdown};
pub use schema::{Report, SCHEMA_VERSION};
