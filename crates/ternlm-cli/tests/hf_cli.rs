//! The Hugging Face side of the `ternlm` binary on tiny generated checkpoints: `run` on a
//! checkpoint folder and on the file `convert` made from it print the same greedy text;
//! `info` reads folders; `list` and `rm` manage the cache; and broken checkpoints (unknown
//! architecture, missing shard, wrong shape or dtype, truncated safetensors header) end as
//! one clear line naming the file and tensor.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{clean_failure, run_ternlm, scratch, text};

use safetensors::tensor::TensorView;
use ternlm::hf::tiny::{TinyKind, write_tiny};

fn tiny(kind: TinyKind, shards: bool) -> PathBuf {
    let dir = scratch(kind.name());
    write_tiny(&dir, kind, 11, shards).unwrap();
    dir
}

fn ternlm_env(args: &[&str], env: &[(&str, &Path)]) -> Output {
    run_ternlm(args, None, env)
}

fn ternlm(args: &[&str]) -> Output {
    ternlm_env(args, &[])
}

fn assert_clean_failure(o: &Output, needles: &[&str]) {
    let err = clean_failure(o);
    for n in needles {
        assert!(err.contains(n), "stderr should mention {n:?}: {err}");
    }
}

#[test]
fn folder_and_converted_file_generate_the_same_text() {
    for (kind, ty) in [(TinyKind::BitNetPacked, "tq2_0"), (TinyKind::Bitnet1bitLlm, "i2_s"), (TinyKind::LlamaTernary, "i2_s"), (TinyKind::LlamaFloat, "f16")] {
        let dir = tiny(kind, kind == TinyKind::LlamaTernary);
        let out = dir.with_extension("gguf");
        let o = ternlm(&["convert", dir.to_str().unwrap(), "-o", out.to_str().unwrap(), "--type", ty]);
        assert!(o.status.success(), "{}: {}", kind.name(), text(&o.stderr));
        assert!(text(&o.stderr).contains("wrote"), "{}", text(&o.stderr));
        let run = |m: &Path| {
            let o = ternlm(&["run", "-m", m.to_str().unwrap(), "-p", "the cat is on the", "-n", "12", "--temperature", "0", "--raw", "--json"]);
            assert!(o.status.success(), "{}: {}", kind.name(), text(&o.stderr));
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            v["tokens"].clone()
        };
        let (a, b) = (run(&dir), run(&out));
        assert_eq!(a.as_array().map(Vec::len), Some(12), "{}", kind.name());
        assert_eq!(a, b, "{}: folder and converted file disagree", kind.name());
    }
}

#[test]
fn info_and_tokenize_read_a_checkpoint_folder() {
    let dir = tiny(TinyKind::BitNetPacked, false);
    let o = ternlm(&["info", dir.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["architecture"], "bitnet-25", "{v}");
    let o = ternlm(&["tokenize", "-m", dir.to_str().unwrap(), "--text", "the cat", "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // BOS (LLaMA-3 style), then the merged word, then bytes for what the tiny vocabulary lacks.
    assert_eq!(v["pieces"], serde_json::json!(["", "the", " ", "c", "a", "t"]), "{v}");
}

#[test]
fn convert_rejects_bad_types() {
    let dir = tiny(TinyKind::LlamaFloat, false);
    let out = dir.with_extension("gguf");
    let o = ternlm(&["convert", dir.to_str().unwrap(), "-o", out.to_str().unwrap(), "--type", "tq2_0"]);
    assert_clean_failure(&o, &["ternary checkpoint"]);
    assert!(!out.exists());
    let o = ternlm(&["convert", dir.to_str().unwrap(), "-o", out.to_str().unwrap(), "--head", "q4_0"]);
    assert_clean_failure(&o, &["--head"]);
}

fn run_on(dir: &Path) -> Output {
    ternlm(&["run", "-m", dir.to_str().unwrap(), "-p", "hi", "-n", "2", "--raw"])
}

/// Rewrites `model.safetensors` with `edit` applied to its tensors.
fn edit_tensors(dir: &Path, edit: impl FnOnce(&mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st.iter().map(|(n, v)| (n.to_string(), v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView<'_>)> = tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn broken_checkpoints_fail_cleanly_naming_file_and_tensor() {
    // Unknown architecture.
    let dir = tiny(TinyKind::LlamaFloat, false);
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap().replace("LlamaForCausalLM", "MambaForCausalLM");
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    assert_clean_failure(&run_on(&dir), &["MambaForCausalLM", "config.json"]);

    // A shard the index lists is missing.
    let dir = tiny(TinyKind::BitNetPacked, true);
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    assert_clean_failure(&run_on(&dir), &["model-00002-of-00002.safetensors", "missing"]);

    // A tensor of the wrong shape.
    let dir = tiny(TinyKind::LlamaFloat, false);
    edit_tensors(&dir, |t| {
        let e = t.iter_mut().find(|e| e.0 == "model.layers.1.mlp.up_proj.weight").unwrap();
        e.2 = vec![e.2[1], e.2[0]];
    });
    assert_clean_failure(&run_on(&dir), &["model.layers.1.mlp.up_proj.weight", "model.safetensors", "shape"]);

    // A tensor of the wrong dtype.
    let dir = tiny(TinyKind::LlamaFloat, false);
    edit_tensors(&dir, |t| {
        let e = t.iter_mut().find(|e| e.0 == "model.norm.weight").unwrap();
        e.1 = safetensors::Dtype::I16;
    });
    assert_clean_failure(&run_on(&dir), &["model.norm.weight", "dtype"]);

    // A packed ternary weight without its scale.
    let dir = tiny(TinyKind::BitNetPacked, false);
    edit_tensors(&dir, |t| t.retain(|e| e.0 != "model.layers.0.self_attn.k_proj.weight_scale"));
    assert_clean_failure(&run_on(&dir), &["model.layers.0.self_attn.k_proj.weight", "weight_scale"]);

    // A truncated safetensors header.
    let dir = tiny(TinyKind::LlamaFloat, false);
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..100]).unwrap();
    assert_clean_failure(&run_on(&dir), &["model.safetensors", "not a valid safetensors file"]);

    // A missing tokenizer.
    let dir = tiny(TinyKind::LlamaFloat, false);
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    assert_clean_failure(&run_on(&dir), &["tokenizer.json", "missing"]);
}

#[test]
fn list_and_rm_manage_the_cache() {
    let home = scratch("home");
    let model = home.join("models/hf--org--tiny");
    write_tiny(&model, TinyKind::LlamaFloat, 3, false).unwrap();
    std::fs::write(
        model.join(".ternlm-manifest.json"),
        r#"{"repo":"org/tiny","revision":"main","commit":"0123456789abcdef","files":[{"path":"config.json","size":null,"sha256":null,"blob_id":null}]}"#,
    )
    .unwrap();
    let env = [("TERNLM_HOME", home.as_path())];
    let o = ternlm_env(&["list"], &env);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    // Listed by its hf: name (what rm takes), not its folder's.
    assert!(out.lines().any(|l| l.starts_with("hf:org/tiny ") && l.contains(" ok ")) && out.contains("hf:org/tiny@main") && out.contains("MB"), "{out}");
    assert!(!out.contains("hf--org--tiny"), "{out}");
    let o = ternlm_env(&["list", "--json", "--catalog"], &env);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["models"][0]["bytes"].as_u64().unwrap() > 100_000, "{v}");
    assert!(v["catalog"].as_array().unwrap().iter().any(|e| e["name"] == "bitnet-2b"), "{v}");

    // A cached hub snapshot runs by its hf: name without asking any server.
    let o = ternlm_env(&["run", "-m", "hf:org/tiny", "-p", "the", "-n", "3", "--temperature", "0", "--raw"], &env);
    assert!(o.status.success(), "{}", text(&o.stderr));

    let o = ternlm_env(&["rm", "hf:org/tiny"], &env);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!model.exists());
    assert_clean_failure(&ternlm_env(&["rm", "hf:org/tiny"], &env), &["not in the cache"]);
    assert_clean_failure(&ternlm_env(&["rm", "../etc"], &env), &["not a name in the cache"]);
}

#[test]
fn pull_resumes_from_a_hub_and_runs_offline() {
    use ternlm_hub::fake_hub::{FakeFile, FakeHub, FakeRepo};
    let src = tiny(TinyKind::LlamaTernary, true);
    let files = std::fs::read_dir(&src).unwrap().map(|e| e.unwrap().path()).map(|p| FakeFile::new(&p.file_name().unwrap().to_string_lossy(), std::fs::read(&p).unwrap())).collect();
    let repo = FakeRepo { name: "org/falcon-tiny".into(), commit: "ab".repeat(20), files, token: None };
    let hub = FakeHub::start(vec![repo], vec!["model-00002-of-00002.safetensors".into()]).unwrap();
    let home = scratch("home");
    let endpoint = PathBuf::from(&hub.url);
    let env = [("TERNLM_HOME", home.as_path()), ("HF_ENDPOINT", endpoint.as_path())];

    let o = ternlm_env(&["pull", "hf:org/falcon-tiny"], &env);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("model-00002-of-00002.safetensors interrupted") && err.contains("resuming at byte"), "{err}");
    let dir = home.join("models/hf--org--falcon-tiny");
    assert!(text(&o.stdout).starts_with(&dir.display().to_string()), "{}", text(&o.stdout));
    let resumed = hub.requests().iter().filter(|(p, r)| p.starts_with("/cdn/") && p.ends_with("model-00002-of-00002.safetensors") && r.is_some()).count();
    assert_eq!(resumed, 1, "{:?}", hub.requests());

    // Offline, the cached snapshot runs and gives the folder's own tokens.
    let offline = PathBuf::from("1");
    let env_off = [env[0], env[1], ("HF_HUB_OFFLINE", offline.as_path())];
    let args = |m: &str| -> Vec<String> { ["run", "-m", m, "-p", "the cat", "-n", "6", "--temperature", "0", "--raw"].iter().map(|s| s.to_string()).collect() };
    let a: Vec<String> = args("hf:org/falcon-tiny");
    let o = ternlm_env(&a.iter().map(String::as_str).collect::<Vec<_>>(), &env_off);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let b = args(src.to_str().unwrap());
    let direct = ternlm(&b.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(text(&o.stdout), text(&direct.stdout));
    let o = ternlm_env(&["pull", "--offline", "hf:org/not-cached"], &env);
    assert_clean_failure(&o, &["not cached", "offline"]);
}
