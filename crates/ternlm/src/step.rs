//! One step for any number of sequences: [`Model::step`] gathers what each needs fed (a
//! slice of its prompt, or its last sampled token), runs them as one batched forward, and
//! samples and reports per sequence. It is the
//! only place a forward pass is asked for, so a session, the server and the benchmark run
//! exactly the same code.

use crate::backend::{Logits, Segment};
use crate::error::Result;
use crate::logprob::logprobs;
use crate::model::Model;
use crate::sequence::{Gen, SeqEvent, Sequence, StopReason, TokenInfo};

/// What one sequence runs in a step.
struct Planned {
    /// Index into the step's sequences.
    seq: usize,
    tokens: Vec<u32>,
    logits: Logits,
}

impl Model {
    /// Advances every sequence by one batched forward: decoding sequences by their sampled
    /// token, then sequences with tokens waiting, in the
    /// order given, up to `prefill_budget` of those tokens in all (`None`: no limit). When no
    /// sequence decodes and the budget is spent, the first waiting sequence still gets a
    /// slice, so every step makes progress. Sequences with nothing to do are left alone.
    ///
    /// A failed step (a sequence from another model's backend, say) changes no KV store.
    pub fn step(&self, seqs: &mut [&mut Sequence], prefill_budget: Option<usize>) -> Result<()> {
        let mut budget = prefill_budget.unwrap_or(usize::MAX);
        let mut plan: Vec<Planned> = Vec::with_capacity(seqs.len());
        for (i, s) in seqs.iter().enumerate() {
            if let Some(g) = s.generation.as_ref().filter(|g| g.stop.is_none() && s.feed.is_empty())
                && let Some(next) = g.next
            {
                plan.push(Planned { seq: i, tokens: vec![next], logits: Logits::Last });
            }
        }
        let decoding = !plan.is_empty();
        for (i, s) in seqs.iter().enumerate() {
            if s.feed.is_empty() || !(budget > 0 || (!decoding && plan.is_empty())) {
                continue;
            }
            let take = s.feed.len().min(budget.max(1));
            budget = budget.saturating_sub(take);
            let completes = take == s.feed.len();
            let logits = match &s.generation {
                Some(g) if g.params.prompt_logprobs => Logits::All,
                Some(_) if completes => Logits::Last,
                Some(_) => Logits::None,
                None if completes => s.want,
                None if s.want == Logits::All => Logits::All,
                None => Logits::None,
            };
            plan.push(Planned { seq: i, tokens: s.feed.iter().take(take).copied().collect(), logits });
        }
        if plan.is_empty() {
            return Ok(());
        }
        let outputs = {
            let mut chosen: Vec<Option<&mut Sequence>> = seqs.iter_mut().map(|s| Some(&mut **s)).collect();
            let mut segs: Vec<Segment<'_>> = Vec::with_capacity(plan.len());
            for p in &plan {
                if let Some(s) = chosen[p.seq].take() {
                    segs.push(Segment { kv: s.kv.as_mut(), tokens: &p.tokens, logits: p.logits });
                }
            }
            self.backend().forward(&mut segs)?
        };
        for (p, rows) in plan.iter().zip(outputs) {
            let s = &mut *seqs[p.seq];
            if s.feed.is_empty() {
                self.decoded(s, p, &rows);
            } else {
                self.fed(s, p, rows);
            }
            debug_assert_eq!(s.kv.len(), s.tokens.len(), "a sequence's tokens are what its KV store holds");
        }
        Ok(())
    }

    /// After a slice of waiting tokens ran: keep what evaluation asked for, gather prompt
    /// log-probabilities, and sample the first token once the prompt is in.
    fn fed(&self, s: &mut Sequence, p: &Planned, rows: Vec<f32>) {
        let start = s.tokens.len();
        s.feed.drain(..p.tokens.len());
        s.tokens.extend(&p.tokens);
        let Some(g) = s.generation.as_mut() else {
            if s.logits.is_empty() {
                s.logits = rows;
            } else {
                s.logits.extend(rows);
            }
            return;
        };
        let v = self.config.n_vocab;
        if g.params.prompt_logprobs {
            let k = g.params.logprobs.unwrap_or(0);
            for (row, &id) in rows.chunks_exact(v).zip(g.prompt.iter().skip(start + 1)) {
                let (lp, top) = logprobs(row, id, k);
                let text = String::from_utf8_lossy(self.tokenizer.piece(id)).into_owned();
                g.prompt_lp.push(TokenInfo { id, text, logprob: Some(lp), top });
            }
        }
        if !s.feed.is_empty() || rows.len() < v {
            return;
        }
        if g.params.prompt_logprobs {
            s.events.push(SeqEvent::Prompt(std::mem::take(&mut g.prompt_lp)));
        }
        if g.params.max_tokens == 0 {
            g.stop = Some(StopReason::Length);
            return;
        }
        let row = &rows[rows.len() - v..];
        let id = g.sampler.sample(row);
        self.emit(g, &mut s.events, id, row, s.tokens.len(), s.kv.n_ctx());
    }

    /// After a decode step: sample the next token.
    fn decoded(&self, s: &mut Sequence, p: &Planned, rows: &[f32]) {
        let (before, n_ctx) = (s.tokens.len(), s.kv.n_ctx());
        s.tokens.extend(&p.tokens);
        let Some(g) = s.generation.as_mut() else { return };
        g.next = None;
        g.decode_steps += 1;
        let id = g.sampler.sample(rows);
        self.emit(g, &mut s.events, id, rows, before + 1, n_ctx);
    }

    /// Reports a sampled token and decides whether generation goes on; `held` is how many
    /// positions precede it, of `n_ctx`. Going on, it becomes the token to feed next.
    #[allow(clippy::too_many_arguments)]
    fn emit(&self, g: &mut Gen, events: &mut Vec<SeqEvent>, id: u32, row: &[f32], held: usize, n_ctx: usize) -> bool {
        g.sampler.accept(id);
        g.generated.push(id);
        if self.tokenizer.is_eog(id) {
            g.stop = Some(StopReason::Eos);
            return false;
        }
        let (logprob, top) = match g.params.logprobs {
            Some(k) => {
                let (lp, top) = logprobs(row, id, k);
                (Some(lp), top)
            }
            None => (None, Vec::new()),
        };
        let text = g.decoder.push(self.tokenizer.piece(id));
        events.push(SeqEvent::Token(TokenInfo { id, text, logprob, top }));
        if g.generated.len() >= g.params.max_tokens {
            g.stop = Some(StopReason::Length);
        } else if held + 1 > n_ctx {
            g.stop = Some(StopReason::ContextFull);
        } else {
            g.next = Some(id);
            return true;
        }
        false
    }
}
