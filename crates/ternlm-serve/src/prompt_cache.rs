//! KV caches of finished sequences, kept with the tokens they hold, so that a request which
//! starts with what an earlier one held prefills only the rest. A chat client re-sends the
//! whole conversation every turn, and an agent re-sends its instructions: without this, each
//! turn would prefill everything again. The reused rows are the same numbers a fresh prefill
//! computes (every row of a step is computed on its own), so results do not change.
//!
//! Each cache belongs to a group (the server uses one per API key): a prompt only ever
//! reuses a cache of its own group, so a client cannot learn from `cached_tokens`, or from
//! how fast its first token comes, how much of its prompt someone else recently sent.

use ternlm::Sequence;
use ternlm::logprob::common_prefix;

/// What the pool needs of a cache: how many positions it holds, and forgetting the rest.
pub(crate) trait Positions {
    fn len(&self) -> usize;
    fn truncate(&mut self, len: usize);
}

impl Positions for Sequence {
    fn len(&self) -> usize {
        Sequence::len(self)
    }

    fn truncate(&mut self, len: usize) {
        Sequence::truncate(self, len);
    }
}

/// Free caches with their group and the tokens they hold, least recently freed first.
pub(crate) struct PromptCache<C = Sequence> {
    free: Vec<(C, u64, Vec<u32>)>,
    reuse: bool,
}

impl<C: Positions> PromptCache<C> {
    /// `reuse: false` keeps the caches (no reallocation) but never their contents.
    pub(crate) fn new(reuse: bool) -> Self {
        Self { free: Vec::new(), reuse }
    }

    /// A free cache for `prompt` of `group` and how many of its leading tokens it already
    /// holds: the one of that group sharing the longest prefix, else the least recently freed
    /// one, emptied (while `may_grow`, only a cache whose whole content leads the prompt or
    /// that holds the whole prompt). At most `prompt.len() - 1` tokens are kept, since the last prompt token
    /// must be fed to get the logits of the first generated one. `reuse: false` asks for an
    /// empty cache. `None` when no cache is free, or when none matches and `may_grow` says
    /// the caller may allocate another rather than empty one that others may still reuse.
    pub(crate) fn take(&mut self, prompt: &[u32], group: u64, reuse: bool, may_grow: bool) -> Option<(C, usize)> {
        if self.free.is_empty() {
            return None;
        }
        let shared = |held: &[u32]| common_prefix(held, prompt);
        // (tokens shared, index); later entries win ties: they were freed more recently.
        let best = self.free.iter().enumerate().filter(|(_, (_, g, _))| *g == group).map(|(i, (_, _, held))| (shared(held), i)).max().filter(|&(n, _)| self.reuse && reuse && n > 0);
        // While the pool may grow, a cache is taken only when all it holds leads the prompt
        // (a conversation's next turn) or it holds the whole prompt (the same request
        // again): one that merely shares a prefix (every chat prompt shares its template's
        // opening) stays for its own conversation's next turn, and the caller allocates
        // another.
        let whole = |(n, i): (usize, usize)| n >= self.free[i].2.len() || n + 1 >= prompt.len();
        if may_grow && !best.is_some_and(whole) {
            return None;
        }
        let (n, i) = best.unwrap_or((0, 0));
        let (mut cache, _, _) = self.free.remove(i);
        let keep = n.min(prompt.len().saturating_sub(1));
        cache.truncate(keep);
        Some((cache, keep))
    }

    /// Caches free now.
    pub(crate) fn len(&self) -> usize {
        self.free.len()
    }

    /// Returns a cache whose positions hold the first `cache.len()` of `tokens`.
    pub(crate) fn put(&mut self, cache: C, group: u64, tokens: impl Iterator<Item = u32>) {
        let held = if self.reuse { tokens.take(cache.len()).collect() } else { Vec::new() };
        self.free.push((cache, group, held));
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
        pc.put(Held(3), 0, [1, 2, 3].into_iter());
        pc.put(Held(5), 0, [1, 2, 9, 9, 9].into_iter());
        pc.put(Held(2), 0, [7, 8].into_iter());
        let (c, keep) = pc.take(&[1, 2, 3, 4], 0, true, false).unwrap();
        assert_eq!((keep, c.len()), (3, 3));
        // The whole prompt cached: all but its last token kept.
        pc.put(Held(4), 0, [1, 2, 3, 4].into_iter());
        let (_, keep) = pc.take(&[1, 2, 3, 4], 0, true, false).unwrap();
        assert_eq!(keep, 3);
    }

    #[test]
    fn no_match_takes_the_oldest_emptied_and_none_when_all_are_busy() {
        let mut pc = PromptCache::<Held>::new(true);
        assert!(pc.take(&[1], 0, true, false).is_none());
        pc.put(Held(2), 0, [5, 6].into_iter());
        pc.put(Held(2), 0, [7, 8].into_iter());
        let (c, keep) = pc.take(&[1, 2], 0, true, false).unwrap();
        assert_eq!((keep, c.len()), (0, 0));
        // The one left is the more recent [7, 8].
        let (_, keep) = pc.take(&[7, 8, 9], 0, true, false).unwrap();
        assert_eq!(keep, 2);
    }

    #[test]
    fn groups_never_share_and_a_request_can_refuse_reuse() {
        let mut pc = PromptCache::<Held>::new(true);
        pc.put(Held(4), 1, [1, 2, 3, 4].into_iter());
        // Another group's request gets the cache emptied: nothing of group 1's prompt.
        assert!(pc.take(&[1, 2, 3, 4, 5], 2, true, true).is_none(), "room for another cache: group 1's is kept");
        let (c, keep) = pc.take(&[1, 2, 3, 4, 5], 2, true, false).unwrap();
        assert_eq!((keep, c.len()), (0, 0));
        pc.put(Held(4), 1, [1, 2, 3, 4].into_iter());
        let (_, keep) = pc.take(&[1, 2, 3, 4, 5], 1, true, false).unwrap();
        assert_eq!(keep, 4);
        pc.put(Held(4), 1, [1, 2, 3, 4].into_iter());
        let (c, keep) = pc.take(&[1, 2, 3, 4, 5], 1, false, false).unwrap();
        assert_eq!((keep, c.len()), (0, 0));
    }

    #[test]
    fn a_partial_match_is_left_for_its_own_conversation_while_the_pool_may_grow() {
        let mut pc = PromptCache::<Held>::new(true);
        // Two conversations share a system prompt [1, 2].
        pc.put(Held(4), 0, [1, 2, 3, 4].into_iter());
        assert!(pc.take(&[1, 2, 7, 8], 0, true, true).is_none(), "conversation B must not truncate A's cache");
        let (c, keep) = pc.take(&[1, 2, 3, 4, 5, 6], 0, true, true).unwrap();
        assert_eq!((keep, c.len()), (4, 4), "A's next turn reuses all of it");
        // A full pool: the best partial match is taken.
        pc.put(Held(4), 0, [1, 2, 3, 4].into_iter());
        let (_, keep) = pc.take(&[1, 2, 7, 8], 0, true, false).unwrap();
        assert_eq!(keep, 2);
    }

    #[test]
    fn without_reuse_nothing_is_kept() {
        let mut pc = PromptCache::<Held>::new(false);
        pc.put(Held(3), 0, [1, 2, 3].into_iter());
        let (c, keep) = pc.take(&[1, 2, 3, 4], 0, true, false).unwrap();
        assert_eq!((keep, c.len()), (0, 0));
    }
}
