//! What a forward step costs per extra position, measured as the model runs: the time of
//! one-position steps and, from steps of more positions, the time each extra position adds.
//! The draft-length control weighs expected accepted tokens against this, so it adapts to
//! the machine, the model's weight types and how busy the CPU is: on one model a step of 8
//! positions costs about what a step of 1 does, on another several times as much.

use std::sync::Mutex;
use std::time::Duration;

/// Weight of each new observation: about the last 30 steps count.
const ALPHA: f64 = 1.0 / 32.0;
/// Extra time per position relative to a one-position step, until measured: drafting
/// starts out assumed cheap, so that the first steps measure what it really costs.
const PRIOR: f64 = 0.1;

#[derive(Debug, Default)]
struct Estimate {
    /// Seconds of a one-position step.
    one: Option<f64>,
    /// Seconds each position past the first adds.
    per_position: Option<f64>,
}

/// A model's step-cost estimate, shared by every sequence that runs on it.
#[derive(Debug, Default)]
pub(crate) struct StepCost {
    estimate: Mutex<Estimate>,
}

fn blend(old: Option<f64>, new: f64) -> f64 {
    old.map_or(new, |o| o + ALPHA * (new - o))
}

impl StepCost {
    /// Records a step of one sequence that ran `positions` positions in `took`.
    pub(crate) fn record(&self, positions: usize, took: Duration) {
        let Ok(mut e) = self.estimate.lock() else { return };
        let t = took.as_secs_f64();
        if positions == 1 {
            e.one = Some(blend(e.one, t));
        } else if let Some(one) = e.one {
            let extra = ((t - one) / (positions - 1) as f64).max(0.0);
            e.per_position = Some(blend(e.per_position, extra));
        }
    }

    /// Time of a one-position step, once measured.
    pub(crate) fn one_step(&self) -> Option<f64> {
        self.estimate.lock().ok().and_then(|e| e.one)
    }

    /// Extra time per position past the first, relative to a one-position step.
    pub(crate) fn per_position(&self) -> f64 {
        match self.estimate.lock().ok().map(|e| (e.one, e.per_position)) {
            Some((Some(one), Some(extra))) if one > 0.0 => extra / one,
            _ => PRIOR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_the_cost_of_extra_positions() {
        let c = StepCost::default();
        assert_eq!(c.per_position(), PRIOR);
        c.record(1, Duration::from_millis(10));
        for _ in 0..200 {
            c.record(9, Duration::from_millis(50));
            c.record(1, Duration::from_millis(10));
        }
        assert!((c.per_position() - 0.5).abs() < 0.01, "{}", c.per_position());
    }
}
