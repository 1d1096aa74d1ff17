//! Records the git commit ternlm is built from (`TERNLM_COMMIT`), for the report's machine
//! section; a build outside a checkout (or without git) leaves it unset.

use std::path::Path;
use std::process::Command;

fn main() {
    let out = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output();
    if let Ok(o) = out
        && o.status.success()
    {
        println!("cargo:rustc-env=TERNLM_COMMIT={}", String::from_utf8_lossy(&o.stdout).trim());
    }
    // Rebuilt when HEAD moves to another branch or its branch to another commit.
    let git = Path::new("../../.git");
    let head = git.join("HEAD");
    if head.exists() {
        println!("cargo:rerun-if-changed={}", head.display());
        if let Some(r) = std::fs::read_to_string(&head).ok().and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_string())) {
            let reference = git.join(r);
            if reference.exists() {
                println!("cargo:rerun-if-changed={}", reference.display());
            }
        }
    }
}
