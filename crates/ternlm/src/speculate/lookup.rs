//! Prompt lookup: when the last few tokens occurred before in the sequence (prompt and
//! generated text together), propose the tokens that followed them then. Text that copies
//! from its prompt (an edited paragraph, code with one change, a quote) is mostly such runs.

/// Longest n-gram matched first: a longer match predicts its continuation better.
const NGRAM_MAX: usize = 4;
/// Shortest n-gram worth matching: one token recurs too often to predict anything.
const NGRAM_MIN: usize = 2;

/// Up to `max` tokens that followed the most recent earlier occurrence of `context`'s last
/// n-gram (longest n first); empty when there is none.
pub(crate) fn propose(context: &[u32], max: usize) -> Vec<u32> {
    let len = context.len();
    if max == 0 {
        return Vec::new();
    }
    for n in (NGRAM_MIN..=NGRAM_MAX.min(len.saturating_sub(1))).rev() {
        let tail = &context[len - n..];
        // Latest start first; the match must end before the tail's own start overlaps it
        // entirely, so that at least one token follows it.
        for start in (0..len - n).rev() {
            if &context[start..start + n] == tail {
                let from = start + n;
                return context[from..(from + max).min(len)].to_vec();
            }
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposes_what_followed_the_latest_match() {
        // "1 2 3 4 ... 1 2" -> "3 4 ..."
        assert_eq!(propose(&[1, 2, 3, 4, 5, 9, 1, 2], 3), [3, 4, 5]);
        // Two earlier occurrences: the later one wins.
        assert_eq!(propose(&[1, 2, 7, 0, 1, 2, 8, 0, 1, 2], 1), [8]);
        // Longer n-grams first: "5 1 2" picks the occurrence after 5.
        assert_eq!(propose(&[5, 1, 2, 3, 6, 1, 2, 4, 5, 1, 2], 2), [3, 6]);
        // Proposals stop at the end of the context.
        assert_eq!(propose(&[1, 2, 1, 2], 5), [1, 2]);
        assert!(propose(&[1, 2, 3, 4], 4).is_empty());
        assert!(propose(&[1], 4).is_empty());
        assert!(propose(&[1, 2, 1, 2], 0).is_empty());
    }
}
