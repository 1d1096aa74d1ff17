//! `--speculate`, `--draft-model` and `--draft-max` as a user meets them: run gives the same
//! text with every mode, reports its drafts in --json, refuses a draft mode without a draft
//! model and a draft model with another vocabulary in one clear line, and bench prints the
//! verification curve and the side-by-side table.

mod common;

use std::path::PathBuf;

use common::{clean_failure, run_ternlm, scratch};

fn fixtures() -> PathBuf {
    std::env::var_os("TERNLM_FIXTURES").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"))
}

fn tiny(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

fn run_json(extra: &[&str]) -> serde_json::Value {
    let model = tiny("tiny-bitnet-b158/tiny-bitnet-b158-i2_s.gguf");
    let mut args = vec!["run", "-m", &model, "--raw", "--json", "--temperature", "0", "-n", "24", "-p", "one two three one two three one two"];
    args.extend(extra);
    let o = run_ternlm(&args, None, &[]);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("run --json prints one JSON object")
}

#[test]
fn every_mode_prints_the_same_text_and_reports_its_drafts() {
    let plain = run_json(&["--speculate", "off"]);
    assert_eq!(plain["timings"]["draft_proposed"], 0);
    assert_eq!(plain["timings"]["speculate"], "off");
    let lookup = run_json(&["--speculate", "lookup", "--draft-min", "4", "--draft-max", "4"]);
    let draft_path = tiny("tiny-bitnet/tiny-bitnet-tq2_0.gguf");
    let draft = run_json(&["-md", &draft_path, "--draft-max", "3", "--draft-min", "3"]);
    for (name, v) in [("lookup", &lookup), ("draft", &draft)] {
        assert_eq!(v["tokens"], plain["tokens"], "{name}: tokens");
        assert_eq!(v["text"], plain["text"], "{name}: text");
        assert_eq!(v["timings"]["speculate"], name);
        let (p, a) = (v["timings"]["draft_proposed"].as_u64().unwrap(), v["timings"]["draft_accepted"].as_u64().unwrap());
        assert!(p > 0 && a <= p, "{name}: {a} of {p} drafts accepted");
    }
}

#[test]
fn impossible_speculation_is_one_clear_line() {
    let model = tiny("tiny-bitnet-b158/tiny-bitnet-b158-i2_s.gguf");
    let o = run_ternlm(&["run", "-m", &model, "--speculate", "draft", "-p", "hi"], None, &[]);
    assert!(clean_failure(&o).contains("--draft-model"), "{}", clean_failure(&o));
    // A value clap rejects gets clap's usual usage error.
    let o = run_ternlm(&["run", "-m", &model, "--speculate", "sideways", "-p", "hi"], None, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("sideways") && err.contains("off, lookup or draft") && !err.contains("panicked"), "{err}");
    let o = run_ternlm(&["run", "-m", &model, "--draft-min", "5", "--draft-max", "2", "-p", "hi"], None, &[]);
    assert!(clean_failure(&o).contains("--draft-min"), "{}", clean_failure(&o));
    // A checkpoint with its own small vocabulary cannot draft for a SmolLM2-vocabulary model.
    let dir = scratch("speculate-other-vocab");
    ternlm::hf::tiny::write_tiny(&dir, ternlm::hf::tiny::TinyKind::BitNetPacked, 5, false).unwrap();
    let o = run_ternlm(&["run", "-m", &model, "--draft-model", &dir.display().to_string(), "-p", "hi"], None, &[]);
    let err = clean_failure(&o);
    assert!(err.contains("draft model") && err.contains("vocabulary"), "{err}");
}

#[test]
fn bench_prints_the_verification_curve_and_the_side_by_side_table() {
    let model = tiny("tiny-bitnet-b158/tiny-bitnet-b158-i2_s.gguf");
    let dir = scratch("speculate-prompts");
    std::fs::create_dir_all(&dir).unwrap();
    let prompts = dir.join("prompts.jsonl");
    std::fs::write(&prompts, "{\"prompt\": \"one two three one two three one two\"}\nplain line prompt\n\n").unwrap();
    let o = run_ternlm(&["bench", "-m", &model, "--speculate", "lookup", "--prompt-file", &prompts.display().to_string(), "-n", "8", "-r", "1", "--json"], None, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON lines")).collect();
    let curve: Vec<u64> = lines.iter().filter(|l| l["test"] == "verify").map(|l| l["positions"].as_u64().unwrap()).collect();
    assert_eq!(curve, [1, 2, 4, 8, 16]);
    let rows: Vec<&serde_json::Value> = lines.iter().filter(|l| l["test"] == "speculate").collect();
    assert_eq!(rows.len(), 3, "two prompts and the total");
    assert!(rows.iter().all(|r| r["same_tokens"] == true && r["mode"] == "lookup"));
    assert_eq!(rows[2]["prompt"], "all");
}
