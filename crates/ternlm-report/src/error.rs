//! The crate's error: what reading, merging or rendering a report can fail on.

use thiserror::Error;

/// Why a report could not be read, merged or rendered.
#[derive(Debug, Error)]
pub enum ReportError {
    /// The text is not JSON, or not a report of this schema version's shape.
    #[error("report JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The document's `schema` field names something other than a ternlm report.
    #[error("not a ternlm report: its `schema` is {found:?}, expected {expected:?}")]
    WrongSchema { found: String, expected: &'static str },
    /// A report written under another layout; its fields may not mean what this build reads.
    #[error("report schema version {found} is not supported: this ternlm reads version {expected} (re-run `ternlm report` with a matching ternlm)")]
    WrongVersion { found: String, expected: u32 },
    /// `report merge` was given no reports.
    #[error("nothing to merge: no reports given")]
    NothingToMerge,
    /// A chart could not be drawn (the SVG backend failed).
    #[error("drawing the {chart} chart: {message}")]
    Plot { chart: &'static str, message: String },
}
