//! Stop strings over streamed text: text is released only once it can no longer be the start
//! of a stop string, so a client never sees part of a stop sequence; when one completes, the
//! text before it is released and generation ends.

#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What to send after a piece of text arrives.
#[derive(Debug, PartialEq, Eq)]
pub enum Matched {
    /// Send this text and continue.
    Continue(String),
    /// Send this text; a stop string ended the generation.
    Stop(String),
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), held: String::new() }
    }

    pub fn push(&mut self, text: &str) -> Matched {
        if self.stops.is_empty() {
            return Matched::Continue(text.to_string());
        }
        self.held.push_str(text);
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let out = self.held[..at].to_string();
            self.held.clear();
            return Matched::Stop(out);
        }
        // Keep the longest tail that is a prefix of some stop string.
        let mut keep = 0;
        for s in &self.stops {
            for n in (1..s.len().min(self.held.len() + 1)).rev() {
                if self.held.is_char_boundary(self.held.len() - n) && s.starts_with(&self.held[self.held.len() - n..]) {
                    keep = keep.max(n);
                    break;
                }
            }
        }
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        Matched::Continue(out)
    }

    /// Text still held when generation ends for another reason.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_possible_starts_and_cuts_at_the_stop() {
        let mut m = StopMatcher::new(vec!["\nUser:".into()]);
        assert_eq!(m.push("Hello"), Matched::Continue("Hello".into()));
        assert_eq!(m.push(" there\nUs"), Matched::Continue(" there".into()));
        assert_eq!(m.push("er: hi"), Matched::Stop(String::new()));
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("abcEN"), Matched::Continue("abc".into()));
        assert_eq!(m.push("x"), Matched::Continue("ENx".into()));
        assert_eq!(m.push("yyEND"), Matched::Stop("yy".into()));
        let mut none = StopMatcher::new(vec![]);
        assert_eq!(none.push("a"), Matched::Continue("a".into()));
        let mut tail = StopMatcher::new(vec!["zz".into()]);
        assert_eq!(tail.push("az"), Matched::Continue("a".into()));
        assert_eq!(tail.finish(), "z");
    }
}
