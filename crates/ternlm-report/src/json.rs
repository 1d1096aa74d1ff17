//! Reading a report back from JSON, refusing documents of another schema or version
//! before their fields are looked at, and the JSON Schema that documents the layout.

use crate::error::ReportError;
use crate::schema::{Report, SCHEMA_NAME, SCHEMA_VERSION};

/// The JSON Schema (draft 2020-12) of [`Report`]'s serialized form, for validators and
/// readers in other languages; CI checks sample reports against it.
pub const JSON_SCHEMA: &str = include_str!("../schema/report.schema.json");

/// Parses a report, checking `schema` and `version` first: a document from another
/// version gets "version N is not supported" rather than a confusing missing-field error.
pub fn parse(json: &str) -> Result<Report, ReportError> {
    let value: serde_json::Value = serde_json::from_str(json)?;
    check_header(&value)?;
    Ok(serde_json::from_value(value)?)
}

/// Serializes a report as indented JSON (the form `ternlm report` writes).
pub fn to_json(report: &Report) -> Result<String, ReportError> {
    Ok(serde_json::to_string_pretty(report)?)
}

/// Checks the two fields that say what a document is, whatever else it holds.
fn check_header(value: &serde_json::Value) -> Result<(), ReportError> {
    let schema = value.get("schema");
    if schema.and_then(|s| s.as_str()) != Some(SCHEMA_NAME) {
        let found = schema.map_or_else(|| "(missing)".to_string(), |s| s.to_string());
        return Err(ReportError::WrongSchema { found, expected: SCHEMA_NAME });
    }
    let version = value.get("version");
    if version.and_then(|v| v.as_u64()) != Some(u64::from(SCHEMA_VERSION)) {
        let found = version.map_or_else(|| "(missing)".to_string(), |v| v.to_string());
        return Err(ReportError::WrongVersion { found, expected: SCHEMA_VERSION });
    }
    Ok(())
}

/// Checks a report already in memory (for `merge`), with the same errors as [`parse`].
pub(crate) fn check_report(report: &Report) -> Result<(), ReportError> {
    if report.schema != SCHEMA_NAME {
        return Err(ReportError::WrongSchema { found: report.schema.clone(), expected: SCHEMA_NAME });
    }
    if report.version != SCHEMA_VERSION {
        return Err(ReportError::WrongVersion { found: report.version.to_string(), expected: SCHEMA_VERSION });
    }
    Ok(())
}
