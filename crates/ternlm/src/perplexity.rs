//! Perplexity over a token sequence, computed the way llama-perplexity does so the numbers
//! compare: consecutive chunks of the context size, each starting with BOS when the model
//! adds one, only the second half of each chunk scored.

use crate::backend::Logits;
use crate::error::{ModelError, Result};
use crate::logprob::token_logprob;
use crate::model::Model;

/// What [`perplexity`] measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Perplexity {
    pub perplexity: f64,
    /// Tokens whose log-probability was scored.
    pub scored: usize,
    pub chunks: usize,
}

/// Perplexity of `tokens` in chunks of `n_ctx` (at least 8), at most `max_chunks` of them;
/// `progress` hears each finished chunk's index and the perplexity so far.
pub fn perplexity(model: &Model, tokens: &[u32], n_ctx: usize, max_chunks: Option<usize>, progress: &mut dyn FnMut(usize, usize, f64)) -> Result<Perplexity> {
    if n_ctx < 8 {
        return Err(ModelError::Invalid(format!("a perplexity context of {n_ctx} tokens is too short (at least 8)")));
    }
    let available = tokens.len() / n_ctx;
    let chunks = max_chunks.map_or(available, |c| c.min(available));
    if chunks == 0 {
        return Err(ModelError::Invalid(format!("the text has {} tokens, fewer than one chunk of {n_ctx}", tokens.len())));
    }
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
        progress(c + 1, chunks, (nll / count as f64).exp());
    }
    Ok(Perplexity { perplexity: (nll / count as f64).exp(), scored: count, chunks })
}
