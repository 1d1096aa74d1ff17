//! `pull` against a real HTTP server on 127.0.0.1 that serves the Hugging Face Hub's URL
//! layout: `/api/models/ORG/REPO/revision/REV?blobs=true` lists files with sizes and hashes,
//! `/ORG/REPO/resolve/COMMIT/FILE` redirects to a CDN path that honours `Range`. Covered: a
//! whole-repository pull with redirects, a connection dropped mid-file that must resume
//! with a Range request, a corrupted file that must be rejected and not cached, a gated
//! repository that needs `HF_TOKEN`, offline mode, and one-file references.
//!
//! Everything runs in one test because the hub client reads its settings (`HF_ENDPOINT`,
//! `HF_TOKEN`, `TERNLM_HOME`) from the environment, which tests in one process share.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sha1::Sha1;
use sha2::{Digest, Sha256};
use ternlm_hub::hf::{HfRef, MANIFEST, pull};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Repo {
    name: &'static str,
    commit: &'static str,
    /// (path, served bytes, bytes the listing describes, LFS?)
    files: Vec<(String, Vec<u8>, Vec<u8>, bool)>,
    token: Option<&'static str>,
}

#[derive(Default)]
struct Log {
    /// Requests per path, and the Range header of each.
    requests: Vec<(String, Option<String>)>,
}

/// Serves `repos`; `drop_once` names files whose first full response is cut off halfway.
fn serve(repos: Vec<Repo>, drop_once: Vec<String>) -> (String, Arc<Mutex<Log>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let repos = Arc::new(repos);
    let log = Arc::new(Mutex::new(Log::default()));
    let dropped: Arc<Mutex<HashMap<String, bool>>> = Arc::new(Mutex::new(drop_once.into_iter().map(|f| (f, false)).collect()));
    let served = Arc::new(AtomicUsize::new(0));
    let (log2, base2) = (log.clone(), base.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (repos, log, dropped, served, base) = (repos.clone(), log2.clone(), dropped.clone(), served.clone(), base2.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap_or(0);
                let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let mut headers = HashMap::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                let range = headers.get("range").cloned();
                log.lock().unwrap().requests.push((target.clone(), range.clone()));
                served.fetch_add(1, Ordering::Relaxed);
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let send = |stream: &mut std::net::TcpStream, status: &str, extra: &str, body: &[u8]| {
                    let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n", body.len());
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(body);
                };
                let authorized = |repo: &Repo| repo.token.is_none_or(|t| headers.get("authorization").is_some_and(|a| *a == format!("Bearer {t}")));
                for repo in repos.iter() {
                    if let Some(rest) = path.strip_prefix(&format!("/api/models/{}/revision/", repo.name)) {
                        if !authorized(repo) {
                            return send(&mut stream, "401 Unauthorized", "", b"{\"error\":\"gated\"}");
                        }
                        assert_eq!(query, "blobs=true");
                        let _rev = rest;
                        let siblings: Vec<serde_json::Value> = repo
                            .files
                            .iter()
                            .map(|(p, _, listed, lfs)| {
                                let blob = {
                                    let mut h = Sha1::new();
                                    h.update(format!("blob {}\0", listed.len()).as_bytes());
                                    h.update(listed);
                                    hex(&h.finalize())
                                };
                                if *lfs {
                                    serde_json::json!({"rfilename": p, "blobId": "0000", "size": listed.len(), "lfs": {"sha256": hex(&Sha256::digest(listed)), "size": listed.len(), "pointerSize": 134}})
                                } else {
                                    serde_json::json!({"rfilename": p, "blobId": blob, "size": listed.len()})
                                }
                            })
                            .collect();
                        let body = serde_json::json!({"id": repo.name, "sha": repo.commit, "siblings": siblings}).to_string();
                        return send(&mut stream, "200 OK", "Content-Type: application/json\r\n", body.as_bytes());
                    }
                    if let Some(file) = path.strip_prefix(&format!("/{}/resolve/{}/", repo.name, repo.commit)) {
                        if !authorized(repo) {
                            return send(&mut stream, "401 Unauthorized", "", b"");
                        }
                        // Like the hub: LFS files redirect to the CDN, with the hash in headers.
                        let loc = format!("{base}/cdn/{}/{file}", repo.name);
                        return send(&mut stream, "302 Found", &format!("Location: {loc}\r\nX-Repo-Commit: {}\r\n", repo.commit), b"");
                    }
                    if let Some(file) = path.strip_prefix(&format!("/cdn/{}/", repo.name)) {
                        let Some((_, body, _, _)) = repo.files.iter().find(|(p, ..)| p == file) else { break };
                        let start: usize = range.as_deref().and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.trim_end_matches('-').parse().ok()).unwrap_or(0);
                        if start > 0 {
                            let part = &body[start.min(body.len())..];
                            let cr = format!("Content-Range: bytes {start}-{}/{}\r\n", body.len() - 1, body.len());
                            return send(&mut stream, "206 Partial Content", &cr, part);
                        }
                        let mut d = dropped.lock().unwrap();
                        if let Some(done) = d.get_mut(file)
                            && !*done
                        {
                            *done = true;
                            // Promise everything, send half, hang up.
                            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                            let _ = stream.write_all(head.as_bytes());
                            let _ = stream.write_all(&body[..body.len() / 2]);
                            let _ = stream.flush();
                            let _ = stream.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                        return send(&mut stream, "200 OK", "", body);
                    }
                }
                send(&mut stream, "404 Not Found", "", b"");
            });
        }
    });
    (base, log)
}

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
    let repos = vec![
        Repo {
            name: "org/tiny",
            commit: "c0ffee0000000000000000000000000000000001",
            files: vec![
                ("config.json".into(), b"{\"architectures\":[\"LlamaForCausalLM\"]}".to_vec(), b"{\"architectures\":[\"LlamaForCausalLM\"]}".to_vec(), false),
                ("tokenizer.json".into(), b"{}".to_vec(), b"{}".to_vec(), false),
                ("model-00001-of-00002.safetensors".into(), weights.clone(), weights.clone(), true),
                ("model-00002-of-00002.safetensors".into(), shard2.clone(), shard2.clone(), true),
                ("README.md".into(), b"# not needed".to_vec(), b"# not needed".to_vec(), false),
                ("model.gguf".into(), good.clone(), good.clone(), true),
            ],
            token: None,
        },
        Repo { name: "org/corrupt", commit: "badbad0000000000000000000000000000000002", files: vec![("model.gguf".into(), bad, good.clone(), true), ("config.json".into(), b"{}".to_vec(), b"{}".to_vec(), false)], token: None },
        Repo { name: "org/gated", commit: "5ec4e70000000000000000000000000000000003", files: vec![("model.gguf".into(), good.clone(), good.clone(), true)], token: Some("s3cret") },
    ];
    let (base, log) = serve(repos, vec!["model-00001-of-00002.safetensors".into()]);
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
    let reqs = log.lock().unwrap().requests.clone();
    let cdn: Vec<&(String, Option<String>)> = reqs.iter().filter(|(p, _)| p.ends_with("/cdn/org/tiny/model-00001-of-00002.safetensors")).collect();
    assert_eq!(cdn.len(), 2, "one cut-off request and one resumed: {cdn:?}");
    let half = weights.len() / 2;
    assert_eq!(cdn[1].1.as_deref(), Some(format!("bytes={half}-").as_str()), "the retry asks for the rest only");
    assert!(!std::fs::read_dir(&dir).unwrap().any(|e| e.unwrap().path().extension().is_some_and(|x| x == "part")));

    // 2. Pulling again fetches nothing new (same commit, files present).
    let before = log.lock().unwrap().requests.len();
    pull(&r, false).unwrap();
    let after = log.lock().unwrap().requests.clone();
    assert_eq!(after.len(), before + 1, "only the listing is asked for: {:?}", &after[before..]);

    // 3. A part left over from an earlier, interrupted run is resumed, not restarted.
    let one = HfRef::parse("hf:org/tiny:model.gguf").unwrap();
    let one_dir = ternlm_hub::hf::cache_dir(&one).unwrap();
    std::fs::write(one_dir.join("model.gguf.part"), &good[..30_000]).unwrap();
    let got = pull(&one, false).unwrap();
    assert_eq!(got, one_dir.join("model.gguf"));
    assert_eq!(std::fs::read(&got).unwrap(), good);
    let last = log.lock().unwrap().requests.last().cloned().unwrap();
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
    let n = log.lock().unwrap().requests.len();
    assert_eq!(pull(&r, false).unwrap(), dir);
    assert_eq!(log.lock().unwrap().requests.len(), n, "offline mode makes no request");
    let e = pull(&HfRef::parse("hf:org/never").unwrap(), false).unwrap_err().to_string();
    assert!(e.contains("offline"), "{e}");
    unsafe { std::env::remove_var("HF_HUB_OFFLINE") };

    // 7. Unknown repositories and files are named.
    let e = pull(&HfRef::parse("hf:org/tiny:nope.gguf").unwrap(), false).unwrap_err().to_string();
    assert!(e.contains("nope.gguf") && e.contains("model.gguf"), "{e}");
    let e = pull(&HfRef::parse("hf:org/missing").unwrap(), false).unwrap_err().to_string();
    assert!(e.contains("org/missing"), "{e}");
}
