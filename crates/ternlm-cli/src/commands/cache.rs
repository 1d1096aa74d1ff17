//! `ternlm pull`, `list` and `rm`: the local model cache.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, bail};
use serde_json::json;
use ternlm_hub::catalog::{CATALOG, HUB_CATALOG};
use ternlm_hub::hf::{self, HfRef, MANIFEST};
use ternlm_hub::{ModelSpec, cache};

use super::human_bytes;
use crate::cli::{ListArgs, PullArgs, RmArgs};
use crate::out::{note, outln};

/// Bytes under `path`, and whether a download was left unfinished there.
fn usage(path: &Path) -> (u64, bool) {
    let Ok(entries) = std::fs::read_dir(path) else { return (std::fs::metadata(path).map_or(0, |m| m.len()), false) };
    let (mut total, mut partial) = (0, false);
    for e in entries.flatten() {
        let p = e.path();
        partial |= p.extension().is_some_and(|x| x == "part");
        total += if p.is_dir() { usage(&p).0 } else { e.metadata().map_or(0, |m| m.len()) };
    }
    (total, partial)
}

pub fn pull(a: PullArgs) -> Result<ExitCode> {
    let show = !a.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let path = match ModelSpec::parse(Some(&a.name))? {
        ModelSpec::Path(p) => bail!("{} is a local path, not something to pull (catalog: {})", p.display(), ternlm_hub::catalog::names()),
        ModelSpec::Catalog(_) => ternlm_hub::resolve_model(Some(&a.name), show)?,
        ModelSpec::Hub(r) => {
            if !cache::offline() {
                note!("ternlm: pulling hf:{}@{} from {}", r.repo, r.revision, hf::endpoint());
            }
            hf::pull(&r, show)?
        }
    };
    let (bytes, _) = usage(&path);
    outln!("{} ({})", path.display(), human_bytes(bytes))?;
    Ok(ExitCode::SUCCESS)
}

pub fn list(a: ListArgs) -> Result<ExitCode> {
    let dir = cache::models_dir()?;
    let mut rows = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let (bytes, partial) = usage(&p);
            let manifest: Option<hf::Manifest> = std::fs::read_to_string(p.join(MANIFEST)).ok().and_then(|t| serde_json::from_str(&t).ok());
            let source = match &manifest {
                Some(m) => format!("hf:{}@{} ({})", m.repo, m.revision, &m.commit[..m.commit.len().min(10)]),
                None => CATALOG.iter().find(|e| e.name == name).map_or_else(String::new, |e| format!("pypi:{}=={}", e.source.package, e.source.version)),
            };
            let status = if partial {
                "partial"
            } else if name.starts_with("hf--") && manifest.is_none() {
                "incomplete"
            } else {
                "ok"
            };
            rows.push((name, bytes, status, source, p));
        }
    }
    if a.json {
        let models: Vec<_> = rows.iter().map(|(n, b, s, src, p)| json!({"name": n, "bytes": b, "status": s, "source": src, "path": p.display().to_string()})).collect();
        let mut out = json!({"cache": dir.display().to_string(), "models": models});
        if a.catalog {
            out["catalog"] = CATALOG
                .iter()
                .map(|e| json!({"name": e.name, "source": format!("pypi:{}", e.source.package), "description": e.description}))
                .chain(HUB_CATALOG.iter().map(|e| json!({"name": e.name, "source": e.spec, "description": e.description})))
                .collect();
        }
        outln!("{}", serde_json::to_string_pretty(&out)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!("cache: {}", dir.display())?;
    if rows.is_empty() {
        outln!("(empty)")?;
    } else {
        let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(4).max(4);
        outln!("{:<w$}  {:>10}  {:<10}  SOURCE", "NAME", "SIZE", "STATUS")?;
        for (n, b, s, src, _) in &rows {
            outln!("{n:<w$}  {:>10}  {s:<10}  {src}", human_bytes(*b))?;
        }
    }
    if a.catalog {
        outln!("\ncatalog (ternlm pull NAME):")?;
        for e in CATALOG {
            outln!("  {:<18} {}", e.name, e.description)?;
        }
        for e in HUB_CATALOG {
            outln!("  {:<18} {} [{}]", e.name, e.description, e.spec)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn rm(a: RmArgs) -> Result<ExitCode> {
    let dir = cache::models_dir()?;
    let folder = if a.name.starts_with("hf:") {
        HfRef::parse(&a.name)?.cache_name()
    } else if let Some(e) = ternlm_hub::catalog::lookup_hub(&a.name) {
        HfRef::parse(e.spec)?.cache_name()
    } else if let Some(e) = ternlm_hub::catalog::lookup(&a.name) {
        e.name.to_string()
    } else {
        a.name.clone()
    };
    if folder.is_empty() || folder.contains('/') || folder.contains('\\') || folder == "." || folder == ".." {
        bail!("{:?} is not a name in the cache (see ternlm list)", a.name);
    }
    let path = dir.join(&folder);
    if !path.is_dir() {
        bail!("{} is not in the cache {} (see ternlm list)", a.name, dir.display());
    }
    let (bytes, _) = usage(&path);
    std::fs::remove_dir_all(&path).map_err(|e| anyhow::anyhow!("removing {}: {e}", path.display()))?;
    outln!("removed {} ({})", path.display(), human_bytes(bytes))?;
    Ok(ExitCode::SUCCESS)
}
