//! `ternlm report` and `ternlm fit`: which machine runs a model fastest and cheapest.
//!
//! - [`schema`]: the report's data (one JSON document per run, versioned), shared by the
//!   measurement, the renderers and `report merge`.
//! - [`json`]: reading a report back (refusing other schema versions) and the JSON Schema
//!   that documents its layout (`schema/report.schema.json`).
//! - [`render`]: Markdown, a self-contained HTML page, and its SVG charts.
//! - [`merge`](mod@merge): several runs in one report, for one page comparing machines.
//! - [`error`]: what reading, merging and rendering can fail on.
//!
//! The crate sits beside `ternlm-serve`: it uses the model crate's API only, and the CLI
//! drives it.

pub mod error;
pub mod json;
pub mod merge;
pub mod render;
pub mod schema;

pub use error::ReportError;
pub use json::{JSON_SCHEMA, parse, to_json};
pub use merge::merge;
pub use render::{html, markdown};
pub use schema::{Report, SCHEMA_VERSION};
