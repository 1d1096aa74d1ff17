//! `ternlm pull` (and `pull --verify`), `list` and `rm`: the local model cache. What an entry
//! is called, and whether it is intact, is the hub's to say (`ternlm_hub::entries`), so
//! that `list`, `rm`, `pull --verify` and loading agree.

use std::process::ExitCode;

use anyhow::{Result, bail};
use serde_json::json;
use ternlm_hub::catalog::{CATALOG, HUB_CATALOG};
use ternlm_hub::hf;
use ternlm_hub::{ModelSpec, Progress, cache, entries};

use super::human_bytes;
use crate::cli::{ListArgs, PullArgs, RmArgs};
use crate::out::{note, outln};

pub fn pull(a: PullArgs) -> Result<ExitCode> {
    let progress = if a.quiet { Progress::Quiet } else { Progress::for_stderr() };
    if a.verify {
        // Checks what is cached, whatever its name form, and never downloads.
        let v = entries::verify(&a.name, progress)?;
        let files = if v.files == 1 { "1 file".to_string() } else { format!("{} files", v.files) };
        outln!("{}: ok ({files}, {}, sizes and checksums match the download's record)", v.name, human_bytes(v.bytes))?;
        return Ok(ExitCode::SUCCESS);
    }
    let path = match ModelSpec::parse(Some(&a.name))? {
        ModelSpec::Path(p) => bail!("{} is a local path, not something to pull (catalog: {})", p.display(), ternlm_hub::catalog::names()),
        ModelSpec::Catalog(_) => ternlm_hub::resolve_model(Some(&a.name), progress)?,
        ModelSpec::Hub(r) => {
            if !cache::offline() {
                note!("ternlm: pulling hf:{}@{} from {}", r.repo, r.revision, hf::endpoint());
            }
            hf::pull(&r, progress)?
        }
    };
    let (bytes, _) = entries::disk_usage(&path);
    outln!("{} ({})", path.display(), human_bytes(bytes))?;
    Ok(ExitCode::SUCCESS)
}

pub fn list(a: ListArgs) -> Result<ExitCode> {
    let dir = cache::models_dir()?;
    let rows = entries::list()?;
    if a.json {
        let models: Vec<_> =
            rows.iter().map(|e| json!({"name": e.name, "bytes": e.bytes, "status": e.status.as_str(), "problem": e.problem, "source": e.source, "path": e.path.display().to_string()})).collect();
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
        let w = rows.iter().map(|e| e.name.len()).max().unwrap_or(4).max(4);
        outln!("{:<w$}  {:>10}  {:<10}  SOURCE", "NAME", "SIZE", "STATUS")?;
        for e in &rows {
            outln!("{:<w$}  {:>10}  {:<10}  {}", e.name, human_bytes(e.bytes), e.status.as_str(), e.source)?;
        }
        // The table says which; stderr says why and what to do.
        for err in rows.iter().filter_map(|e| e.damage_error()) {
            note!("ternlm: {err}");
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
    // The same names `list` shows (and catalog names and aliases, and `hf:` references).
    let path = dir.join(entries::folder_for(&a.name)?);
    if !path.is_dir() {
        bail!("{} is not in the cache {} (see ternlm list)", a.name, dir.display());
    }
    let (bytes, _) = entries::disk_usage(&path);
    std::fs::remove_dir_all(&path).map_err(|e| anyhow::anyhow!("removing {}: {e}", path.display()))?;
    outln!("removed {} ({})", path.display(), human_bytes(bytes))?;
    Ok(ExitCode::SUCCESS)
}
