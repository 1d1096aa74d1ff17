//! `ternlm serve`: the OpenAI-compatible server over the loaded model.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ternlm_serve::{ApiKeys, CacheScope, LogFormat, SamplingDefaults, SchedulerConfig, ServeConfig, bind, kv_bytes_per_slot, serve_blocking, slots_within};

use crate::cli::{CacheScopeArg, LogFormatArg, ServeArgs};
use crate::load::{ctx_size, load_model_speculating};
use crate::out::note;

/// Seconds as a limit; 0 is no limit.
fn limit(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

fn check(a: &ServeArgs) -> Result<()> {
    for (value, flag) in [(a.parallel, "--parallel"), (a.max_queue, "--max-queue"), (a.prefill_chunk, "--prefill-chunk"), (a.max_connections, "--max-connections"), (a.max_body, "--max-body")] {
        if value == 0 {
            bail!("{flag} must be at least 1");
        }
    }
    if a.api_key.iter().any(|k| k.trim().is_empty()) {
        bail!("--api-key must not be empty");
    }
    if !(a.temperature.is_finite() && (0.0..=2.0).contains(&a.temperature)) {
        bail!("--temperature must be between 0 and 2");
    }
    for (v, flag) in [(a.top_p, "--top-p"), (a.min_p, "--min-p")] {
        if !(0.0..=1.0).contains(&v) {
            bail!("{flag} must be between 0 and 1");
        }
    }
    if !(a.repeat_penalty.is_finite() && a.repeat_penalty > 0.0 && a.repeat_penalty <= 10.0) {
        bail!("--repeat-penalty must be above 0 and at most 10");
    }
    Ok(())
}

pub fn serve(a: ServeArgs) -> Result<ExitCode> {
    check(&a)?;
    let mut keys = a.api_key.clone();
    if let Some(path) = &a.api_key_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the API key file {}", path.display()))?;
        let from_file = ApiKeys::parse_file(&text);
        if from_file.is_empty() {
            bail!("the API key file {} holds no key", path.display());
        }
        keys.extend(from_file);
    }
    // The address first: a busy port or a bad host fails before minutes of model loading.
    let listener = bind(&a.host, a.port)?;
    let (model, speculate) = load_model_speculating(&a.model, &a.speculate)?;
    let n_ctx = ctx_size(&a.model, &model)?;
    let parallel = slots_within(&model, n_ctx, a.parallel, a.kv_budget_mb.map(|m| m * 1_000_000)).map_err(anyhow::Error::msg)?;
    if parallel < a.parallel {
        note!("ternlm: --kv-budget holds {parallel} sequences of {n_ctx} tokens, not {}", a.parallel);
    }
    note!("ternlm: {parallel} sequences of up to {n_ctx} tokens; KV cache up to {:.0} MB (grown as used)", (parallel * kv_bytes_per_slot(&model, n_ctx)) as f64 / 1e6);
    let name = a.alias.clone().unwrap_or_else(|| {
        let arg = a.model.model.clone().unwrap_or_else(|| ternlm_hub::catalog::DEFAULT_MODEL.to_string());
        let p = std::path::Path::new(&arg);
        if p.exists() { p.file_stem().map_or(arg.clone(), |s| s.to_string_lossy().into_owned()) } else { arg }
    });
    let cache_scope = match (a.no_cache_prompt, a.cache_scope) {
        (true, _) | (_, CacheScopeArg::Off) => CacheScope::Off,
        (false, CacheScopeArg::Key) => CacheScope::Key,
        (false, CacheScopeArg::Global) => CacheScope::Global,
    };
    let cfg = ServeConfig {
        model_name: name,
        strict_model: a.strict_model,
        api_keys: ApiKeys::new(keys),
        metrics_public: a.metrics_public,
        cache_scope,
        // The scope decides whether the scheduler keeps prompts at all (AppState::new).
        scheduler: SchedulerConfig { parallel, n_ctx, max_queue: a.max_queue, prefill_chunk: a.prefill_chunk, speculate, ..Default::default() },
        sampling: SamplingDefaults { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, min_p: a.min_p, repeat_penalty: a.repeat_penalty },
        max_body: a.max_body,
        timeout: limit(a.timeout),
        header_timeout: limit(a.header_timeout),
        body_timeout: limit(a.body_timeout),
        idle_timeout: limit(a.idle_timeout),
        max_connections: a.max_connections,
        grace: Duration::from_secs(a.grace),
        log_format: match a.log_format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
            LogFormatArg::Off => LogFormat::Off,
        },
        log_prompts: a.log_prompts,
    };
    serve_blocking(Arc::new(model), cfg, listener)?;
    Ok(ExitCode::SUCCESS)
}
