//! Downloads from the Hugging Face Hub (or any server with its URL layout, `HF_ENDPOINT`):
//! `hf:ORG/REPO[@REV][:FILE]` is resolved to a commit through
//! `/api/models/ORG/REPO/revision/REV?blobs=true`, which lists every file with its size and
//! its LFS sha256 (or git blob id); each file comes from `/ORG/REPO/resolve/COMMIT/FILE`,
//! following the hub's redirect to its CDN.
//!
//! Downloads resume: bytes land in `FILE.part` and a retry (after a dropped connection, or
//! in a later run) asks for the rest with a `Range` request. A finished file is verified
//! (sha256 for LFS files, the git blob sha1 otherwise) before it is moved into place; a file
//! that fails is deleted, never cached. `HF_TOKEN` is sent as a bearer token for gated repos.
//!
//! Why not the `hf-hub` crate: its blocking client is built on ureq 2, whose default TLS
//! bundles a (webpki) root list that fails behind proxies whose CA is only in the system
//! store; it does not check downloads against the hub's sha256; and ternlm already has one
//! HTTP stack (ureq 3 with the platform verifier) for its package-index downloads.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar};
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::cache::{models_dir, offline};
use crate::entries::{self, FileState};
use crate::error::{HubError, Result, io_err};
use crate::http::agent;
use crate::progress::{DOWNLOAD, Meter, Progress, bar, note, redact, style};
use crate::pypi::hex;

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The hub to talk to: `HF_ENDPOINT`, else huggingface.co.
pub fn endpoint() -> String {
    std::env::var("HF_ENDPOINT").ok().filter(|v| !v.is_empty()).map_or_else(|| DEFAULT_ENDPOINT.to_string(), |v| v.trim_end_matches('/').to_string())
}

fn token() -> Option<String> {
    ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"].iter().find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty())).map(|t| t.trim().to_string())
}

/// `hf:ORG/REPO[@REV][:FILE]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HfRef {
    pub repo: String,
    pub revision: String,
    pub file: Option<String>,
}

impl HfRef {
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |why: &str| HubError::BadSpec(spec.to_string(), why.to_string());
        let rest = spec.strip_prefix("hf:").ok_or_else(|| bad("it does not start with hf:"))?;
        let (repo_rev, file) = match rest.split_once(':') {
            Some((r, f)) if !f.is_empty() => (r, Some(f.to_string())),
            Some(_) => return Err(bad("the file after ':' is empty")),
            None => (rest, None),
        };
        let (repo, revision) = match repo_rev.split_once('@') {
            Some((r, v)) if !v.is_empty() => (r, v.to_string()),
            Some(_) => return Err(bad("the revision after '@' is empty")),
            None => (repo_rev, "main".to_string()),
        };
        let ok = |s: &str| !s.is_empty() && s != "." && s != ".." && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        match repo.split_once('/') {
            Some((org, name)) if ok(org) && ok(name) => {}
            _ => return Err(bad("the repository must be ORG/NAME")),
        }
        if file.as_deref().is_some_and(|f| f.split('/').any(|p| p.is_empty() || p == "..")) {
            return Err(bad("the file path must stay inside the repository"));
        }
        if revision.contains("..") || revision.starts_with('/') {
            return Err(bad("the revision is not a branch, tag or commit"));
        }
        Ok(Self { repo: repo.to_string(), revision, file })
    }

    /// The cache folder's name: `hf--ORG--REPO`, with `@REV` unless the revision is main.
    pub fn cache_name(&self) -> String {
        let base = format!("hf--{}", self.repo.replace('/', "--"));
        if self.revision == "main" { base } else { format!("{base}@{}", self.revision.replace('/', "--")) }
    }
}

/// One file of a repository snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoFile {
    pub path: String,
    pub size: Option<u64>,
    /// LFS files: the sha256 of the content.
    pub sha256: Option<String>,
    /// Other files: the git blob id (sha1 of `blob <len>\0<content>`).
    pub blob_id: Option<String>,
}

impl RepoFile {
    /// The hash to check the file against, and whether it is a git blob id (else a sha256):
    /// the sha256 when there is one.
    pub(crate) fn expected_hash(&self) -> Option<(&str, bool)> {
        match (&self.sha256, &self.blob_id) {
            (Some(s), _) => Some((s.as_str(), false)),
            (None, Some(b)) => Some((b.as_str(), true)),
            (None, None) => None,
        }
    }
}

/// What `pull` wrote beside the files once every one was verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub repo: String,
    pub revision: String,
    pub commit: String,
    pub files: Vec<RepoFile>,
}

pub const MANIFEST: &str = ".ternlm-manifest.json";

/// Where `r` is cached.
pub fn cache_dir(r: &HfRef) -> Result<PathBuf> {
    Ok(models_dir()?.join(r.cache_name()))
}

/// The cached manifest of `r`, if a pull of it finished.
pub fn cached_manifest(r: &HfRef) -> Result<Option<Manifest>> {
    let path = cache_dir(r)?.join(MANIFEST);
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
    Ok(serde_json::from_str(&text).ok())
}

/// The local path of `r` (its one file, or the snapshot folder) when a finished pull left
/// everything it names in the cache; an error when one of those files is no longer what was
/// downloaded (its size differs from the manifest's, or `pull --verify` found it corrupt).
pub fn cached_path(r: &HfRef) -> Result<Option<PathBuf>> {
    let Some(m) = cached_manifest(r)? else { return Ok(None) };
    let dir = cache_dir(r)?;
    let needed: Vec<&RepoFile> = match &r.file {
        Some(f) => m.files.iter().filter(|x| &x.path == f).collect(),
        None => m.files.iter().collect(),
    };
    if needed.is_empty() {
        return Ok(None);
    }
    let (states, damaged) = entries::inspect(&dir, needed, m.files.len() > 1);
    if let Some(reason) = damaged {
        let name = display_name(&m.repo, &m.revision);
        let pull = r.file.as_ref().map_or_else(|| name.clone(), |f| format!("{name}:{f}"));
        return Err(HubError::Damaged { name, pull, reason });
    }
    let complete = states.iter().all(|(_, s)| *s == FileState::Ok);
    Ok(complete.then(|| r.file.as_ref().map_or_else(|| dir.clone(), |f| dir.join(f))))
}

/// How `list` names a pulled repository (and `rm` takes it back): `hf:ORG/REPO`, with
/// `@REV` unless the revision is main.
pub fn display_name(repo: &str, revision: &str) -> String {
    if revision == "main" { format!("hf:{repo}") } else { format!("hf:{repo}@{revision}") }
}

/// Files of a repository ternlm needs to run it: configs, tokenizer and safetensors.
fn wanted(path: &str) -> bool {
    const NAMES: [&str; 7] = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "model.safetensors.index.json"];
    !path.contains('/') && (NAMES.contains(&path) || path.ends_with(".safetensors"))
}

fn http_err(url: &str, reason: impl Into<String>) -> HubError {
    HubError::Http { url: url.to_string(), reason: reason.into() }
}

fn get(url: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
    let req = agent().get(url);
    match token() {
        Some(t) => req.header("Authorization", format!("Bearer {t}")),
        None => req,
    }
}

/// The commit `r.revision` points at and the files it holds.
pub fn list_files(r: &HfRef) -> Result<(String, Vec<RepoFile>)> {
    let url = format!("{}/api/models/{}/revision/{}?blobs=true", endpoint(), r.repo, r.revision);
    let mut resp = get(&url).call().map_err(|e| match e {
        ureq::Error::StatusCode(401 | 403) => http_err(&url, "access denied: the repository is gated or private (set HF_TOKEN)"),
        ureq::Error::StatusCode(404) => http_err(&url, format!("no repository {} or revision {}", r.repo, r.revision)),
        e => http_err(&url, e.to_string()),
    })?;
    let body = resp.body_mut().with_config().limit(64 << 20).read_to_string().map_err(|e| http_err(&url, e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| http_err(&url, format!("the answer is not JSON: {e}")))?;
    let commit = v.get("sha").and_then(|s| s.as_str()).ok_or_else(|| http_err(&url, "the answer has no commit \"sha\""))?.to_string();
    if !commit.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(http_err(&url, format!("commit {commit:?} is not a commit id")));
    }
    let siblings = v.get("siblings").and_then(|s| s.as_array()).ok_or_else(|| http_err(&url, "the answer has no \"siblings\" list"))?;
    let files = siblings
        .iter()
        .filter_map(|s| {
            let path = s.get("rfilename")?.as_str()?.to_string();
            let lfs = s.get("lfs");
            Some(RepoFile {
                path,
                size: lfs.and_then(|l| l.get("size")).or_else(|| s.get("size")).and_then(|x| x.as_u64()),
                sha256: lfs.and_then(|l| l.get("sha256").or_else(|| l.get("oid"))).and_then(|x| x.as_str()).map(str::to_string),
                blob_id: s.get("blobId").and_then(|x| x.as_str()).map(str::to_string),
            })
        })
        .collect();
    Ok((commit, files))
}

/// What one pull shows: on a terminal a bar per file and one overall; in a log the lines of
/// each file; or nothing.
pub(crate) struct Transfers {
    mode: Progress,
    multi: MultiProgress,
    overall: ProgressBar,
}

impl Transfers {
    pub(crate) fn new(total: u64, mode: Progress) -> Self {
        let multi = if mode == Progress::Bars { MultiProgress::new() } else { MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden()) };
        let overall = multi.add(ProgressBar::new(total));
        overall.set_style(style("{msg:>24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"));
        overall.set_message("total");
        Self { mode, multi, overall }
    }

    /// Starts showing the download of `name` from `url`, which already has `have` bytes.
    fn file(&self, name: &str, len: Option<u64>, url: &str, have: u64) -> Meter {
        let short: String = name.chars().rev().take(24).collect::<Vec<_>>().into_iter().rev().collect();
        let bar = bar(self.mode, len, &short, "{msg:>24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}", Some((&self.multi, &self.overall)));
        Meter::new(self.mode, bar, name, DOWNLOAD, len, &redact(url), have)
    }

    /// A line above the bars, or on stderr when there are none: interruptions are news even
    /// in quiet mode.
    fn note(&self, msg: String) {
        if self.mode == Progress::Bars {
            let _ = self.multi.println(msg);
        } else {
            note(&msg);
        }
    }
}

/// Hashes a file as the hub names it: sha256, or git's blob sha1.
pub(crate) fn hash_file(path: &Path, git_blob: bool) -> Result<String> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let len = f.metadata().map_err(io_err(path))?.len();
    let mut buf = vec![0u8; 1 << 20];
    let mut sha256 = Sha256::new();
    let mut sha1 = Sha1::new();
    if git_blob {
        sha1.update(format!("blob {len}\0").as_bytes());
    }
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        if git_blob { sha1.update(&buf[..n]) } else { sha256.update(&buf[..n]) }
    }
    Ok(if git_blob { hex(&sha1.finalize()) } else { hex(&sha256.finalize()) })
}

/// Attempts per file before giving up; each retry resumes where the last one stopped.
const ATTEMPTS: u32 = 6;

/// Downloads one file into `dest` (resuming `dest.part`), verifying it.
pub(crate) fn download_file(r: &HfRef, commit: &str, f: &RepoFile, dest: &Path, transfers: &Transfers) -> Result<()> {
    let url = format!("{}/{}/resolve/{commit}/{}", endpoint(), r.repo, f.path);
    let part = PathBuf::from(format!("{}.part", dest.display()));
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let mut meter = transfers.file(&f.path, f.size, &url, std::fs::metadata(&part).map_or(0, |m| m.len()));
    let mut last_error = String::new();
    for attempt in 0..ATTEMPTS {
        let have = std::fs::metadata(&part).map_or(0, |m| m.len());
        meter.set_position(have);
        if f.size.is_some_and(|s| have >= s) {
            break;
        }
        if attempt > 0 {
            transfers.note(format!("ternlm: {} interrupted ({last_error}); resuming at byte {have}", f.path));
            std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
        }
        let mut req = get(&url);
        if have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::StatusCode(code @ (401 | 403 | 404))) => {
                meter.abandon();
                return Err(http_err(&url, format!("HTTP {code}{}", if code == 404 { "" } else { " (gated or private: set HF_TOKEN)" })));
            }
            Err(e) => {
                last_error = e.to_string();
                continue;
            }
        };
        // 206: the server continues where the part ends; 200: it sends everything again.
        let append = resp.status().as_u16() == 206 && have > 0;
        if !append {
            transfers.overall.dec(have.min(transfers.overall.position()));
            meter.set_position(0);
        }
        let mut out = OpenOptions::new().create(true).write(true).append(append).truncate(!append).open(&part).map_err(io_err(&part))?;
        let mut body = resp.into_body().into_with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; 1 << 20];
        let finished = loop {
            match body.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => {
                    out.write_all(&buf[..n]).map_err(io_err(&part))?;
                    meter.inc(n as u64);
                    transfers.overall.inc(n as u64);
                }
                Err(e) => {
                    last_error = e.to_string();
                    break false;
                }
            }
        };
        out.sync_all().map_err(io_err(&part))?;
        let have = std::fs::metadata(&part).map_or(0, |m| m.len());
        if finished && f.size.is_none_or(|s| have >= s) {
            break;
        }
        if finished {
            last_error = format!("the connection closed after {have} of {} bytes", f.size.unwrap_or(0));
        }
    }
    let have = std::fs::metadata(&part).map_or(0, |m| m.len());
    if let Some(s) = f.size
        && have != s
    {
        meter.abandon();
        if have > s {
            let _ = std::fs::remove_file(&part);
        }
        return Err(http_err(&url, format!("got {have} of {s} bytes after {ATTEMPTS} attempts ({last_error}); run pull again to resume")));
    }
    let Some((want, git)) = f.expected_hash() else {
        meter.abandon();
        let _ = std::fs::remove_file(&part);
        return Err(http_err(&url, "the hub listed no hash for this file, so it cannot be verified"));
    };
    let got = hash_file(&part, git)?;
    if !got.eq_ignore_ascii_case(want) {
        meter.abandon();
        let _ = std::fs::remove_file(&part);
        return Err(HubError::Checksum { what: format!("{} from {}", f.path, r.repo), got, want: want.to_string() });
    }
    std::fs::rename(&part, dest).map_err(io_err(dest))?;
    meter.finish(if git { "git blob id verified" } else { "sha256 verified" });
    Ok(())
}

/// Pulls `r` into the cache (only what is missing, or damaged by a later truncation or a
/// failed `pull --verify`) and returns the local path: the one file when `r` names one,
/// else the snapshot folder.
pub fn pull(r: &HfRef, progress: impl Into<Progress>) -> Result<PathBuf> {
    let dir = cache_dir(r)?;
    if offline() {
        return cached_path(r)?.ok_or_else(|| HubError::Offline(format!("hf:{}", r.repo)));
    }
    let (commit, all) = list_files(r)?;
    let files: Vec<RepoFile> = match &r.file {
        Some(f) => vec![all.iter().find(|x| &x.path == f).cloned().ok_or_else(|| HubError::NotInRepo {
            repo: r.repo.clone(),
            file: f.clone(),
            files: all.iter().map(|x| x.path.clone()).collect::<Vec<_>>().join(", "),
        })?],
        None => {
            let w: Vec<RepoFile> = all.iter().filter(|x| wanted(&x.path)).cloned().collect();
            if !w.iter().any(|x| x.path.ends_with(".safetensors")) {
                let ggufs: Vec<&str> = all.iter().map(|x| x.path.as_str()).filter(|p| p.ends_with(".gguf")).collect();
                return Err(HubError::NotInRepo {
                    repo: r.repo.clone(),
                    file: "*.safetensors".into(),
                    files: if ggufs.is_empty() { "no GGUF either".into() } else { format!("name a GGUF file with hf:{}:FILE ({})", r.repo, ggufs.join(", ")) },
                });
            }
            w
        }
    };
    // A manifest from another commit means the files here may be stale: fetch again. A file
    // of the right commit is fetched again only when a stat (or an earlier `--verify`) shows
    // it is not what was downloaded.
    let previous = cached_manifest(r)?;
    let same_commit = previous.as_ref().is_some_and(|m| m.commit == commit);
    let checks = entries::Checks::load(&dir);
    let todo: Vec<&RepoFile> = files.iter().filter(|f| !(same_commit && entries::file_state(&dir, f, &checks) == FileState::Ok)).collect();
    let total: u64 = todo.iter().filter_map(|f| f.size).sum();
    let transfers = Transfers::new(total, progress.into());
    for f in &todo {
        download_file(r, &commit, f, &dir.join(&f.path), &transfers)?;
    }
    transfers.overall.finish_and_clear();
    let mut kept: Vec<RepoFile> = previous.filter(|_| same_commit).map(|m| m.files).unwrap_or_default();
    for f in files {
        if !kept.iter().any(|k| k.path == f.path) {
            kept.push(f);
        }
    }
    let manifest = Manifest { repo: r.repo.clone(), revision: r.revision.clone(), commit, files: kept };
    let mpath = dir.join(MANIFEST);
    std::fs::write(&mpath, serde_json::to_string_pretty(&manifest).unwrap_or_default()).map_err(io_err(&mpath))?;
    Ok(r.file.as_ref().map_or_else(|| dir.clone(), |f| dir.join(f)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let r = HfRef::parse("hf:microsoft/bitnet-b1.58-2B-4T").unwrap();
        assert_eq!((r.repo.as_str(), r.revision.as_str(), r.file.as_deref()), ("microsoft/bitnet-b1.58-2B-4T", "main", None));
        assert_eq!(r.cache_name(), "hf--microsoft--bitnet-b1.58-2B-4T");
        let r = HfRef::parse("hf:a/b@v1.0:sub/model.gguf").unwrap();
        assert_eq!((r.revision.as_str(), r.file.as_deref()), ("v1.0", Some("sub/model.gguf")));
        assert_eq!(r.cache_name(), "hf--a--b@v1.0");
        for bad in ["hf:", "hf:noslash", "hf:a/b@", "hf:a/b:", "hf:a/../b", "hf:a/b:../x", "hf:a/b/c", "a/b"] {
            assert!(HfRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn git_blob_ids_hash_like_git() {
        let p = std::env::temp_dir().join(format!("ternlm-blob-{}", std::process::id()));
        std::fs::write(&p, b"hello\n").unwrap();
        // `echo hello | git hash-object --stdin`
        assert_eq!(hash_file(&p, true).unwrap(), "ce013625030ba8dba906f756967f9e9ca394464a");
        let _ = std::fs::remove_file(p);
    }
}
