//! The backend seam: where a model's weights and KV caches live and where a forward step's
//! arithmetic runs. Everything above it (sequences, sampling, speculation, the server's
//! scheduler) sees only [`Backend`], so a GPU implementation can keep weights, KV caches and
//! activations on its device for a whole step and hand back nothing but logits.
//!
//! One call runs any mix of positions: several positions of one sequence (a prompt chunk, or
//! a run of drafted tokens being verified) and single positions of many sequences (serving)
//! are the same [`Backend::forward`].

mod cpu;
mod gpu;

use std::any::Any;

pub(crate) use cpu::CpuBackend;
pub(crate) use gpu::GpuBackend;

use crate::error::{ModelError, Result};

/// Whether `tokens` may run after the `held` positions of a store of `n_ctx`: not empty, not
/// past the context, every id in the vocabulary. Every backend checks every segment before
/// it writes anything.
pub(crate) fn check_segment(tokens: &[u32], held: usize, n_ctx: usize, n_vocab: usize) -> Result<()> {
    if tokens.is_empty() {
        return Err(ModelError::EmptyPrompt);
    }
    if held + tokens.len() > n_ctx {
        return Err(ModelError::ContextFull { ctx: n_ctx });
    }
    if let Some(&t) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
        return Err(ModelError::BadToken { id: t, n_vocab });
    }
    Ok(())
}

/// Which positions of a segment need logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    Last,
    All,
    /// None at all: a chunk of a prompt whose end comes in a later step.
    None,
}

/// One sequence's keys and values, held wherever its backend keeps them. Positions are
/// forgotten from the end (`truncate`) to reuse a shared prefix or to roll back drafted
/// tokens that verification rejected.
pub(crate) trait KvStore: Send + Any {
    /// Positions currently held.
    fn len(&self) -> usize;
    /// Positions it can hold at most.
    fn n_ctx(&self) -> usize;
    /// Forgets every position from `len` on.
    fn truncate(&mut self, len: usize);
    /// Bytes it holds now.
    fn bytes(&self) -> usize;
    /// For the backend that made it, to reach its own type.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// One sequence's part of a step: its KV store, the tokens to run after what it holds, and
/// which of their logits to return.
pub(crate) struct Segment<'a> {
    pub kv: &'a mut dyn KvStore,
    pub tokens: &'a [u32],
    pub logits: Logits,
}

/// What a forward step needs from the hardware.
pub(crate) trait Backend: Send + Sync {
    /// A short name for reports ("cpu").
    fn name(&self) -> &'static str;
    /// An empty KV store for up to `n_ctx` positions, on this backend.
    fn new_kv(&self, n_ctx: usize) -> Box<dyn KvStore>;
    /// Runs every segment's tokens in one step and returns each segment's logits (`n_vocab`
    /// per row asked for), in order. Nothing is written to any KV store unless every segment
    /// is valid; a segment's logits do not depend on what it is batched with.
    fn forward(&self, segs: &mut [Segment<'_>]) -> Result<Vec<Vec<f32>>>;
    /// Threads (or, on a device, streams) the arithmetic runs on.
    fn threads(&self) -> usize;
    /// Weight bytes one step reads, whatever its number of positions.
    fn weight_bytes_per_step(&self) -> usize;
    /// Each kind of weights the step multiplies by, with the CPU kernel level its products
    /// run at (`("q4_1", "avx512")`), in first-use order; empty where no CPU kernels run.
    fn kernel_levels(&self) -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }
    /// Runs `tokens` from position 0 in one step, handing every intermediate tensor to
    /// `sink`, and returns the logits of every position. Only backends whose activations
    /// live in host memory can do it.
    fn forward_traced(&self, tokens: &[u32], sink: &mut dyn FnMut(&str, &[f32])) -> Result<Vec<f32>> {
        let _ = (tokens, sink);
        Err(ModelError::Invalid(format!("tracing intermediate tensors is not supported on the {} backend; use --device cpu", self.name())))
    }
}
