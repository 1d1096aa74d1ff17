//! Turning typed lines into entries: a message, a command, or nothing yet because a `"""`
//! block is open. As in Ollama, a line starting with `"""` opens a block that a line ending
//! with `"""` closes, and the lines between are one message; `/set system """` opens a
//! block that becomes the system message.

use crate::commands::user_text;

const QUOTES: &str = "\"\"\"";

/// What the lines typed so far amount to.
#[derive(Debug, PartialEq)]
pub enum Entry {
    /// Text for the model (trimmed as `run` trims a prompt).
    Message(String),
    /// A line starting with `/`.
    Command(String),
}

/// Collects lines until they make an entry.
#[derive(Default)]
pub struct Assembler {
    /// The open block: what its entry starts with ("" or `/set system `) and its lines.
    open: Option<(&'static str, Vec<String>)>,
}

impl Assembler {
    pub fn in_block(&self) -> bool {
        self.open.is_some()
    }

    /// Takes one line (without its line ending): the entry it completes, if any. Blank lines
    /// outside a block make no entry.
    pub fn push(&mut self, line: &str) -> Option<Entry> {
        if let Some((_, lines)) = &mut self.open {
            match line.trim_end().strip_suffix(QUOTES) {
                Some(last) => {
                    lines.push(last.to_string());
                    return self.close();
                }
                None => {
                    lines.push(line.to_string());
                    return None;
                }
            }
        }
        let text = user_text(line);
        let (head, after) = match (text.strip_prefix(QUOTES), system_block(text)) {
            (Some(after), _) => ("", after),
            (None, Some(after)) => ("/set system ", after),
            (None, None) if text.is_empty() => return None,
            (None, None) if text.starts_with('/') => return Some(Entry::Command(text.to_string())),
            (None, None) => return Some(Entry::Message(text.to_string())),
        };
        // `"""one line"""` opens and closes at once.
        let one_line = after.strip_suffix(QUOTES);
        self.open = Some((head, vec![one_line.unwrap_or(after).to_string()]));
        if one_line.is_some() { self.close() } else { None }
    }

    /// The end of input: an open block is sent as far as it got.
    pub fn finish(&mut self) -> Option<Entry> {
        self.close()
    }

    /// Forgets an open block (Ctrl-C).
    pub fn abandon(&mut self) {
        self.open = None;
    }

    fn close(&mut self) -> Option<Entry> {
        let (head, lines) = self.open.take()?;
        let text = user_text(&lines.join("\n")).to_string();
        match head {
            "" if text.is_empty() => None,
            "" => Some(Entry::Message(text)),
            _ => Some(Entry::Command(format!("{head}{text}"))),
        }
    }
}

/// What follows `/set system """`, when `text` is that.
fn system_block(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("/set")?.trim_start().strip_prefix("system")?;
    rest.starts_with(char::is_whitespace).then(|| rest.trim_start()).and_then(|r| r.strip_prefix(QUOTES))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(lines: &[&str]) -> Vec<Entry> {
        let mut a = Assembler::default();
        let mut out: Vec<Entry> = lines.iter().filter_map(|l| a.push(l)).collect();
        out.extend(a.finish());
        out
    }

    fn msg(s: &str) -> Entry {
        Entry::Message(s.into())
    }

    #[test]
    fn lines_are_messages_or_commands() {
        assert_eq!(entries(&["  hi  ", "", "   ", "/bye"]), [msg("hi"), Entry::Command("/bye".into())]);
    }

    #[test]
    fn a_block_is_one_message() {
        assert_eq!(entries(&["\"\"\"", "  indented", "/not a command", "end\"\"\"", "after"]), [msg("indented\n/not a command\nend"), msg("after")]);
        assert_eq!(entries(&["\"\"\"first", "second", "\"\"\""]), [msg("first\nsecond")]);
        assert_eq!(entries(&["\"\"\"one line\"\"\""]), [msg("one line")]);
        assert_eq!(entries(&["\"\"\"\"\"\"", "\"\"\"", "\"\"\""]), []);
    }

    #[test]
    fn an_unfinished_block_is_sent_at_the_end_or_forgotten_on_ctrl_c() {
        assert_eq!(entries(&["\"\"\"", "a", "b"]), [msg("a\nb")]);
        let mut a = Assembler::default();
        assert_eq!(a.push("\"\"\"draft"), None);
        assert!(a.in_block());
        a.abandon();
        assert_eq!(a.push("hi"), Some(msg("hi")));
    }

    #[test]
    fn set_system_takes_a_block() {
        assert_eq!(entries(&["/set system \"\"\"", "You are terse.", "Very.\"\"\""]), [Entry::Command("/set system You are terse.\nVery.".into())]);
        assert_eq!(entries(&["/set  system \"\"\"Be kind.\"\"\""]), [Entry::Command("/set system Be kind.".into())]);
        assert_eq!(entries(&["/set systemic \"\"\"x"]), [Entry::Command("/set systemic \"\"\"x".into())]);
    }
}
