//! `ternlm info --devices`: needs no model, prints a table or (`--json`) a JSON list of
//! devices with the contract fields; an empty list is fine where there is no adapter (CI
//! without lavapipe, or adapters hidden with `TERNLM_GPU=off`). And `--device`: the GPU run
//! prints what the CPU run prints, bad choices fail with one line, `auto` never takes a
//! software rasterizer.

mod common;

use std::path::Path;

use common::{run_ternlm, text};

/// Says loudly that a test ran without a device (stderr directly: the harness captures
/// `eprintln!` and hides it for a passing test).
fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: no adapter ({why})");
}

const FIELDS: [&str; 6] = ["index", "name", "vendor", "backend", "device_type", "memory_bytes"];

fn devices_json(env: &[(&str, &Path)]) -> Vec<serde_json::Value> {
    let o = run_ternlm(&["info", "--devices", "--json"], None, env);
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&o.stdout)));
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}")).clone()
}

#[test]
fn devices_json_is_a_list_with_the_contract_fields() {
    let list = devices_json(&[]);
    if list.is_empty() {
        skipped("the device list is empty; only its shape was checked");
    }
    for (i, d) in list.iter().enumerate() {
        for f in FIELDS {
            assert!(d.get(f).is_some(), "device {i} lacks {f}: {d}");
        }
        assert_eq!(d["index"], i);
        assert!(d["name"].as_str().is_some_and(|s| !s.is_empty()), "{d}");
        assert!(["vulkan", "metal", "dx12", "gl", "other"].contains(&d["backend"].as_str().unwrap_or("")), "{d}");
        assert!(["discrete", "integrated", "virtual", "cpu", "other"].contains(&d["device_type"].as_str().unwrap_or("")), "{d}");
        assert!(d["memory_bytes"].is_null() || d["memory_bytes"].as_u64().is_some(), "{d}");
    }
}

#[test]
fn hidden_devices_are_an_empty_list_and_a_plain_sentence() {
    let off: &[(&str, &Path)] = &[("TERNLM_GPU", Path::new("off"))];
    assert!(devices_json(off).is_empty());
    let o = run_ternlm(&["info", "--devices"], None, off);
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    assert!(text(&o.stdout).starts_with("no GPU devices found"), "{}", text(&o.stdout));
}

#[test]
fn devices_table_has_a_line_per_device() {
    let n = devices_json(&[]).len();
    let o = run_ternlm(&["info", "--devices"], None, &[]);
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    let out = text(&o.stdout);
    if n == 0 {
        skipped("checked the empty-list sentence only");
        assert!(out.starts_with("no GPU devices found"), "{out}");
        return;
    }
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), n + 1, "{out}");
    assert!(lines[0].starts_with("index") && lines[0].contains("backend") && lines[0].contains("memory"), "{out}");
}

fn tiny() -> std::path::PathBuf {
    let fixtures = std::env::var_os("TERNLM_FIXTURES").map(std::path::PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"));
    fixtures.join("tiny-bitnet-b158/tiny-bitnet-b158-i2_s.gguf")
}

fn run_on(device: &str, env: &[(&str, &Path)]) -> std::process::Output {
    let model = tiny();
    run_ternlm(&["run", "-m", model.to_str().unwrap(), "-p", "hello there", "-n", "12", "--temperature", "0", "--device", device], None, env)
}

#[test]
fn run_on_the_gpu_prints_what_the_cpu_prints() {
    if devices_json(&[]).is_empty() {
        return skipped("no device to run on");
    }
    let cpu = run_on("cpu", &[]);
    let gpu = run_on("gpu", &[]);
    assert!(cpu.status.success() && gpu.status.success(), "cpu: {}\ngpu: {}", text(&cpu.stderr), text(&gpu.stderr));
    assert_eq!(text(&gpu.stdout), text(&cpu.stdout));
    assert!(text(&gpu.stderr).contains("ternlm: device: gpu:0"), "the GPU run says where it ran: {}", text(&gpu.stderr));
}

#[test]
fn device_choices_fail_with_one_clear_line() {
    let bogus = run_on("tpu", &[]);
    assert!(!bogus.status.success());
    assert!(text(&bogus.stderr).contains("unknown device \"tpu\""), "{}", text(&bogus.stderr));
    let missing = run_on("gpu:99", &[]);
    assert!(!missing.status.success());
    let err = text(&missing.stderr);
    assert!(err.contains("no GPU adapter with index 99") || err.contains("no GPU adapter found"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // With adapters hidden, gpu is an error and auto is the CPU, quietly.
    let off = Path::new("off");
    let hidden = run_on("gpu", &[("TERNLM_GPU", off)]);
    assert!(!hidden.status.success());
    assert!(text(&hidden.stderr).contains("no GPU adapter found"), "{}", text(&hidden.stderr));
    let auto = run_on("auto", &[("TERNLM_GPU", off)]);
    assert!(auto.status.success(), "{}", text(&auto.stderr));
    assert_eq!(text(&auto.stdout), text(&run_on("cpu", &[]).stdout));
}

#[test]
fn auto_never_picks_a_software_rasterizer() {
    let auto = run_on("auto", &[]);
    assert!(auto.status.success(), "{}", text(&auto.stderr));
    let err = text(&auto.stderr);
    for soft in ["llvmpipe", "lavapipe", "SwiftShader", "WARP"] {
        assert!(!err.contains(&format!("device: gpu:0 {soft}")), "auto took a software adapter: {err}");
    }
}

/// Scores of `perplexity --json` over a short text.
fn perplexity(device: &str, env: &[(&str, &Path)]) -> f64 {
    let file = common::scratch("text.txt");
    std::fs::write(&file, "The quick brown fox jumps over the lazy dog. ".repeat(30)).unwrap();
    let model = tiny();
    let o = run_ternlm(&["perplexity", "-m", model.to_str().unwrap(), "-f", file.to_str().unwrap(), "-c", "64", "--chunks", "2", "--json", "--device", device], None, env);
    assert!(o.status.success(), "{device}: {}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&o.stdout)));
    v["perplexity"].as_f64().unwrap_or_else(|| panic!("no perplexity: {v}"))
}

/// With bindings limited to 256 KiB the weight matrices, caches and logits are split
/// into many buffers; the answers stay the CPU's.
#[test]
fn small_bindings_split_and_agree() {
    if devices_json(&[]).is_empty() {
        return skipped("no device to run on");
    }
    let limit = Path::new("262144");
    let cpu = perplexity("cpu", &[]);
    let gpu = perplexity("gpu", &[("TERNLM_GPU_MAX_BINDING", limit)]);
    assert!(((gpu.ln() - cpu.ln()) / cpu.ln()).abs() < 1e-3, "log-perplexity: gpu {} cpu {}", gpu.ln(), cpu.ln());
    let split = run_on("gpu", &[("TERNLM_GPU_MAX_BINDING", limit)]);
    assert!(split.status.success(), "{}", text(&split.stderr));
    assert_eq!(text(&split.stdout), text(&run_on("cpu", &[]).stdout));
}
