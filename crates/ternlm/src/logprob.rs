//! Reading logits: the most likely token, log-sum-exp, and log-probabilities of a token and
//! its best alternatives. Every front end (sampling, the server's `logprobs`, perplexity,
//! speculative verification) reads logits through these, so they agree to the bit.

/// The index of the first largest value (0 for an empty row).
pub fn argmax(row: &[f32]) -> u32 {
    first_max(row.iter().copied()) as u32
}

/// The position of the first largest value an iterator yields (0 when it yields none).
pub(crate) fn first_max(values: impl Iterator<Item = f32>) -> usize {
    let (mut best, mut best_v) = (0, f32::NEG_INFINITY);
    for (i, x) in values.enumerate() {
        if i == 0 || x > best_v {
            (best, best_v) = (i, x);
        }
    }
    best
}

/// `ln(sum(exp(row)))`, shifted by the maximum so it neither overflows nor underflows, summed
/// in f64 so a 150k-token vocabulary loses no precision.
pub fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    if !max.is_finite() {
        return f64::from(max);
    }
    f64::from(max) + row.iter().map(|&v| f64::from(v - max).exp()).sum::<f64>().ln()
}

/// `log_softmax(row)[id]`.
pub fn token_logprob(row: &[f32], id: u32) -> f64 {
    row.get(id as usize).map_or(f64::NEG_INFINITY, |&v| f64::from(v) - log_sum_exp(row))
}

/// `log_softmax(row)[id]` and the `k` most likely `(id, logprob)`, best first (ties to the
/// lower id).
pub fn logprobs(row: &[f32], id: u32, k: usize) -> (f32, Vec<(u32, f32)>) {
    let lse = log_sum_exp(row) as f32;
    let mut top: Vec<(u32, f32)> = Vec::new();
    let k = k.min(row.len());
    if k > 0 {
        let order = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
        let mut idx: Vec<u32> = (0..row.len() as u32).collect();
        idx.select_nth_unstable_by(k - 1, order);
        idx.truncate(k);
        idx.sort_by(order);
        top = idx.into_iter().map(|i| (i, row[i as usize] - lse)).collect();
    }
    (row.get(id as usize).map_or(f32::NEG_INFINITY, |&v| v - lse), top)
}

/// How many leading tokens two sequences share (prompt-prefix reuse in sessions and in the
/// server's prompt cache).
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_normalize_and_rank() {
        let row = [1.0f32, 3.0, 3.0, -2.0];
        assert_eq!(argmax(&row), 1);
        let total: f64 = (0..4).map(|i| token_logprob(&row, i).exp()).sum();
        assert!((total - 1.0).abs() < 1e-9);
        let (lp, top) = logprobs(&row, 0, 3);
        assert!((f64::from(lp) - token_logprob(&row, 0)).abs() < 1e-6);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 2, 0]);
        assert_eq!(logprobs(&row, 9, 0).0, f32::NEG_INFINITY);
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4, 5]), 2);
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + 2f64.ln())).abs() < 1e-9);
    }
}
