//! What a forward step costs by how many positions it runs, measured as the model runs.
//! The draft-length control weighs expected accepted tokens against this, so it adapts to
//! the machine, the model's weight types and how busy the CPU is: on one model a step of 8
//! positions costs about what a step of 1 does, on another several times as much, and the
//! curve is not a line (a second position can cost more than each one after it).

use std::sync::Mutex;
use std::time::Duration;

/// Weight of each new observation: about the last 30 steps of a length count.
const ALPHA: f64 = 1.0 / 32.0;

/// Extra time per position relative to a one-position step, until measured: drafting
/// starts out assumed cheap, so that the first steps measure what it really costs.
const PRIOR: f64 = 0.1;

/// Step lengths measured one by one; longer steps share the last entry's slope.
const TRACKED: usize = 34;

#[derive(Debug)]
struct Estimate {
    /// `seconds[p]`: a step of `p` positions (index 0 unused), once measured.
    seconds: [Option<f64>; TRACKED],
}

/// A model's step-cost estimate, shared by every sequence that runs on it.
#[derive(Debug)]
pub(crate) struct StepCost {
    estimate: Mutex<Estimate>,
}

impl Default for StepCost {
    fn default() -> Self {
        Self { estimate: Mutex::new(Estimate { seconds: [None; TRACKED] }) }
    }
}

fn blend(old: Option<f64>, new: f64) -> f64 {
    old.map_or(new, |o| o + ALPHA * (new - o))
}

impl StepCost {
    /// Records a step of one sequence that ran `positions` positions in `took`.
    pub(crate) fn record(&self, positions: usize, took: Duration) {
        let Ok(mut e) = self.estimate.lock() else { return };
        if (1..TRACKED).contains(&positions) {
            e.seconds[positions] = Some(blend(e.seconds[positions], took.as_secs_f64()));
        }
    }

    /// Time of a one-position step, once measured.
    pub(crate) fn one_step(&self) -> Option<f64> {
        self.estimate.lock().ok().and_then(|e| e.seconds[1])
    }

    /// `costs[p]`: the time of a step of `p` positions relative to a one-position step, for
    /// `p` in `0..=max` (`costs[0]` is 0). Lengths not measured yet are interpolated
    /// linearly between the nearest measured ones, extended past the longest one measured
    /// by the slope from one position to it, and assumed cheap ([`PRIOR`] per position)
    /// while nothing longer than one position has been measured.
    pub(crate) fn relative(&self, max: usize) -> Vec<f64> {
        let seconds = self.estimate.lock().map(|e| e.seconds).unwrap_or([None; TRACKED]);
        let mut costs = vec![0.0; max + 1];
        let Some(one) = seconds[1].filter(|&t| t > 0.0) else {
            for (p, c) in costs.iter_mut().enumerate().skip(1) {
                *c = 1.0 + PRIOR * (p - 1) as f64;
            }
            return costs;
        };
        // Measured points (positions, relative time), starting at (1, 1).
        let known: Vec<(f64, f64)> = (1..TRACKED).filter_map(|p| seconds[p].map(|t| (p as f64, t / one))).collect();
        let &(last_p, last_c) = known.last().unwrap_or(&(1.0, 1.0));
        let tail_slope = if last_p > 1.0 { ((last_c - 1.0) / (last_p - 1.0)).max(0.0) } else { PRIOR };
        for (p, c) in costs.iter_mut().enumerate().skip(1) {
            let x = p as f64;
            *c = match known.iter().position(|&(kp, _)| kp >= x) {
                Some(j) if known[j].0 == x => known[j].1,
                Some(j) => {
                    // j > 0: the first known point is p = 1, and x > 1 here.
                    let ((x0, y0), (x1, y1)) = (known[j - 1], known[j]);
                    y0 + (y1 - y0) * (x - x0) / (x1 - x0)
                }
                None => last_c + tail_slope * (x - last_p),
            };
        }
        costs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_the_cost_of_each_length() {
        let c = StepCost::default();
        let prior = c.relative(3);
        assert_eq!(prior[..2], [0.0, 1.0]);
        assert!((prior[2] - 1.1).abs() < 1e-12 && (prior[3] - 1.2).abs() < 1e-12);
        for _ in 0..200 {
            c.record(1, Duration::from_millis(10));
            c.record(3, Duration::from_millis(20));
            c.record(9, Duration::from_millis(40));
        }
        let r = c.relative(12);
        let near = |a: f64, b: f64| (a - b).abs() < 0.01;
        assert!(near(r[1], 1.0) && near(r[3], 2.0) && near(r[9], 4.0), "{r:?}");
        assert!(near(r[2], 1.5), "between measured lengths: interpolated, {r:?}");
        assert!(near(r[6], 3.0), "{r:?}");
        assert!(near(r[11], 4.75), "past the longest: its slope from one position, {r:?}");
    }
}
