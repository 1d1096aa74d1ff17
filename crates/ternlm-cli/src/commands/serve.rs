//! `ternlm serve`: the OpenAI-compatible server over the loaded model.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use ternlm_serve::{SchedulerConfig, ServeConfig, kv_bytes_per_slot, serve_blocking, slots_within};

use crate::cli::ServeArgs;
use crate::load::{ctx_size, load_model};

pub fn serve(a: ServeArgs) -> Result<ExitCode> {
    if a.parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    if a.max_queue == 0 {
        bail!("--max-queue must be at least 1");
    }
    if a.api_key.as_deref().is_some_and(str::is_empty) {
        bail!("--api-key must not be empty");
    }
    let model = load_model(&a.model)?;
    let n_ctx = ctx_size(&a.model, &model)?;
    let parallel = slots_within(&model, n_ctx, a.parallel, a.kv_budget_mb.map(|m| m * 1_000_000)).map_err(anyhow::Error::msg)?;
    if parallel < a.parallel {
        eprintln!("ternlm: --kv-budget holds {parallel} sequences of {n_ctx} tokens, not {}", a.parallel);
    }
    eprintln!(
        "ternlm: {parallel} sequences of up to {n_ctx} tokens; KV cache up to {:.0} MB (grown as used)",
        (parallel * kv_bytes_per_slot(&model, n_ctx)) as f64 / 1e6
    );
    let name = a.alias.clone().unwrap_or_else(|| {
        let arg = a.model.model.clone().unwrap_or_else(|| ternlm_hub::catalog::DEFAULT_MODEL.to_string());
        let p = std::path::Path::new(&arg);
        if p.exists() { p.file_stem().map_or(arg.clone(), |s| s.to_string_lossy().into_owned()) } else { arg }
    });
    let cfg = ServeConfig {
        host: a.host,
        port: a.port,
        model_name: name,
        api_key: a.api_key,
        scheduler: SchedulerConfig { parallel, n_ctx, max_queue: a.max_queue, prefill_chunk: a.prefill_chunk.max(1), cache_prompt: !a.no_cache_prompt },
        max_body: a.max_body,
        timeout: Duration::from_secs(a.timeout.max(1)),
        grace: Duration::from_secs(10),
    };
    serve_blocking(Arc::new(model), cfg)?;
    Ok(ExitCode::SUCCESS)
}
