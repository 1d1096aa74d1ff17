//! `ternlm report` end to end on the tiny fixture: two thread counts, each cell measured in
//! its own process; the JSON validates against the published schema, the HTML page carries
//! its three charts, the Markdown goes to stdout, and `report merge` combines two runs.

mod common;

use std::path::{Path, PathBuf};

use common::{run_ternlm, scratch, text};

fn tiny() -> PathBuf {
    let fixtures = std::env::var_os("TERNLM_FIXTURES").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"));
    fixtures.join("tiny-bitnet-b158/tiny-bitnet-b158-i2_s.gguf")
}

fn validate(json: &serde_json::Value) {
    let schema: serde_json::Value = serde_json::from_str(ternlm_report::JSON_SCHEMA).expect("the schema is JSON");
    let validator = jsonschema::draft202012::new(&schema).expect("the schema compiles");
    let errors: Vec<String> = validator.iter_errors(json).map(|e| format!("{e} at {}", e.instance_path)).collect();
    assert!(errors.is_empty(), "the report does not match its schema: {errors:#?}");
}

fn report(label: &str, json: &Path, extra: &[&str]) -> std::process::Output {
    let model = tiny();
    let mut args = vec!["report", "-m", model.to_str().unwrap(), "-t", "1,2", "-p", "16", "-n", "8", "-r", "1", "--label", label, "-o", json.to_str().unwrap()];
    args.extend(extra);
    run_ternlm(&args, None, &[])
}

#[test]
fn a_tiny_report_validates_renders_and_merges() {
    let a = scratch("a.json");
    let html = scratch("a.html");
    let o = report("box-a", &a, &["--watts", "20", "--hardware-cost", "800", "--html", html.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let md = text(&o.stdout);
    assert!(md.contains("## Results") && md.contains("ternlm-tiny-bitnet-b158"), "{md}");
    assert!(text(&o.stderr).contains("[2/2]"), "progress per cell: {}", text(&o.stderr));
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&a).unwrap()).unwrap();
    validate(&doc);
    let cells = doc["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 2);
    for c in cells {
        assert!(c["decode_tokens_per_s"]["median"].as_f64().unwrap() > 0.0, "{c}");
        assert!(c["peak_rss_bytes"].as_u64().unwrap() > 1 << 20, "{c}");
        // Energy from --watts, and an owned machine's cost from it and the purchase price.
        assert!(c["decode_joules_per_token"].as_f64().unwrap() > 0.0, "{c}");
        assert!(c["decode_usd_per_mtok"].as_f64().unwrap() > 0.0, "{c}");
        assert!(c["command"].as_str().unwrap().starts_with("ternlm report -m "), "{c}");
    }
    assert_eq!(doc["settings"]["energy"], "from_watts");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>") && page.matches("<svg").count() == 3);

    // A second run, then both on one page.
    let b = scratch("b.json");
    let o = report("box-b", &b, &["--price-per-hour", "0.1"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let merged = scratch("merged.json");
    let o = run_ternlm(&["report", "merge", a.to_str().unwrap(), b.to_str().unwrap(), "-o", merged.to_str().unwrap()], None, &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&merged).unwrap()).unwrap();
    validate(&doc);
    assert_eq!(doc["machines"].as_array().unwrap().len(), 2);
    assert_eq!(doc["cells"].as_array().unwrap().len(), 4);
    // Not a report: one clear line.
    let o = run_ternlm(&["report", "merge", a.to_str().unwrap(), tiny().to_str().unwrap()], None, &[]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("is not"), "{}", text(&o.stderr));
}

#[test]
fn bad_report_flags_fail_before_measuring() {
    for args in [&["report", "-r", "0"][..], &["report", "--utilization", "2"], &["report", "--watts", "-3"], &["report", "--quality", "/nonexistent/text.txt"]] {
        let o = run_ternlm(args, None, &[]);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(!text(&o.stderr).contains("probing"), "{args:?} started measuring: {}", text(&o.stderr));
    }
}
