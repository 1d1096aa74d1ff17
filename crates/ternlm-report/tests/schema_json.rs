//! The JSON Schema documents what the writer writes: a sample report validates against
//! it, documents of another version or missing a field do not, and `parse` refuses them
//! with a message that says why.

mod common;

use serde_json::{Value, json};
use ternlm_report::{JSON_SCHEMA, ReportError, parse, to_json};

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(JSON_SCHEMA).expect("schema is JSON");
    jsonschema::draft202012::new(&schema).expect("schema compiles")
}

fn errors(doc: &Value) -> Vec<String> {
    validator().iter_errors(doc).map(|e| format!("{} at {}", e, e.instance_path)).collect()
}

fn sample_value() -> Value {
    serde_json::to_value(common::sample()).expect("serializes")
}

#[test]
fn schema_is_valid_draft_2020_12() {
    let schema: Value = serde_json::from_str(JSON_SCHEMA).expect("schema is JSON");
    assert!(jsonschema::meta::is_valid(&schema));
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
}

#[test]
fn sample_report_validates() {
    let doc = sample_value();
    assert_eq!(errors(&doc), Vec::<String>::new());
    // Energy and cost missing (serialized as null) is valid too.
    assert!(doc["cells"].as_array().is_some_and(|c| c.iter().any(|c| c["decode_usd_per_mtok"].is_null())));
}

#[test]
fn every_enum_value_validates() {
    for (energy, basis) in [("measured", "owned"), ("from_watts", "price_per_hour"), ("none", "none")] {
        let mut doc = sample_value();
        doc["settings"]["energy"] = json!(energy);
        doc["settings"]["cost_basis"] = json!(basis);
        assert_eq!(errors(&doc), Vec::<String>::new(), "{energy} {basis}");
        assert!(parse(&doc.to_string()).is_ok(), "{energy} {basis}");
    }
}

#[test]
fn wrong_version_fails() {
    let mut doc = sample_value();
    doc["version"] = json!(2);
    assert!(!errors(&doc).is_empty());
    let e = parse(&doc.to_string()).expect_err("version 2 is refused");
    assert!(matches!(e, ReportError::WrongVersion { .. }), "{e}");
    assert!(e.to_string().contains("version 2 is not supported"), "{e}");
}

#[test]
fn wrong_schema_name_fails() {
    let mut doc = sample_value();
    doc["schema"] = json!("something-else");
    assert!(!errors(&doc).is_empty());
    let e = parse(&doc.to_string()).expect_err("another schema is refused");
    assert!(matches!(e, ReportError::WrongSchema { .. }), "{e}");
    assert!(e.to_string().contains("something-else"), "{e}");
}

#[test]
fn missing_required_field_fails() {
    for (path, field) in [("", "cells"), ("/settings", "kwh_price"), ("/machines/0", "bandwidth"), ("/cells/0", "decode_tokens_per_s"), ("/cells/0", "perplexity")] {
        let mut doc = sample_value();
        let parent = doc.pointer_mut(path).and_then(Value::as_object_mut).expect("object");
        parent.remove(field);
        assert!(!errors(&doc).is_empty(), "{path}/{field} missing still validates");
    }
}

#[test]
fn wrong_types_and_unknown_fields_fail() {
    let mut doc = sample_value();
    doc["settings"]["energy"] = json!("Measured");
    assert!(!errors(&doc).is_empty(), "enums are snake_case");
    let mut doc = sample_value();
    doc["cells"][0]["threads"] = json!(-1);
    assert!(!errors(&doc).is_empty(), "counts are not negative");
    let mut doc = sample_value();
    doc["cells"][0]["tokens"] = json!(1);
    assert!(!errors(&doc).is_empty(), "an undocumented field fails, so the schema keeps up with the code");
}

#[test]
fn parse_round_trips() {
    let r = common::sample();
    let text = to_json(&r).expect("serializes");
    assert_eq!(parse(&text).expect("parses"), r);
}

#[test]
fn parse_refuses_what_is_not_a_report() {
    assert!(matches!(parse("not json"), Err(ReportError::Json(_))));
    assert!(matches!(parse("[]"), Err(ReportError::WrongSchema { .. })));
    assert!(matches!(parse(r#"{"schema":"ternlm-report"}"#), Err(ReportError::WrongVersion { .. })));
    assert!(matches!(parse(r#"{"schema":"ternlm-report","version":1}"#), Err(ReportError::Json(_))));
}
