//! Resolving `--model` and loading it: shared by every subcommand that needs a model.

use anyhow::{Context, Result};
use ternlm::{LoadOptions, Model};

use crate::cli::ModelArgs;

/// The local path `--model` names, fetching the default or a catalog model when needed (bars
/// on a terminal, plain lines in a log).
pub fn model_path(arg: Option<&str>) -> Result<std::path::PathBuf> {
    Ok(ternlm_hub::resolve_model(arg, ternlm_hub::Progress::for_stderr())?)
}

pub fn load_model(args: &ModelArgs) -> Result<Model> {
    let path = model_path(args.model.as_deref())?;
    let threads = match args.threads {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(t) => t,
        None => ternlm::default_threads(),
    };
    Model::load(&path, &LoadOptions { threads, ternary_layout: args.weights.ternary_layout.into(), int8_head: args.weights.int8_head }).with_context(|| format!("loading {}", path.display()))
}

/// The context size: `--ctx-size` or the model's default.
pub fn ctx_size(args: &ModelArgs, model: &Model) -> Result<usize> {
    match args.ctx_size {
        Some(0) => anyhow::bail!("--ctx-size must be at least 1"),
        Some(c) => Ok(c),
        None => Ok(model.default_ctx()),
    }
}
