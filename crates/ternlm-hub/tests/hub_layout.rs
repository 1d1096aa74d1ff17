//! `pull` against a real HTTP server on 127.0.0.1 that serves the Hugging Face Hub's URL
//! layout: `/api/models/ORG/REPO/revision/REV?blobs=true` lists files with sizes and hashes,
//! `/ORG/REPO/resolve/COMMIT/FILE` redirects to a CDN path that honours `Range`. Covered: a
//! whole-repository pull with redirects, a connection dropped mid-file that must resume
//! with a Range request, a corrupted file that must be rejected and not cached, a gated
//! repository that needs `HF_TOKEN`, offline mode, one-file references, and a file damaged
//! after the pull (refused, named by `verify`, fetched again by `pull`).
//!
//! Everything runs in one test because the hub client reads its settings (`HF_ENDPOINT`,
//! `HF_TOKEN`, `TERNLM_HOME`) from the environment, which tests in one process share.

use ternlm_hub::entries::verify;
use ternlm_hub::fake_hub::{FakeFile, FakeHub, FakeRepo};
use ternlm_hub::hf::{HfRef, MANIFEST, cached_path, pull};

fn data(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32).map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8).collect()
}

#[test]
fn pull_follows_the_hub_layout_resumes_and_verifies() {
    let home = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("hub-home-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let weights = data(3 << 20, 1);
    let shard2 = data(1 << 20, 2);
    let good = data(100_000, 3);
    let mut bad = good.clone();
    bad[5000] ^= 1;
    let repo = |name: &str, commit: &str, files: Vec<FakeFile>, token: Option<&str>| FakeRepo { name: name.into(), commit: commit.into(), files, token: token.map(String::from) };
    let corrupt = FakeFile { served: bad, ..FakeFile::new("model.gguf", good.clone()) };
    let repos = vec![
        repo(
            "org/tiny",
            "c0ffee0000000000000000000000000000000001",
            vec![
                FakeFile::new("config.json", b"{\"architectures\":[\"LlamaForCausalLM\"]}".to_vec()),
                FakeFile::new("tokenizer.json", b"{}".to_vec()),
                FakeFile::new("model-00001-of-00002.safetensors", weights.clone()),
                FakeFile::new("model-00002-of-00002.safetensors", shard2.clone()),
                FakeFile::new("README.md", b"# not needed".to_vec()),
                FakeFile::new("model.gguf", good.clone()),
            ],
            None,
        ),
        repo("org/corrupt", "badbad0000000000000000000000000000000002", vec![corrupt, FakeFile::new("config.json", b"{}".to_vec())], None),
        repo("org/gated", "5ec4e70000000000000000000000000000000003", vec![FakeFile::new("model.gguf", good.clone())], Some("s3cret")),
    ];
    let hub = FakeHub::start(repos, vec!["model-00001-of-00002.safetensors".into()]).unwrap();
    let base = hub.url.clone();
    // SAFETY: this is the only test in this binary, so nothing reads the environment
    // concurrently.
    unsafe {
        std::env::set_var("HF_ENDPOINT", &base);
        std::env::set_var("TERNLM_HOME", &home);
        std::env::remove_var("HF_TOKEN");
        std::env::remove_var("TERNLM_OFFLINE");
        std::env::remove_var("HF_HUB_OFFLINE");
    }

    // 1. A whole repository: the files ternlm needs, through redirects, one of them cut off
    //    halfway and resumed with a Range request.
    let r = HfRef::parse("hf:org/tiny").unwrap();
    let dir = pull(&r, false).unwrap();
    assert_eq!(std::fs::read(dir.join("model-00001-of-00002.safetensors")).unwrap(), weights);
    assert_eq!(std::fs::read(dir.join("model-00002-of-00002.safetensors")).unwrap(), shard2);
    assert!(dir.join("config.json").is_file() && dir.join("tokenizer.json").is_file() && dir.join(MANIFEST).is_file());
    assert!(!dir.join("README.md").exists() && !dir.join("model.gguf").exists(), "only what a checkpoint needs is pulled");
    let reqs = hub.requests();
    let cdn: Vec<&(String, Option<String>)> = reqs.iter().filter(|(p, _)| p.ends_with("/cdn/org/tiny/model-00001-of-00002.safetensors")).collect();
    assert_eq!(cdn.len(), 2, "one cut-off request and one resumed: {cdn:?}");
    let half = weights.len() / 2;
    assert_eq!(cdn[1].1.as_deref(), Some(format!("bytes={half}-").as_str()), "the retry asks for the rest only");
    assert!(!std::fs::read_dir(&dir).unwrap().any(|e| e.unwrap().path().extension().is_some_and(|x| x == "part")));

    // 2. Pulling again fetches nothing new (same commit, files present).
    let before = hub.requests().len();
    pull(&r, false).unwrap();
    let after = hub.requests();
    assert_eq!(after.len(), before + 1, "only the listing is asked for: {:?}", &after[before..]);

    // 3. A part left over from an earlier, interrupted run is resumed, not restarted.
    let one = HfRef::parse("hf:org/tiny:model.gguf").unwrap();
    let one_dir = ternlm_hub::hf::cache_dir(&one).unwrap();
    std::fs::write(one_dir.join("model.gguf.part"), &good[..30_000]).unwrap();
    let got = pull(&one, false).unwrap();
    assert_eq!(got, one_dir.join("model.gguf"));
    assert_eq!(std::fs::read(&got).unwrap(), good);
    let last = hub.requests().last().cloned().unwrap();
    assert_eq!(last.1.as_deref(), Some("bytes=30000-"));

    // 4. A corrupted file is rejected and nothing of it stays in the cache.
    let c = HfRef::parse("hf:org/corrupt:model.gguf").unwrap();
    let e = pull(&c, false).unwrap_err().to_string();
    assert!(e.contains("failed verification") && e.contains("model.gguf"), "{e}");
    let cdir = ternlm_hub::hf::cache_dir(&c).unwrap();
    assert!(!cdir.join("model.gguf").exists() && !cdir.join("model.gguf.part").exists() && !cdir.join(MANIFEST).exists());

    // 5. A gated repository needs HF_TOKEN, sent as a bearer token.
    let g = HfRef::parse("hf:org/gated:model.gguf").unwrap();
    let e = pull(&g, false).unwrap_err().to_string();
    assert!(e.contains("HF_TOKEN"), "{e}");
    unsafe { std::env::set_var("HF_TOKEN", "s3cret") };
    assert_eq!(std::fs::read(pull(&g, false).unwrap()).unwrap(), good);
    unsafe { std::env::remove_var("HF_TOKEN") };

    // 6. Offline: what is cached resolves without a request; what is not is an error.
    unsafe { std::env::set_var("HF_HUB_OFFLINE", "1") };
    let n = hub.requests().len();
    assert_eq!(pull(&r, false).unwrap(), dir);
    assert_eq!(hub.requests().len(), n, "offline mode makes no request");
    let e = pull(&HfRef::parse("hf:org/never").unwrap(), false).unwrap_err().to_string();
    assert!(e.contains("offline"), "{e}");
    unsafe { std::env::remove_var("HF_HUB_OFFLINE") };

    // 7. Unknown repositories and files are named.
    let e = pull(&HfRef::parse("hf:org/tiny:nope.gguf").unwrap(), false).unwrap_err().to_string();
    assert!(e.contains("nope.gguf") && e.contains("model.gguf"), "{e}");
    let e = pull(&HfRef::parse("hf:org/missing").unwrap(), false).unwrap_err().to_string();
    assert!(e.contains("org/missing"), "{e}");

    // 8. A file truncated after the pull: loading it is refused with what to do, `--verify`
    //    names it, and a pull fetches it again (the rest stays).
    let shard = dir.join("model-00002-of-00002.safetensors");
    std::fs::write(&shard, &shard2[..1000]).unwrap();
    let e = cached_path(&r).unwrap_err().to_string();
    assert!(e.contains("is damaged") && e.contains("model-00002-of-00002.safetensors: size 1000 bytes") && e.contains("`ternlm rm hf:org/tiny`"), "{e}");
    let e = verify("hf:org/tiny", false).unwrap_err().to_string();
    assert!(e.contains("model-00002-of-00002.safetensors: size 1000 bytes"), "{e}");
    let n = hub.requests().len();
    pull(&r, false).unwrap();
    assert_eq!(std::fs::read(&shard).unwrap(), shard2);
    assert_eq!(hub.requests().len(), n + 3, "the listing, the redirect and the one file: {:?}", &hub.requests()[n..]);
    let v = verify("hf:org/tiny", false).unwrap();
    // Configs, tokenizer, two shards, and the GGUF that step 3 pulled into the same folder.
    assert_eq!((v.name.as_str(), v.files), ("hf:org/tiny", 5));
}
