//! The local model cache: `$TERNLM_HOME/models/<catalog name>/<file>`, where `TERNLM_HOME`
//! defaults to `<user cache dir>/ternlm` (`~/.cache/ternlm` on Linux).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Set by [`set_offline`] (a front end's `--offline` flag).
static OFFLINE: AtomicBool = AtomicBool::new(false);

/// Forbids downloads for the rest of the process, as `--offline` asks.
pub fn set_offline() {
    OFFLINE.store(true, Ordering::Relaxed);
}

/// Whether downloads are forbidden ([`set_offline`], or `TERNLM_OFFLINE` or the hub's own
/// `HF_HUB_OFFLINE` set to anything but empty or `0`).
pub fn offline() -> bool {
    OFFLINE.load(Ordering::Relaxed) || ["TERNLM_OFFLINE", "HF_HUB_OFFLINE"].iter().any(|k| std::env::var(k).is_ok_and(|v| !v.is_empty() && v != "0"))
}
