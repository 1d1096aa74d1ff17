//! KV caches of finished sequences, kept with the tokens they hold, so that a request which
//! starts with what an earlier one held prefills only the rest. A chat client re-sends the
//! whole conversation every turn, and an agent re-sends its instructions: without this, each
//! turn would prefill everything again. The reused rows are the same numbers a fresh prefill
//! computes (every row of a step is computed on its own), so results do not change.

use ternlm::kv_cache::KvCache;

/// What the pool needs of a cache: how many positions it holds, and forgetting the rest.
pub(crate) trait Positions {
    fn len(&self) -> usize;
    fn truncate(&mut self, len: usize);
}

impl Positions for KvCache {
    fn len(&self) -> usize {
        KvCache::len(self)
    }

    fn truncate(&mut self, len: usize) {
        KvCache::truncate(self, len);
    }
}

/// Free caches, least recently freed first.
pub(crate) struct PromptCache<C = KvCache> {
    free: Vec<(C, Vec<u32>)>,
    reuse: bool,
}

impl<C: Positions> PromptCache<C> {
    /// `reuse: false` keeps the caches (no reallocation) but never their contents.
    pub(crate) fn new(reuse: bool) -> Self {
        Self { free: Vec::new(), reuse }
    }

    /// A free cache for `prompt` and how many of its leading tokens it already holds: the one
    /// sharing the longest prefix, else the least recently freed one, emptied. At most
    /// `prompt.len() - 1` tokens are kept, since the last prompt token must be fed to get
    /// the logits of the first generated one. `None` when no cache is free.
    pub(crate) fn take(&mut self, prompt: &[u32]) -> Option<(C, usize)> {
        if self.free.is_empty() {
            return None;
        }
        let shared = |held: &[u32]| held.iter().zip(prompt).take_while(|(a, b)| a == b).count();
        // (tokens shared, index); later entries win ties: they were freed more recently.
        let best = self.free.iter().enumerate().map(|(i, (_, held))| (shared(held), i)).max().filter(|&(n, _)| self.reuse && n > 0);
        let (n, i) = best.unwrap_or((0, 0));
        let (mut cache, _) = self.free.remove(i);
        let keep = n.min(prompt.len().saturating_sub(1));
        cache.truncate(keep);
        Some((cache, keep))
    }

    /// Returns a cache whose positions hold the first `cache.len()` of `tokens`.
    pub(crate) fn put(&mut self, cache: C, tokens: impl Iterator<Item = u32>) {
        let held = if self.reuse { tokens.take(cache.len()).collect() } else { Vec::new() };
        self.free.push((cache, held));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache reduced to its length.
    #[derive(Debug)]
    struct Held(usize);

    impl Positions for Held {
        fn len(&self) -> usize {
            self.0
        }

        fn truncate(&mut self, len: usize) {
            self.0 = self.0.min(len);
        }
    }

    #[test]
    fn the_longest_shared_prefix_wins_and_the_last_prompt_token_is_refed() {
        let mut pc = PromptCache::<Held>::new(true);
        pc.put(Held(3), [1, 2, 3].into_iter());
        pc.put(Held(5), [1, 2, 9, 9, 9].into_iter());
        pc.put(Held(2), [7, 8].into_iter());
        let (c, keep) = pc.take(&[1, 2, 3, 4]).unwrap();
        assert_eq!((keep, c.len()), (3, 3));
        // The whole prompt cached: all but its last token kept.
        pc.put(Held(4), [1, 2, 3, 4].into_iter());
        let (_, keep) = pc.take(&[1, 2, 3, 4]).unwrap();
        assert_eq!(keep, 3);
    }

    #[test]
    fn no_match_takes_the_oldest_emptied_and_none_when_all_are_busy() {
        let mut pc = PromptCache::<Held>::new(true);
        assert!(pc.take(&[1]).is_none());
        pc.put(Held(2), [5, 6].into_iter());
        pc.put(Held(2), [7, 8].into_iter());
        let (c, keep) = pc.take(&[1, 2]).unwrap();
        assert_eq!((keep, c.len()), (0, 0));
        // The one left is the more recent [7, 8].
        let (_, keep) = pc.take(&[7, 8, 9]).unwrap();
        assert_eq!(keep, 2);
    }

    #[test]
    fn without_reuse_nothing_is_kept() {
        let mut pc = PromptCache::<Held>::new(false);
        pc.put(Held(3), [1, 2, 3].into_iter());
        let (c, keep) = pc.take(&[1, 2, 3, 4]).unwrap();
        assert_eq!((keep, c.len()), (0, 0));
    }
}
