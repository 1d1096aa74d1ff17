//! Helpers the CLI test files share: scratch folders, running the binary, and the shape of
//! a clean failure.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A path named `name` inside a fresh folder of its own.
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs `ternlm args`, feeding `stdin` if given, with extra environment variables.
pub fn run_ternlm(args: &[&str], stdin: Option<&str>, env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ternlm"));
    cmd.args(args).stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("ternlm runs");
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a clean failure (non-zero exit, exactly one `ternlm: error:` line, no panic or
/// backtrace) and returns that line for the caller's checks of what it names.
pub fn clean_failure(o: &Output) -> String {
    let err = text(&o.stderr);
    assert!(!o.status.success(), "expected failure, stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line expected, got: {err}");
    assert!(err.starts_with("ternlm: error: "), "{err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace") && !err.contains("internal error"), "{err}");
    err
}
