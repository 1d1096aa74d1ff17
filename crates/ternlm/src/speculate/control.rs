//! How many tokens to draft: the length that maximizes expected tokens per unit of step
//! time. Acceptance is tracked per draft position, as the chance that the `i`-th drafted
//! token is accepted once the ones before it were: drafted tokens are not accepted
//! independently (a copied run that gets its first token right tends to get the rest
//! right, too), and one overall rate would cut every draft short. A step verifying `k`
//! drafted tokens then emits `1 + a1 + a1·a2 + ... + a1···ak` tokens on average and costs
//! the measured time of a step of `k + 1` positions (see [`super::StepCost`]). When no
//! length beats plain decoding, drafting pauses and only probes now and then with one
//! token, so a sequence that stops repeating itself costs little more than plain decoding.

/// Weight of each verified position in its acceptance average: about the last 10 count.
const ALPHA: f64 = 0.1;

/// Acceptance assumed for the first drafted token before any was verified.
const PRIOR_FIRST: f64 = 0.5;

/// Acceptance assumed for a later drafted token, once the ones before it were accepted,
/// before any was verified at that position: runs tend to go on, and the optimism is what
/// gets longer drafts tried (and so measured) at all.
const PRIOR_LATER: f64 = 0.8;

/// Decode steps between probes while drafting pauses.
const PROBE_EVERY: usize = 16;

#[derive(Clone, Debug)]
pub(crate) struct DraftControl {
    /// `accept[i]`: estimated chance that drafted token `i + 1` is accepted when the ones
    /// before it were; positions past the end are at their prior.
    accept: Vec<f64>,
    /// Steps since the last draft while paused.
    idle: usize,
}

impl DraftControl {
    pub(crate) fn new() -> Self {
        Self { accept: Vec::new(), idle: 0 }
    }

    fn accept_at(&self, i: usize) -> f64 {
        self.accept.get(i).copied().unwrap_or(if i == 0 { PRIOR_FIRST } else { PRIOR_LATER })
    }

    /// Tokens to draft this step, at most `costs.len() - 2`, where `costs[p]` is the time of a
    /// step that feeds `p` positions (the sampled token and `p - 1` drafted ones), relative to
    /// a plain one-position step.
    pub(crate) fn length(&mut self, costs: &[f64]) -> usize {
        let max = costs.len().saturating_sub(2);
        let best = self.best(costs);
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
    fn best(&self, costs: &[f64]) -> usize {
        let max = costs.len().saturating_sub(2);
        let (mut best, mut best_rate) = (0, 1.0);
        let (mut expected, mut p) = (1.0, 1.0);
        for k in 1..=max {
            p *= self.accept_at(k - 1);
            expected += p;
            let rate = expected / costs[k + 1].max(1e-9);
            if rate > best_rate {
                (best, best_rate) = (k, rate);
            }
        }
        // Drafting must beat plain decoding by a margin: the estimates are noisy.
        if best_rate > 1.02 { best } else { 0 }
    }

    /// Records a verification: `accepted` of `proposed` drafted tokens were accepted (the
    /// first rejection ends a run, so the ones after it say nothing).
    pub(crate) fn record(&mut self, proposed: usize, accepted: usize) {
        let seen = (accepted + 1).min(proposed);
        while self.accept.len() < seen {
            let prior = self.accept_at(self.accept.len());
            self.accept.push(prior);
        }
        for (i, a) in self.accept.iter_mut().enumerate().take(seen) {
            let hit = if i < accepted { 1.0 } else { 0.0 };
            *a += ALPHA * (hit - *a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative step costs: `per` more per position past the first.
    fn linear(max: usize, per: f64) -> Vec<f64> {
        (0..=max + 1).map(|p| if p == 0 { 0.0 } else { 1.0 + per * (p - 1) as f64 }).collect()
    }

    #[test]
    fn drafts_grow_with_acceptance_and_pause_without_it() {
        let mut c = DraftControl::new();
        for _ in 0..100 {
            c.record(8, 8);
        }
        assert_eq!(c.length(&linear(8, 0.05)), 8, "all accepted: the longest draft pays");
        assert_eq!(c.length(&linear(8, 1.1)), 0, "drafts that cost more than a step each never pay");
        for _ in 0..100 {
            c.record(1, 0);
        }
        let lengths: Vec<usize> = (0..32).map(|_| c.length(&linear(8, 0.05))).collect();
        assert_eq!(lengths.iter().filter(|&&k| k > 0).count(), 2, "paused: a one-token probe every {PROBE_EVERY} steps");
        assert!(lengths.iter().all(|&k| k <= 1));
    }

    #[test]
    fn runs_that_go_on_once_started_get_long_drafts() {
        // Half the drafts fail at once; the rest are accepted whole: the chance of a later
        // token given the earlier ones is what makes long drafts pay.
        let mut c = DraftControl::new();
        for i in 0..100 {
            if i % 2 == 0 { c.record(8, 0) } else { c.record(8, 8) }
        }
        assert_eq!(c.length(&linear(8, 0.25)), 8, "{:?}", c.accept);
        // Runs that always fail at their second token get no more than two drafted.
        let mut c = DraftControl::new();
        for _ in 0..100 {
            c.record(2, 1);
        }
        assert!(c.length(&linear(8, 0.25)) <= 2, "{:?}", c.accept);
    }

    #[test]
    fn a_curve_that_flattens_favours_its_flat_part() {
        let mut c = DraftControl::new();
        for _ in 0..100 {
            c.record(8, 8);
        }
        // The second position costs 0.6, the next ones almost nothing.
        let costs: Vec<f64> = (0..=9)
            .map(|p| {
                if p == 0 {
                    0.0
                } else if p == 1 {
                    1.0
                } else {
                    1.6 + 0.01 * p as f64
                }
            })
            .collect();
        assert_eq!(c.length(&costs), 8);
    }
}
