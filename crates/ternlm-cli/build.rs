//! Records the git commit and the build date for `ternlm --version`. Outside a git checkout
//! (a source tarball) the commit is "unknown"; `SOURCE_DATE_EPOCH` fixes the date for
//! reproducible builds.

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let dirty = Command::new("git").args(["status", "--porcelain", "--untracked-files=no"]).output().ok().is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    let secs =
        std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    println!("cargo:rustc-env=TERNLM_GIT_COMMIT={commit}{}", if dirty { "-modified" } else { "" });
    println!("cargo:rustc-env=TERNLM_BUILD_DATE={}", civil_date(secs / 86_400));
    // A new commit changes HEAD (or the branch it points at); rebuild the version then.
    let mut watch = vec!["../../.git/HEAD".to_string(), "../../.git/index".to_string(), "../../.git/packed-refs".to_string()];
    if let Some(r) = std::fs::read_to_string("../../.git/HEAD").ok().and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_string())) {
        watch.push(format!("../../.git/{r}"));
    }
    for f in watch.iter().filter(|f| std::path::Path::new(f).exists()) {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
}

// The date arithmetic is shared with `ternlm report`, which stamps its reports.
include!("src/civil_date.rs");
