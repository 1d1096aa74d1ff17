//! `ternlm perplexity`: the model's perplexity over a text file, computed the way
//! llama-perplexity does (consecutive chunks of the context size, each starting with BOS when
//! the model uses one, only the second half of each chunk scored), so numbers compare.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::json;
use ternlm::Logits;
use ternlm::logprob::token_logprob;

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
    let available = tokens.len() / n_ctx;
    let chunks = a.chunks.map_or(available, |c| c.min(available));
    if chunks == 0 {
        bail!("{} has {} tokens, fewer than one chunk of {n_ctx}", a.file.display(), tokens.len());
    }
    let start = Instant::now();
    let nv = model.config.n_vocab;
    let (mut nll, mut count) = (0f64, 0usize);
    let mut session = model.session(n_ctx);
    for c in 0..chunks {
        let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if let (Some(bos), true) = (model.tokenizer.bos, model.tokenizer.add_bos) {
            chunk[0] = bos;
        }
        session.reset();
        let logits = session.eval(&chunk, Logits::All)?;
        for i in n_ctx / 2..n_ctx - 1 {
            nll -= token_logprob(&logits[i * nv..(i + 1) * nv], chunk[i + 1]);
            count += 1;
        }
        if progress {
            note_raw!("\r[{}/{chunks}] perplexity so far {:.4}", c + 1, (nll / count as f64).exp());
        }
    }
    let ppl = (nll / count as f64).exp();
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
