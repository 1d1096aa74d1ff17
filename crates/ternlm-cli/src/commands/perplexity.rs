//! `ternlm perplexity`: the model's perplexity over a text file, computed the way
//! llama-perplexity does (consecutive chunks of the context size, each starting with BOS when
//! the model uses one, only the second half of each chunk scored), so numbers compare.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::cli::PerplexityArgs;
use crate::load::{ctx_size, load_model};
use crate::out::{note_raw, outln};

pub fn perplexity(a: PerplexityArgs) -> Result<ExitCode> {
    if a.chunks == Some(0) {
        bail!("--chunks must be at least 1");
    }
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    let model = load_model(&a.model)?;
    let n_ctx = a.model.ctx_size.map_or(Ok(512), |_| ctx_size(&a.model, &model))?;
    let progress = std::io::stderr().is_terminal();
    if n_ctx < 8 {
        bail!("--ctx-size must be at least 8 for perplexity");
    }
    let tokens = model.tokenizer.encode(&text, false, false)?;
    if tokens.len() < n_ctx {
        bail!("{} has {} tokens, fewer than one chunk of {n_ctx}", a.file.display(), tokens.len());
    }
    let start = Instant::now();
    let result = ternlm::perplexity::perplexity(&model, &tokens, n_ctx, a.chunks, &mut |done, total, so_far| {
        if progress {
            note_raw!("\r[{done}/{total}] perplexity so far {so_far:.4}");
        }
    })?;
    let (ppl, count, chunks) = (result.perplexity, result.scored, result.chunks);
    if progress {
        note_raw!("\r\x1b[K");
    }
    if a.json {
        outln!("{}", json!({"perplexity": ppl, "tokens_scored": count, "chunks": chunks, "n_ctx": n_ctx, "seconds": start.elapsed().as_secs_f64()}))?;
    } else {
        outln!("perplexity: {ppl:.4} over {count} scored tokens ({chunks} chunks of {n_ctx}), {:.1} s", start.elapsed().as_secs_f64())?;
    }
    Ok(ExitCode::SUCCESS)
}
