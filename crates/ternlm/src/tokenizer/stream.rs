//! Streaming detokenization: bytes of token pieces go in, text comes out only up to the last
//! complete UTF-8 character, so a multi-byte character split across tokens is never printed
//! in halves. Bytes that can never become valid UTF-8 come out as U+FFFD.

#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes` and returns the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Returns whatever is left, lossily (an incomplete character at the very end).
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn split_character_waits_for_its_tail() {
        let mut d = StreamDecoder::new();
        let e = "é".as_bytes();
        assert_eq!(d.push(&[b'a', e[0]]), "a");
        assert_eq!(d.push(&e[1..]), "é");
        assert_eq!(d.finish(), "");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut d = StreamDecoder::new();
        assert_eq!(d.push(&[0xFF, b'x']), "\u{FFFD}x");
    }

    proptest! {
        #[test]
        fn any_split_of_valid_text_round_trips(s in "\\PC{0,40}", cuts in proptest::collection::vec(0usize..200, 0..8)) {
            let bytes = s.as_bytes();
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut d = StreamDecoder::new();
            let mut out = String::new();
            let mut last = 0;
            for p in points.into_iter().chain([bytes.len()]) {
                let piece = d.push(&bytes[last..p]);
                prop_assert!(s.starts_with(&(out.clone() + &piece)));
                out += &piece;
                last = p;
            }
            out += &d.finish();
            prop_assert_eq!(out, s);
        }
    }
}
