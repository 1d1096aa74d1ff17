//! One step for any number of sequences: [`Model::step`] gathers what each needs fed (a
//! slice of its prompt, or its last sampled token and the tokens drafted after it), runs
//! them as one batched forward, and samples, verifies and reports per sequence. It is the
//! only place a forward pass is asked for, so a session, the server and the benchmark run
//! exactly the same code.

use crate::backend::{Logits, Segment};
use crate::error::Result;
use crate::logprob::{argmax, logprobs};
use crate::model::Model;
use crate::sequence::{Gen, SeqEvent, Sequence, StopReason, TokenInfo};
use crate::speculate::{SpeculateMode, lookup};

/// What one sequence runs in a step.
struct Planned {
    /// Index into the step's sequences.
    seq: usize,
    tokens: Vec<u32>,
    logits: Logits,
}

impl Model {
    /// Advances every sequence by one batched forward: decoding sequences by their sampled
    /// token (and drafted ones, when speculating), then sequences with tokens waiting, in the
    /// order given, up to `prefill_budget` of those tokens in all (`None`: no limit). When no
    /// sequence decodes and the budget is spent, the first waiting sequence still gets a
    /// slice, so every step makes progress. Sequences with nothing to do are left alone.
    ///
    /// A failed step (a sequence from another model's backend, say) changes no KV store.
    pub fn step(&self, seqs: &mut [&mut Sequence], prefill_budget: Option<usize>) -> Result<()> {
        let mut budget = prefill_budget.unwrap_or(usize::MAX);
        let mut plan: Vec<Planned> = Vec::with_capacity(seqs.len());
        let mut drafted = self.draft_all(seqs)?;
        for (i, s) in seqs.iter().enumerate() {
            if let Some(g) = s.generation.as_ref().filter(|g| g.stop.is_none() && s.feed.is_empty())
                && let Some(next) = g.next
            {
                let drafts = std::mem::take(&mut drafted[i]);
                let logits = if drafts.is_empty() { Logits::Last } else { Logits::All };
                let mut tokens = Vec::with_capacity(1 + drafts.len());
                tokens.push(next);
                tokens.extend(&drafts);
                plan.push(Planned { seq: i, tokens, logits });
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
            let t = std::time::Instant::now();
            let out = self.backend().forward(&mut segs)?;
            // Only one sequence's steps say what a position costs (a batch's time is shared).
            if let [only] = plan.as_slice()
                && seqs[only.seq].feed.is_empty()
            {
                self.step_cost().record(only.tokens.len(), t.elapsed());
            }
            out
        };
        for (p, rows) in plan.iter().zip(outputs) {
            let s = &mut *seqs[p.seq];
            if s.feed.is_empty() {
                self.verify(s, p, &rows);
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

    /// After a decode step: check each drafted token in turn against the target's logits,
    /// emit the accepted ones and the token after them, and forget the rejected positions.
    ///
    /// Each row is sampled exactly as plain decoding samples it (same sampler state, same
    /// random draw, since the sampler draws once per emitted token either way), and a draft
    /// is accepted when it is the token drawn. For a proposal made deterministically (lookup,
    /// or a draft model's greedy pick) that is the speculative-sampling rule itself: the
    /// draft is accepted with probability p(draft), and on rejection the token follows p
    /// without the draft, renormalized. Drawing with the plain decoder's random number
    /// couples the two, so the output is not only distributed as the target's but is, for
    /// a given seed, the very text plain decoding gives.
    fn verify(&self, s: &mut Sequence, p: &Planned, rows: &[f32]) {
        let v = self.config.n_vocab;
        let (before, n_ctx) = (s.tokens.len(), s.kv.n_ctx());
        s.tokens.extend(&p.tokens);
        let Some(g) = s.generation.as_mut() else { return };
        g.next = None;
        g.decode_steps += 1;
        let mut accepted = 0;
        for (i, row) in rows.chunks_exact(v).enumerate() {
            let draft = p.tokens.get(i + 1).copied();
            let id = g.sampler.sample(row);
            let going = self.emit(g, &mut s.events, id, row, before + 1 + i, n_ctx);
            if draft == Some(id) {
                accepted += 1;
                // Accepted: already fed, so it is not the next token to feed.
                g.next = None;
            }
            if !going || draft != Some(id) {
                break;
            }
        }
        // Everything fed after the sampled token was drafted.
        let drafts = p.tokens.len() - 1;
        if drafts > 0 {
            g.draft_proposed += drafts;
            g.draft_accepted += accepted;
            g.draft_steps += 1;
            g.control.record(drafts, accepted);
        }
        let keep = before + 1 + accepted;
        s.kv.truncate(keep);
        s.tokens.truncate(keep);
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

    /// Drafted tokens for every decoding sequence that speculates (empty for the others):
    /// prompt lookup from its own tokens, or the draft model's greedy continuation, run for
    /// all such sequences together, one batched draft step per drafted position.
    fn draft_all(&self, seqs: &mut [&mut Sequence]) -> Result<Vec<Vec<u32>>> {
        let mut drafts = vec![Vec::new(); seqs.len()];
        // (sequence, draft length) of those drafting with the draft model.
        let mut by_model: Vec<(usize, usize)> = Vec::new();
        // Measured only when some sequence drafts: plain decoding takes no lock for it.
        let mut costs: Vec<f64> = Vec::new();
        for (i, s) in seqs.iter_mut().enumerate() {
            let n_ctx = s.kv.n_ctx();
            let held = s.tokens.len();
            let Some(g) = s.generation.as_mut().filter(|g| g.stop.is_none() && g.params.speculate.is_on()) else { continue };
            let Some(next) = g.next else { continue };
            if !s.feed.is_empty() {
                continue;
            }
            // Room in the context after the fed token, and no more than may still be emitted.
            let room = n_ctx.saturating_sub(held + 1).min(g.params.max_tokens.saturating_sub(g.generated.len() + 1));
            let spec = g.params.speculate;
            let max = spec.draft_max.min(room);
            if costs.len() < max + 2 {
                costs = self.draft_costs(max + 1);
            }
            let k = g.control.length(&costs[..max + 2]).max(spec.draft_min.min(max));
            if k == 0 {
                continue;
            }
            match g.params.speculate.mode {
                SpeculateMode::Lookup => {
                    let mut context = s.tokens.clone();
                    context.push(next);
                    drafts[i] = lookup::propose(&context, k);
                }
                SpeculateMode::Draft if self.draft_model().is_some() => by_model.push((i, k)),
                _ => {}
            }
        }
        if let Some(dm) = self.draft_model()
            && !by_model.is_empty()
        {
            dm.draft_greedy(seqs, &by_model, &mut drafts)?;
        }
        Ok(drafts)
    }

    /// This model as a draft model: for each `(sequence, k)`, catches the draft sequence up
    /// with the target's tokens and the token about to be fed, then decodes `k` tokens
    /// greedily; every sequence's draft position runs in one batched step.
    fn draft_greedy(&self, seqs: &mut [&mut Sequence], which: &[(usize, usize)], out: &mut [Vec<u32>]) -> Result<()> {
        let mut catch_up: Vec<Vec<u32>> = Vec::with_capacity(which.len());
        for &(i, _) in which {
            let s = &mut *seqs[i];
            let mut context = s.tokens.clone();
            context.extend(s.generation.as_ref().and_then(|g| g.next));
            let n_ctx = s.kv.n_ctx();
            let d = s.draft.get_or_insert_with(|| Box::new(self.new_sequence(n_ctx)));
            let keep = crate::logprob::common_prefix(&d.tokens, &context).min(context.len() - 1);
            d.truncate(keep);
            catch_up.push(context[keep..].to_vec());
        }
        let rounds = which.iter().map(|w| w.1).max().unwrap_or(0);
        for round in 0..rounds {
            let mut feeds: Vec<(usize, Vec<u32>)> = Vec::new();
            for (j, &(i, k)) in which.iter().enumerate() {
                if round < k {
                    let tokens = if round == 0 { std::mem::take(&mut catch_up[j]) } else { vec![*out[i].last().unwrap_or(&0)] };
                    feeds.push((i, tokens));
                }
            }
            let rows = {
                let mut segs: Vec<Segment<'_>> = Vec::with_capacity(feeds.len());
                let mut chosen: Vec<Option<&mut Sequence>> = seqs.iter_mut().map(|s| Some(&mut **s)).collect();
                for (i, tokens) in &feeds {
                    if let Some(d) = chosen[*i].take().and_then(|s| s.draft.as_deref_mut()) {
                        segs.push(Segment { kv: d.kv.as_mut(), tokens, logits: Logits::Last });
                    }
                }
                let t = std::time::Instant::now();
                let out = self.backend().forward(&mut segs)?;
                if round > 0 && feeds.len() == 1 {
                    self.step_cost().record(1, t.elapsed());
                }
                out
            };
            for ((i, tokens), row) in feeds.iter().zip(rows) {
                if let Some(d) = seqs[*i].draft.as_deref_mut() {
                    d.tokens.extend(tokens);
                }
                out[*i].push(argmax(&row));
            }
        }
        Ok(())
    }
}
