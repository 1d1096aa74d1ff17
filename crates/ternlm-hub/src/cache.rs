//! The local model cache: `$TERNLM_HOME/models/<catalog name>/<file>`, where `TERNLM_HOME`
//! defaults to `<user cache dir>/ternlm` (`~/.cache/ternlm` on Linux).

use std::path::PathBuf;

use crate::error::{HubError, Result};

pub fn home() -> Result<PathBuf> {
    if let Some(h) = std::env::var_os("TERNLM_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    dirs::cache_dir().map(|d| d.join("ternlm")).ok_or(HubError::NoCacheDir)
}

pub fn models_dir() -> Result<PathBuf> {
    Ok(home()?.join("models"))
}

/// Whether downloads are forbidden (`TERNLM_OFFLINE` or the hub's own `HF_HUB_OFFLINE` set
/// to anything but empty or `0`).
pub fn offline() -> bool {
    ["TERNLM_OFFLINE", "HF_HUB_OFFLINE"].iter().any(|k| std::env::var(k).is_ok_and(|v| !v.is_empty() && v != "0"))
}
