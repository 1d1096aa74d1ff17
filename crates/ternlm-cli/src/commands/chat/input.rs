//! Where typed lines come from. At a terminal, rustyline gives line editing and a history
//! (kept in `$TERNLM_HOME/chat_history` unless `TERNLM_NOHISTORY` is set). Piped input is
//! read as bytes, line by line, with no prompts, so a line that is not UTF-8 is reported and
//! skipped instead of ending the session.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, Result};
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use super::block::{Assembler, Entry};
use crate::out::{note, note_raw};

const PROMPT: &str = ">>> ";
const MORE_PROMPT: &str = "... ";

/// One read of a line.
enum Line {
    Text(String),
    /// Ctrl-C at the prompt.
    Interrupted,
    /// The line's bytes are not UTF-8.
    NotUtf8,
    Eof,
}

enum Source {
    /// stdin and stdout are a terminal rustyline can drive.
    Editor(Box<DefaultEditor>),
    /// stdin is a terminal, but rustyline cannot be used (stdout is not a terminal, or the
    /// terminal is one it does not support): prompts go to stderr.
    Prompted,
    Piped,
}

pub struct Input {
    source: Source,
    history: Option<PathBuf>,
    assembler: Assembler,
    /// Lines read so far, to name the one that was not UTF-8.
    line_no: usize,
    /// The input has ended: at a terminal Ctrl-D could be followed by more, but it means
    /// "leave", also when it sent an unfinished block.
    ended: bool,
}

impl Input {
    /// Reads stdin: with the editor when both ends are a terminal it supports.
    pub fn open() -> Self {
        use std::io::IsTerminal;
        let source = if !std::io::stdin().is_terminal() {
            Source::Piped
        } else if std::io::stdout().is_terminal() && editor_supports_terminal() {
            DefaultEditor::new().map_or(Source::Prompted, |e| Source::Editor(Box::new(e)))
        } else {
            Source::Prompted
        };
        let mut input = Self { source, history: None, assembler: Assembler::default(), line_no: 0, ended: false };
        if let Source::Editor(editor) = &mut input.source {
            input.history = history_file();
            if let Some(path) = &input.history {
                // No history yet is the usual first run.
                let _ = editor.load_history(path);
            }
        }
        input
    }

    /// Whether a person is typing (prompts, a banner and notes for them are wanted).
    pub fn is_interactive(&self) -> bool {
        !matches!(self.source, Source::Piped)
    }

    /// The next message or command; `None` at the end of input.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        while !self.ended {
            let prompt = if self.assembler.in_block() { MORE_PROMPT } else { PROMPT };
            match self.read_line(prompt)? {
                Line::Text(line) => {
                    if let Some(entry) = self.assembler.push(&line) {
                        return Ok(Some(entry));
                    }
                }
                Line::Interrupted => {
                    self.assembler.abandon();
                    note!("Use Ctrl-D or /bye to exit.");
                }
                Line::NotUtf8 => note!("ternlm: line {} is not valid UTF-8; skipped", self.line_no),
                Line::Eof => {
                    if matches!(self.source, Source::Prompted) {
                        // Ctrl-D leaves the cursor after the prompt; the shell's prompt
                        // belongs on a line of its own (rustyline ends its line itself).
                        note!();
                    }
                    self.ended = true;
                    return Ok(self.assembler.finish());
                }
            }
        }
        Ok(None)
    }

    fn read_line(&mut self, prompt: &str) -> Result<Line> {
        let line = match &mut self.source {
            Source::Editor(editor) => match editor.readline(prompt) {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                        if let Some(path) = &self.history {
                            // History is a convenience: failing to keep it is no error.
                            let _ = path.parent().map(std::fs::create_dir_all);
                            let _ = editor.append_history(path);
                        }
                    }
                    Line::Text(line)
                }
                Err(ReadlineError::Interrupted) => Line::Interrupted,
                Err(ReadlineError::Eof) => Line::Eof,
                Err(ReadlineError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => Line::NotUtf8,
                Err(e) => return Err(e).context("reading the terminal"),
            },
            Source::Prompted => {
                note_raw!("{prompt}");
                read_plain()?
            }
            Source::Piped => read_plain()?,
        };
        if !matches!(line, Line::Eof | Line::Interrupted) {
            self.line_no += 1;
        }
        Ok(line)
    }
}

/// One line of stdin as bytes, without its line ending.
fn read_plain() -> Result<Line> {
    let mut buf = Vec::new();
    if std::io::stdin().lock().read_until(b'\n', &mut buf).context("reading stdin")? == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    Ok(String::from_utf8(buf).map_or(Line::NotUtf8, Line::Text))
}

/// rustyline reads a terminal it does not support (`TERM=dumb`, an Emacs shell) without
/// editing and without ending the line at Ctrl-D; the plain prompt handles those better.
fn editor_supports_terminal() -> bool {
    !std::env::var("TERM").is_ok_and(|t| ["dumb", "cons25", "emacs"].contains(&t.as_str()))
}

fn history_file() -> Option<PathBuf> {
    if std::env::var_os("TERNLM_NOHISTORY").is_some_and(|v| !v.is_empty() && v != "0") {
        return None;
    }
    ternlm_hub::cache::home().ok().map(|h| h.join("chat_history"))
}
