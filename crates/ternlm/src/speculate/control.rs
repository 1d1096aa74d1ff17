//! How many tokens to draft: the length that maximizes expected tokens per unit of step
//! time, from the acceptance rate seen so far. A step verifying `k` drafted tokens emits
//! `1 + a + a^2 + ... + a^k` tokens on average when each is accepted with probability `a`,
//! and costs about `1 + cost_per_draft * k` times a plain decode step. When no length beats
//! plain decoding, drafting pauses and only probes now and then with one token, so a
//! sequence that stops repeating itself costs little more than plain decoding.

/// Weight of each verified token in the acceptance average: about the last 20 count.
const ALPHA: f64 = 0.05;
/// Decode steps between probes while drafting pauses.
const PROBE_EVERY: usize = 16;

#[derive(Clone, Debug)]
pub(crate) struct DraftControl {
    /// Estimated probability that a drafted token is accepted.
    accept: f64,
    /// Steps since the last draft while paused.
    idle: usize,
}

impl DraftControl {
    /// A fresh estimate: drafts start out assumed as likely accepted as not.
    pub(crate) fn new() -> Self {
        Self { accept: 0.5, idle: 0 }
    }

    /// Tokens to draft this step, at most `max`, when each drafted token adds
    /// `cost_per_draft` of a one-token step's time.
    pub(crate) fn length(&mut self, max: usize, cost_per_draft: f64) -> usize {
        let best = self.best(max, cost_per_draft.max(1e-3));
        if best > 0 {
            self.idle = 0;
            return best;
        }
        self.idle += 1;
        if self.idle >= PROBE_EVERY && max > 0 {
            self.idle = 0;
            return 1;
        }
        0
    }

    /// The draft length with the most expected tokens per unit of time (0: plain decoding).
    fn best(&self, max: usize, cost_per_draft: f64) -> usize {
        let a = self.accept;
        let (mut best, mut best_rate) = (0, 1.0);
        let (mut expected, mut p) = (1.0, 1.0);
        for k in 1..=max {
            p *= a;
            expected += p;
            let rate = expected / (1.0 + cost_per_draft * k as f64);
            // A longer draft must pay by a margin: the estimate is noisy.
            if rate > best_rate * 1.02 {
                (best, best_rate) = (k, rate);
            }
        }
        best
    }

    /// Records a verification: `accepted` of `proposed` drafted tokens were accepted (the
    /// first rejection ends a run, so the ones after it say nothing).
    pub(crate) fn record(&mut self, proposed: usize, accepted: usize) {
        for _ in 0..accepted {
            self.accept += ALPHA * (1.0 - self.accept);
        }
        if accepted < proposed {
            self.accept -= ALPHA * self.accept;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drafts_grow_with_acceptance_and_pause_without_it() {
        let mut c = DraftControl::new();
        for _ in 0..100 {
            c.record(8, 8);
        }
        assert_eq!(c.length(8, 0.05), 8, "all accepted: the longest draft pays");
        assert!(c.length(8, 0.9) < 8, "drafts that cost almost a step each pay only so far");
        for _ in 0..100 {
            c.record(1, 0);
        }
        let lengths: Vec<usize> = (0..32).map(|_| c.length(8, 0.05)).collect();
        assert_eq!(lengths.iter().filter(|&&k| k > 0).count(), 2, "paused: a one-token probe every {PROBE_EVERY} steps");
        assert!(lengths.iter().all(|&k| k <= 1));
    }
}
