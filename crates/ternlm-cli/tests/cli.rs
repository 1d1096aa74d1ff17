//! End-to-end tests of the `ternlm` binary: the README's main command against llama.cpp's
//! recorded text, each subcommand's output contract, and bad input of every kind ending as
//! one clear line on stderr with a non-zero exit (never a panic).

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::{clean_failure, run_ternlm, scratch};

use ternlm_format::gguf::writer::{TensorData, write};
use ternlm_format::{GgufFile, MetadataValue};

fn fixtures() -> PathBuf {
    std::env::var_os("TERNLM_FIXTURES").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"))
}

fn tiny() -> PathBuf {
    fixtures().join("tiny-bitnet-b158/tiny-bitnet-b158-i2_s.gguf")
}

fn ternlm(args: &[&str], stdin: Option<&str>) -> Output {
    run_ternlm(args, stdin, &[])
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// The failure must be exactly one line naming the problem, with no panic or backtrace.
fn assert_clean_failure(o: &Output, needle: &str) {
    let err = clean_failure(o);
    assert!(err.to_lowercase().contains(&needle.to_lowercase()), "stderr should mention {needle:?}: {err}");
}

/// Rewrites the tiny fixture with `edit` applied to its metadata and tensor list.
fn variant(name: &str, edit: impl FnOnce(&mut Vec<(String, MetadataValue)>, &mut Vec<TensorData<'_>>)) -> PathBuf {
    let src = GgufFile::open(tiny()).unwrap();
    let mut md = src.metadata.clone();
    let mut tensors: Vec<TensorData<'_>> = src.tensors.iter().map(|t| TensorData { name: t.name.clone(), dims: t.dims.clone(), ty: t.ty, data: src.data(t) }).collect();
    edit(&mut md, &mut tensors);
    let out = scratch(name);
    write(&out, &md, &tensors).unwrap();
    out
}

fn greedy_case0() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("smollm2/greedy.jsonl")).unwrap();
    serde_json::from_str(text.lines().next().unwrap()).unwrap()
}

#[test]
fn readme_command_prints_exactly_what_llama_cpp_prints() {
    let case = greedy_case0();
    assert_eq!(case["prompt"], "The capital of Germany is");
    let o = ternlm(&["run", "-p", "The capital of Germany is", "-n", "32", "--temperature", "0", "--raw"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(stdout(&o), case["text"].as_str().unwrap());
}

#[test]
fn run_json_reports_tokens_text_and_timings() {
    let t = tiny();
    let o = ternlm(&["run", "-m", t.to_str().unwrap(), "-p", "The capital of France is", "-n", "4", "--temperature", "0", "--raw", "--json"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["prompt_tokens"].as_array().unwrap()[0], 1, "BOS first");
    assert_eq!(v["tokens"].as_array().unwrap().len(), 4);
    assert!(v["text"].is_string());
    assert!(v["timings"]["prompt_tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["timings"]["generation_tokens_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn run_reads_the_prompt_from_stdin_and_seeds_repeat() {
    let t = tiny();
    let args = ["run", "-m", t.to_str().unwrap(), "-n", "6", "--temperature", "1.0", "--seed", "7", "--raw"];
    let a = ternlm(&args, Some("Once upon a time"));
    let b = ternlm(&args, Some("Once upon a time"));
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(!stdout(&a).is_empty());
    assert_eq!(stdout(&a), stdout(&b));
    let verbose = ternlm(&["run", "-m", t.to_str().unwrap(), "-p", "x", "-n", "2", "--verbose", "--raw"], None);
    assert!(String::from_utf8_lossy(&verbose.stderr).contains("tokens/s"));
}

#[test]
fn tokenize_prints_ids_with_and_without_bos() {
    let t = tiny();
    let o = ternlm(&["tokenize", "-m", t.to_str().unwrap(), "--text", "Hello world"], None);
    assert_eq!(stdout(&o).trim(), "1 19556 905", "the tiny model's metadata adds BOS");
    let o = ternlm(&["tokenize", "-m", t.to_str().unwrap(), "--text", "Hello world", "--no-bos", "--json"], None);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["ids"], serde_json::json!([19556, 905]));
    assert_eq!(v["pieces"], serde_json::json!(["Hello", " world"]));
}

#[test]
fn info_describes_the_model() {
    let t = tiny();
    let o = ternlm(&["info", t.to_str().unwrap()], None);
    let s = stdout(&o);
    assert!(o.status.success());
    for want in ["bitnet-25", "I2_S", "F16", "gpt2", "heads:         4 query, 2 kv"] {
        assert!(s.contains(want), "info lacks {want:?}:\n{s}");
    }
    let o = ternlm(&["info", "--json", t.to_str().unwrap()], None);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["tensor_types"]["I2_S"]["count"], 28);
    assert_eq!(v["hyperparameters"]["n_layer"], 4);
}

#[test]
fn chat_keeps_going_through_reset_and_exits() {
    // A model without a template chats in ChatML: see chat_cli.rs.
    let o = ternlm(&["chat", "-n", "6", "--temperature", "0"], Some("What is 2+2?\n/reset\nName a color.\n/exit\n"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(stdout(&o).lines().filter(|l| !l.is_empty()).count(), 2, "two replies: {}", stdout(&o));
}

#[test]
fn unreadable_path_fails_cleanly() {
    assert_clean_failure(&ternlm(&["run", "-m", "/nonexistent/model.gguf", "-p", "x"], None), "/nonexistent/model.gguf");
    assert_clean_failure(&ternlm(&["info", env!("CARGO_MANIFEST_DIR")], None), "folder without config.json");
    assert_clean_failure(&ternlm(&["run", "-m", "no-such-catalog-model", "-p", "x"], None), "no-such-catalog-model");
}

#[test]
fn truncated_file_fails_cleanly() {
    let bytes = std::fs::read(tiny()).unwrap();
    for cut in [10, 1000, bytes.len() / 2, bytes.len() - 1] {
        let p = scratch("truncated.gguf");
        std::fs::write(&p, &bytes[..cut]).unwrap();
        assert_clean_failure(&ternlm(&["run", "-m", p.to_str().unwrap(), "-p", "x"], None), "trunc");
    }
}

#[test]
fn wrong_magic_fails_cleanly() {
    let mut bytes = std::fs::read(tiny()).unwrap();
    bytes[..4].copy_from_slice(b"GGUX");
    let p = scratch("magic.gguf");
    std::fs::write(&p, &bytes).unwrap();
    assert_clean_failure(&ternlm(&["info", p.to_str().unwrap()], None), "not a GGUF file");
    let p = scratch("text.gguf");
    std::fs::write(&p, "hello, I am not a model").unwrap();
    assert_clean_failure(&ternlm(&["run", "-m", p.to_str().unwrap(), "-p", "x"], None), "not a GGUF file");
}

#[test]
fn absurd_counts_and_dims_fail_cleanly() {
    let mut bytes = std::fs::read(tiny()).unwrap();
    bytes[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let p = scratch("count.gguf");
    std::fs::write(&p, &bytes).unwrap();
    assert_clean_failure(&ternlm(&["info", p.to_str().unwrap()], None), "tensor count");

    let p = variant("dims.gguf", |_, t| t[0].dims = vec![1 << 40, 1 << 40]);
    assert_clean_failure(&ternlm(&["run", "-m", p.to_str().unwrap(), "-p", "x"], None), "token_embd.weight");

    let p = variant("heads.gguf", |md, _| {
        for (k, v) in md.iter_mut() {
            if k == "bitnet-25.attention.head_count" {
                *v = MetadataValue::U32(u32::MAX);
            }
        }
    });
    assert_clean_failure(&ternlm(&["run", "-m", p.to_str().unwrap(), "-p", "x"], None), "head_count");
}

#[test]
fn unknown_architecture_fails_cleanly() {
    let p = variant("arch.gguf", |md, _| {
        for (k, v) in md.iter_mut() {
            if k == "general.architecture" {
                *v = MetadataValue::String("mamba".into());
            }
        }
    });
    assert_clean_failure(&ternlm(&["run", "-m", p.to_str().unwrap(), "-p", "x"], None), "unknown architecture \"mamba\"");
}

#[test]
fn missing_or_misshapen_tensor_fails_cleanly() {
    let p = variant("missing.gguf", |_, t| t.retain(|t| t.name != "blk.2.ffn_up.weight"));
    assert_clean_failure(&ternlm(&["run", "-m", p.to_str().unwrap(), "-p", "x"], None), "blk.2.ffn_up.weight");
    let p = variant("shape.gguf", |_, t| {
        let i = t.iter().position(|t| t.name == "blk.1.attn_k.weight").unwrap();
        t[i].dims = vec![128, 256];
    });
    assert_clean_failure(&ternlm(&["run", "-m", p.to_str().unwrap(), "-p", "x"], None), "blk.1.attn_k.weight");
}

#[test]
fn prompt_longer_than_the_context_fails_cleanly() {
    let t = tiny();
    let o = ternlm(&["run", "-m", t.to_str().unwrap(), "-c", "8", "--raw", "-p", "one two three four five six seven eight nine ten"], None);
    assert_clean_failure(&o, "context");
    assert_clean_failure(&ternlm(&["run", "-m", t.to_str().unwrap(), "-p", "x", "--top-p", "7"], None), "--top-p");
}

#[test]
fn bench_json_has_the_contract_fields_and_sane_numbers() {
    let path = tiny();
    let out = ternlm(&["bench", "-m", path.to_str().unwrap(), "-t", "2", "-p", "16", "-n", "8", "-r", "2", "--json"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for (j, test) in lines.iter().zip(["pp16", "tg8"]) {
        assert_eq!(j["test"], test);
        assert_eq!(j["threads"], 2);
        for key in ["model", "isa", "tokens_per_s", "min", "max", "bytes_per_token", "gbps"] {
            assert!(!j[key].is_null(), "{test}: missing {key}");
        }
        let (med, min, max) = (j["tokens_per_s"].as_f64().unwrap(), j["min"].as_f64().unwrap(), j["max"].as_f64().unwrap());
        assert!(min > 0.0 && min <= med && med <= max, "{test}: {min} <= {med} <= {max}");
        assert_eq!(j["samples"].as_array().unwrap().len(), 2);
        assert!(j["bw_ceiling_gbps"].as_f64().unwrap() > 0.0);
    }
    // Generation reads every weight once per token: at least the file's ternary and head bytes.
    assert!(lines[1]["bytes_per_token"].as_u64().unwrap() > 1_000_000);
}

#[test]
fn bench_table_and_weight_options() {
    let path = tiny();
    let out = ternlm(&["bench", "-m", path.to_str().unwrap(), "-p", "8", "-n", "4", "-r", "1", "--no-probe", "--ternary-layout", "1.6", "--int8-head"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = stdout(&out);
    assert!(table.starts_with("| model |") && table.contains("| pp8 |") && table.contains("| tg4 |"), "{table}");
}

#[test]
fn dummy_rejects_unknown_shapes_and_types() {
    let out_path = scratch("x.gguf");
    let o = out_path.to_str().unwrap();
    assert_clean_failure(&ternlm(&["dummy", "--shape", "7b", "-o", o], None), "2b4t");
    assert_clean_failure(&ternlm(&["dummy", "--shape", "2b4t", "--type", "q4_0", "-o", o], None), "tq2_0");
    assert_clean_failure(&ternlm(&["dummy", "--shape", "2b4t", "--head", "q4_k", "-o", o], None), "q6_k");
    assert!(!out_path.exists());
}

#[test]
fn perplexity_of_a_model_on_text() {
    let text = scratch("text.txt");
    std::fs::write(&text, "the quick brown fox jumps over the lazy dog. ".repeat(60)).unwrap();
    let path = tiny();
    let out = ternlm(&["perplexity", "-m", path.to_str().unwrap(), "-f", text.to_str().unwrap(), "-c", "64", "--chunks", "2", "--json"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let ppl = j["perplexity"].as_f64().unwrap();
    assert!(ppl.is_finite() && ppl > 1.0, "{ppl}");
    assert_eq!(j["chunks"], 2);
    assert_eq!(j["tokens_scored"], 2 * 31);
}

/// A SIMD level that fails its first-use self-check is not used: with every SIMD level
/// forced to fail, a command prints one warning line per level it passed over, runs at the
/// scalar level, and prints the same text (every level gives the same bits).
#[test]
fn a_level_failing_its_self_check_is_passed_over_with_one_warning_line_each() {
    let model = tiny();
    let args = ["run", "-m", model.to_str().unwrap(), "-p", "the quick brown fox", "-n", "8", "--temperature", "0", "--raw"];
    let plain = ternlm(&args, None);
    assert!(plain.status.success(), "{}", common::text(&plain.stderr));
    assert!(!common::text(&plain.stderr).contains("disagree"), "{}", common::text(&plain.stderr));
    let forced = run_ternlm(&args, None, &[("TERNLM_SELF_CHECK_FAIL", std::path::Path::new("amx,avx512,avx2"))]);
    assert!(forced.status.success(), "{}", common::text(&forced.stderr));
    assert_eq!(stdout(&forced), stdout(&plain));
    let err = common::text(&forced.stderr);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("kernels disagree with the scalar ones on this CPU")).collect();
    let simd_levels = match ternlm::machine::best_isa_name() {
        "amx" => 3,
        "avx512" => 2,
        "avx2" => 1,
        _ => 0,
    };
    assert_eq!(warnings.len(), simd_levels, "{err}");
    for w in &warnings {
        assert!(w.starts_with("ternlm: warning: the ") && w.contains("(activation quantization); using "), "{w}");
    }
    if simd_levels > 0 {
        assert!(warnings.last().unwrap().ends_with("using scalar instead"), "{err}");
    }
    // bench names the level the kernels ran at.
    let o = run_ternlm(
        &["bench", "-m", model.to_str().unwrap(), "-p", "0", "-n", "4", "-r", "1", "--no-probe", "--json", "-t", "1", "--device", "cpu"],
        None,
        &[("TERNLM_SELF_CHECK_FAIL", std::path::Path::new("amx,avx512,avx2"))],
    );
    assert!(o.status.success(), "{}", common::text(&o.stderr));
    let line: serde_json::Value = serde_json::from_str(stdout(&o).lines().next().unwrap()).unwrap();
    assert_eq!(line["isa"], "scalar");
    assert_eq!(line["kernels"], serde_json::json!({"ternary": "scalar", "f16": "scalar"}));
}
