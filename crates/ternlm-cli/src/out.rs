//! Writing to stdout and stderr without panicking. A reader that goes away (`ternlm info |
//! head -1`) turns the next write into [`StdoutClosed`], which `main` ends quietly with the
//! status a shell reports for a process killed by SIGPIPE (141), as `ls | head` does. Any
//! other write error is reported as "writing to stdout". `println!` would panic instead, so
//! commands write through [`outln!`] and [`out!`].

use std::io::Write;

/// The reader of stdout has gone away: end quietly.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// The exit status of a process ended by SIGPIPE, as shells report it.
pub const SIGPIPE_STATUS: u8 = 128 + 13;

/// `err` as an `anyhow::Error`: [`StdoutClosed`] for a closed pipe, otherwise the error
/// with context.
pub fn stdout_error(err: std::io::Error) -> anyhow::Error {
    if err.kind() == std::io::ErrorKind::BrokenPipe { anyhow::Error::new(StdoutClosed) } else { anyhow::Error::new(err).context("writing to stdout") }
}

/// Whether `e` (or anything in its chain) is a closed stdout.
pub fn is_stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<StdoutClosed>())
}

/// Writes `text` to stdout and flushes it (streamed text must appear as it is made).
pub fn write_flush(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(stdout_error)
}

/// Writes `args` to stdout.
pub fn write_fmt(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    std::io::stdout().lock().write_fmt(args).map_err(stdout_error)
}

/// Writes `args` to stderr, ignoring failure: a diagnostic that cannot be shown must not turn
/// into a panic or hide the real outcome.
pub fn note_fmt(args: std::fmt::Arguments<'_>) {
    let _ = std::io::stderr().lock().write_fmt(args);
}

/// `println!` that returns an error instead of panicking: `outln!(...)?`.
macro_rules! outln {
    () => { $crate::out::write_fmt(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::out::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` that returns an error instead of panicking: `out!(...)?`.
#[allow(unused_macros)]
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::write_fmt(format_args!($($arg)*)) };
}

/// `eprintln!` that never panics (stderr may be closed too).
macro_rules! note {
    () => { $crate::out::note_fmt(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::out::note_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `eprint!` that never panics.
macro_rules! note_raw {
    ($($arg:tt)*) => { $crate::out::note_fmt(format_args!($($arg)*)) };
}

#[allow(unused_imports)]
pub(crate) use {note, note_raw, out, outln};
