//! A small HTTP server on 127.0.0.1 with the Hugging Face Hub's URL layout, for testing
//! `pull` without the internet (tests here and in the CLI, and the `fake_hub` example for
//! trying it by hand): `/api/models/ORG/REPO/revision/REV?blobs=true` lists files with
//! sizes and hashes; `/ORG/REPO/resolve/COMMIT/FILE` redirects (302) to
//! `/cdn/ORG/REPO/FILE`, which honours `Range`. It can also misbehave on purpose: cut a
//! file's first response off halfway, serve bytes that do not match the listed hash, or
//! demand a bearer token.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::pypi::hex;

/// One file of a served repository.
#[derive(Clone, Debug)]
pub struct FakeFile {
    pub path: String,
    /// What the CDN sends.
    pub served: Vec<u8>,
    /// What the listing's size and hash describe (differs from `served` to simulate
    /// corruption).
    pub listed: Vec<u8>,
    /// Listed with an LFS sha256 (weights) rather than a git blob id (small files).
    pub lfs: bool,
}

impl FakeFile {
    pub fn new(path: &str, bytes: Vec<u8>) -> Self {
        let lfs = path.ends_with(".safetensors") || path.ends_with(".gguf") || bytes.len() > 10 << 20;
        Self { path: path.to_string(), listed: bytes.clone(), served: bytes, lfs }
    }
}

#[derive(Clone, Debug)]
pub struct FakeRepo {
    /// `ORG/NAME`.
    pub name: String,
    pub commit: String,
    pub files: Vec<FakeFile>,
    /// A token the client must send as `Authorization: Bearer ...` (a gated repository).
    pub token: Option<String>,
}

/// Requests as they arrived: path (with query) and `Range` header.
type RequestLog = Mutex<Vec<(String, Option<String>)>>;

/// A running server; it stops with the process.
pub struct FakeHub {
    pub url: String,
    log: Arc<RequestLog>,
}

fn git_blob_id(bytes: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex(&h.finalize())
}

fn send(stream: &mut TcpStream, status: &str, extra: &str, body: &[u8]) {
    let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n", body.len());
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

impl FakeHub {
    /// Serves `repos` on a free port. Each path in `drop_once` (a file path inside a
    /// repository) has its first whole-file response cut off after half its bytes.
    pub fn start(repos: Vec<FakeRepo>, drop_once: Vec<String>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let log: Arc<RequestLog> = Arc::default();
        let state = Arc::new((repos, Mutex::new(drop_once), url.clone(), log.clone()));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let state = state.clone();
                std::thread::spawn(move || {
                    let (repos, drops, url, log) = &*state;
                    handle(stream, repos, drops, url, log);
                });
            }
        });
        Ok(Self { url, log })
    }

    /// Every request so far: path (with query) and its `Range` header.
    pub fn requests(&self) -> Vec<(String, Option<String>)> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

fn handle(mut stream: TcpStream, repos: &[FakeRepo], drops: &Mutex<Vec<String>>, url: &str, log: &RequestLog) {
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
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
    if let Ok(mut l) = log.lock() {
        l.push((target.clone(), range.clone()));
    }
    let path = target.split_once('?').map_or(target.as_str(), |(p, _)| p);
    let authorized = |repo: &FakeRepo| repo.token.as_ref().is_none_or(|t| headers.get("authorization").is_some_and(|a| *a == format!("Bearer {t}")));
    for repo in repos {
        if path.starts_with(&format!("/api/models/{}/revision/", repo.name)) {
            if !authorized(repo) {
                return send(&mut stream, "401 Unauthorized", "", b"{\"error\":\"gated repository\"}");
            }
            let siblings: Vec<serde_json::Value> = repo
                .files
                .iter()
                .map(|f| {
                    if f.lfs {
                        serde_json::json!({"rfilename": f.path, "blobId": git_blob_id(&f.listed[..f.listed.len().min(64)]), "size": f.listed.len(),
                                           "lfs": {"sha256": hex(&Sha256::digest(&f.listed)), "size": f.listed.len(), "pointerSize": 134}})
                    } else {
                        serde_json::json!({"rfilename": f.path, "blobId": git_blob_id(&f.listed), "size": f.listed.len()})
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
            let loc = format!("{url}/cdn/{}/{file}", repo.name);
            return send(&mut stream, "302 Found", &format!("Location: {loc}\r\nX-Repo-Commit: {}\r\n", repo.commit), b"");
        }
        if let Some(file) = path.strip_prefix(&format!("/cdn/{}/", repo.name)) {
            // Same host as the API, so a gated repository's files still want the token
            // (as the hub's own resolve cache does).
            if !authorized(repo) {
                return send(&mut stream, "401 Unauthorized", "", b"");
            }
            let Some(f) = repo.files.iter().find(|f| f.path == file) else { break };
            let body = &f.served;
            let start: usize = range.as_deref().and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.trim_end_matches('-').parse().ok()).unwrap_or(0);
            if start > 0 && start < body.len() {
                let cr = format!("Content-Range: bytes {start}-{}/{}\r\n", body.len() - 1, body.len());
                return send(&mut stream, "206 Partial Content", &cr, &body[start..]);
            }
            let drop_now = drops.lock().is_ok_and(|mut d| match d.iter().position(|x| x == file) {
                Some(i) => {
                    d.remove(i);
                    true
                }
                None => false,
            });
            if drop_now {
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
}
