//! `ternlm serve` as a process: flags checked before anything loads (zero values, an empty
//! key file, a busy port named by its address), the warning for a public address without a
//! key, the JSON request log, and a clean exit on SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use common::{clean_failure, run_ternlm, scratch};

fn tiny() -> PathBuf {
    std::env::var_os("TERNLM_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"))
        .join("tiny-bitnet-b158/tiny-bitnet-b158-i2_s.gguf")
}

#[test]
fn bad_flags_fail_before_the_model_loads() {
    // The model path does not exist: each failure must be about the flag, not the model.
    for (flag, value) in [("--prefill-chunk", "0"), ("--max-queue", "0"), ("--max-connections", "0"), ("--max-body", "0"), ("--parallel", "0"), ("--temperature", "7")] {
        let o = run_ternlm(&["serve", "-m", "/nonexistent/model.gguf", flag, value], None, &[]);
        let err = clean_failure(&o);
        assert!(err.contains(flag), "{flag} {value}: {err}");
    }
    let keys = scratch("keys.txt");
    std::fs::write(&keys, "# no keys here\n\n").unwrap();
    let o = run_ternlm(&["serve", "-m", "/nonexistent/model.gguf", "--api-key-file", keys.to_str().unwrap()], None, &[]);
    assert!(clean_failure(&o).contains("holds no key"));
}

#[test]
fn a_busy_port_is_named_before_the_model_loads() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let o = run_ternlm(&["serve", "-m", "/nonexistent/model.gguf", "--port", &port], None, &[]);
    let err = clean_failure(&o);
    assert!(err.contains(&format!("127.0.0.1:{port}")) && !err.contains("nonexistent"), "{err}");
    let o = run_ternlm(&["serve", "-m", "/nonexistent/model.gguf", "--host", "no-such-host.invalid"], None, &[]);
    assert!(clean_failure(&o).contains("no-such-host.invalid"));
}

/// A `ternlm serve` on the tiny model with `extra` flags, read up to its address line:
/// the process, its stderr, the port, and everything it printed so far.
fn spawn_serve(extra: &[&str]) -> (Child, BufReader<ChildStderr>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ternlm"))
        .args(["serve", "-m", tiny().to_str().unwrap(), "--port", "0", "-c", "256", "-t", "1"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    let port = loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "the server stopped: {seen}");
        seen.push_str(&line);
        if let Some(at) = line.find(" on http://") {
            let addr = &line[at + 11..];
            break addr.split(':').nth(1).unwrap().split(|c: char| !c.is_ascii_digit()).next().unwrap().to_string();
        }
    };
    (child, err, port, seen)
}

#[test]
fn a_public_address_without_a_key_warns_and_sigterm_exits_cleanly() {
    let (mut child, mut err, port, seen) = spawn_serve(&["--host", "0.0.0.0", "--log-format", "json"]);
    assert!(seen.contains("http://0.0.0.0:"), "{seen}");
    let mut line = String::new();
    assert!(seen.contains("WARNING") && seen.contains("without an API key"), "{seen}");
    let mut s = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    line.clear();
    err.read_line(&mut line).unwrap();
    let log: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!((log["method"].as_str(), log["route"].as_str(), log["status"].as_u64()), (Some("GET"), Some("/health"), Some(200)), "{log}");
    assert!(log["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    let t = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "still running 10 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn a_stderr_nobody_reads_never_stalls_the_server() {
    // stderr is a pipe this test never reads after the address line: once it is full, log
    // lines must be dropped (and counted), not waited for.
    let (mut child, _stderr, port, _) = spawn_serve(&[]);
    let mut s = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let t = Instant::now();
    for i in 0..8000 {
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        // Status line, headers, blank line, then the 15-byte body.
        let mut head = String::new();
        loop {
            let mut l = String::new();
            assert!(r.read_line(&mut l).unwrap_or(0) > 0, "request {i}: the server stopped answering after {:?}", t.elapsed());
            if l == "\r\n" {
                break;
            }
            head.push_str(&l);
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut body = [0u8; 15];
        r.read_exact(&mut body).unwrap();
    }
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut m = String::new();
    r.read_to_string(&mut m).unwrap();
    let dropped: f64 = m.lines().find_map(|l| l.strip_prefix("ternlm_log_lines_dropped_total ")).unwrap().trim().parse().unwrap();
    assert!(dropped > 0.0, "8000 lines into a pipe nobody reads: none dropped?");
    let _ = child.kill();
    let _ = child.wait();
}
