//! How a download shows itself on stderr: indicatif bars on a terminal; plain lines when
//! stderr is a file or a pipe (a start line, a progress line every few seconds or each tenth
//! of the file, an end line), so that a CI log never looks hung; or nothing (`pull -q`).
//! Nothing here writes to stdout, which belongs to the command's own output.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// How downloads are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Live bars (a terminal).
    Bars,
    /// Plain lines at a bounded rate (a log).
    Lines,
    /// Nothing but warnings such as a resumed connection.
    Quiet,
}

impl Progress {
    /// Bars when stderr is a terminal, lines otherwise.
    pub fn for_stderr() -> Self {
        if std::io::stderr().is_terminal() { Self::Bars } else { Self::Lines }
    }

    /// Whether anything besides warnings is shown.
    pub fn shown(self) -> bool {
        self != Self::Quiet
    }
}

/// `true` picks what suits stderr and `false` is quiet, so callers that only know whether
/// to show progress (tests, other crates) need not name a mode.
impl From<bool> for Progress {
    fn from(show: bool) -> Self {
        if show { Self::for_stderr() } else { Self::Quiet }
    }
}

/// One line on stderr. A closed stderr must not fail or panic a download, so errors are
/// dropped.
pub(crate) fn note(msg: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

/// Bytes for people: B, kB, MB or GB (decimal, as download sizes are usually quoted).
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

/// `url` without credentials, query or fragment: an index URL may carry `user:token@`
/// (pip's own convention) and logs are often public.
pub(crate) fn redact(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let host_end = url[scheme_end..].find('/').map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..host_end].rfind('@') {
        Some(at) => format!("{}{}", &url[..scheme_end], &url[scheme_end + at + 1..]),
        None => url.to_string(),
    }
}

/// At most this long between progress lines, so that a slow download still shows signs
/// of life.
pub(crate) const LINE_EVERY: Duration = Duration::from_secs(3);

/// What one transfer is called in its lines: "downloading"/"downloaded", or
/// "extracting"/"extracted".
#[derive(Clone, Copy, Debug)]
pub(crate) struct Verbs {
    pub ing: &'static str,
    pub ed: &'static str,
}

pub(crate) const DOWNLOAD: Verbs = Verbs { ing: "downloading", ed: "downloaded" };
pub(crate) const EXTRACT: Verbs = Verbs { ing: "extracting", ed: "extracted" };

/// The lines of one transfer. Pure (the caller passes the clock) so that the throttling can
/// be tested without waiting.
#[derive(Debug)]
pub(crate) struct LineLog {
    name: String,
    verbs: Verbs,
    total: Option<u64>,
    started: Instant,
    last_line: Instant,
    /// Bytes that arrived in this run (not counting a resumed part), for the rate.
    received: u64,
    /// The next tenth of `total` (1..=9) whose crossing is worth a line.
    next_tenth: u64,
}

impl LineLog {
    pub fn new(name: &str, verbs: Verbs, total: Option<u64>, pos: u64, now: Instant) -> Self {
        Self { name: name.to_string(), verbs, total, started: now, last_line: now, received: 0, next_tenth: tenth(pos, total).map_or(1, |t| t + 1) }
    }

    pub fn start_line(&self, from: &str, pos: u64) -> String {
        let size = self.total.map_or_else(String::new, |t| format!(" ({})", human_bytes(t)));
        let resume = if pos > 0 { format!(", resuming at {}", human_bytes(pos)) } else { String::new() };
        format!("ternlm: {} {}{size} from {from}{resume}", self.verbs.ing, self.name)
    }

    /// A jump (a restart from zero, or a resume): the next line is due at the tenth after
    /// `pos`.
    pub fn reset(&mut self, pos: u64) {
        self.next_tenth = tenth(pos, self.total).map_or(1, |t| t + 1);
    }

    /// `n` more bytes have arrived and the transfer stands at `pos`: the progress line to
    /// print, when one is due (3 s since the last line, or a new tenth crossed, whichever
    /// comes first; never at the very end, which the end line reports).
    pub fn advance(&mut self, n: u64, pos: u64, now: Instant) -> Option<String> {
        self.received += n;
        if self.total.is_some_and(|t| pos >= t) {
            return None;
        }
        let t = tenth(pos, self.total);
        let crossed = t.is_some_and(|t| t >= self.next_tenth);
        if !crossed && now.duration_since(self.last_line) < LINE_EVERY {
            return None;
        }
        self.last_line = now;
        if let Some(t) = t {
            self.next_tenth = t + 1;
        }
        let rate = self.rate(now);
        Some(match self.total {
            Some(total) => format!("ternlm: {}: {} of {} ({}%), {rate}", self.name, human_bytes(pos), human_bytes(total), percent(pos, total)),
            None => format!("ternlm: {}: {}, {rate}", self.name, human_bytes(pos)),
        })
    }

    /// The line for a finished, verified transfer of `size` bytes; `check` says how it was
    /// verified ("sha256 verified").
    pub fn end_line(&self, size: u64, now: Instant, check: &str) -> String {
        let secs = now.duration_since(self.started).as_secs_f64();
        format!("ternlm: {} {} ({} in {secs:.1} s), {check}", self.verbs.ed, self.name, human_bytes(size))
    }

    fn rate(&self, now: Instant) -> String {
        let secs = now.duration_since(self.started).as_secs_f64();
        if secs <= 0.0 {
            return "starting".to_string();
        }
        format!("{}/s", human_bytes((self.received as f64 / secs) as u64))
    }
}

/// Which tenth of `total` `pos` is in (0..=10), when the total is known.
fn tenth(pos: u64, total: Option<u64>) -> Option<u64> {
    total.filter(|&t| t > 0).map(|t| (u128::from(pos) * 10 / u128::from(t)).min(10) as u64)
}

fn percent(pos: u64, total: u64) -> u64 {
    if total == 0 { 100 } else { (u128::from(pos) * 100 / u128::from(total)).min(100) as u64 }
}

/// The template of a transfer's bar on its own.
pub(crate) const BAR: &str = "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";

/// A bar for one transfer, shown with `template`, when the mode is [`Progress::Bars`], else
/// a hidden one (which costs nothing to tick). With `above` (a [`MultiProgress`] and one of
/// its bars), the bar joins it just above that bar, before it is first drawn.
pub(crate) fn bar(mode: Progress, len: Option<u64>, msg: &str, template: &str, above: Option<(&MultiProgress, &ProgressBar)>) -> ProgressBar {
    if mode != Progress::Bars {
        return ProgressBar::hidden();
    }
    let pb = len.map_or_else(ProgressBar::no_length, ProgressBar::new);
    let pb = match above {
        Some((multi, below)) => multi.insert_before(below, pb),
        None => pb,
    };
    pb.set_style(style(template));
    pb.set_message(msg.to_string());
    pb
}

pub(crate) fn style(t: &str) -> ProgressStyle {
    ProgressStyle::with_template(t).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}

/// One transfer as the user sees it: a bar, lines, or nothing.
pub(crate) struct Meter {
    bar: ProgressBar,
    lines: Option<LineLog>,
    pos: u64,
}

impl Meter {
    /// Starts showing a transfer of `name` (`total` bytes when known) from `from`, already
    /// at `pos` (a resumed part). `bar` is the caller's (hidden unless the mode is bars).
    pub fn new(mode: Progress, bar: ProgressBar, name: &str, verbs: Verbs, total: Option<u64>, from: &str, pos: u64) -> Self {
        let lines = (mode == Progress::Lines).then(|| LineLog::new(name, verbs, total, pos, Instant::now()));
        if let Some(l) = &lines {
            note(&l.start_line(from, pos));
        }
        bar.set_position(pos);
        Self { bar, lines, pos }
    }

    /// The transfer now stands at `pos` (a retry resumed or restarted it).
    pub fn set_position(&mut self, pos: u64) {
        self.pos = pos;
        self.bar.set_position(pos);
        if let Some(l) = &mut self.lines {
            l.reset(pos);
        }
    }

    pub fn inc(&mut self, n: u64) {
        self.pos += n;
        self.bar.inc(n);
        if let Some(line) = self.lines.as_mut().and_then(|l| l.advance(n, self.pos, Instant::now())) {
            note(&line);
        }
    }

    /// The transfer is complete and verified (`check` says how).
    pub fn finish(&self, check: &str) {
        self.bar.finish_and_clear();
        if let Some(l) = &self.lines {
            note(&l.end_line(self.pos, Instant::now(), check));
        }
    }

    /// The transfer failed; the error says why.
    pub fn abandon(&self) {
        self.bar.abandon();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;

    #[test]
    fn lines_come_each_tenth_or_every_three_seconds_whichever_first() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut log = LineLog::new("m.gguf", DOWNLOAD, Some(100 * MB), 0, t0);
        assert_eq!(log.start_line("http://h/m.gguf", 0), "ternlm: downloading m.gguf (100.0 MB) from http://h/m.gguf");
        // Fast: nothing until the first tenth, then one line per tenth, however many chunks.
        assert_eq!(log.advance(5 * MB, 5 * MB, at(100)), None);
        assert_eq!(log.advance(5 * MB, 10 * MB, at(200)).as_deref(), Some("ternlm: m.gguf: 10.0 MB of 100.0 MB (10%), 50.0 MB/s"));
        assert_eq!(log.advance(MB, 11 * MB, at(250)), None);
        assert_eq!(log.advance(8 * MB, 19 * MB, at(300)), None);
        // A chunk that jumps over several tenths gives one line, and the next is due at the
        // tenth after where it landed.
        assert!(log.advance(26 * MB, 45 * MB, at(400)).is_some_and(|l| l.contains("45.0 MB of 100.0 MB (45%)")));
        assert_eq!(log.advance(4 * MB, 49 * MB, at(500)), None);
        assert!(log.advance(MB, 50 * MB, at(600)).is_some());
        // Slow: a line every 3 s even within one tenth.
        assert_eq!(log.advance(MB, 51 * MB, at(3_500)), None);
        assert!(log.advance(MB, 52 * MB, at(3_600)).is_some_and(|l| l.contains("(52%)")));
        assert_eq!(log.advance(MB, 53 * MB, at(6_000)), None);
        assert!(log.advance(MB, 54 * MB, at(6_600)).is_some());
        // The end is the end line's to report.
        assert_eq!(log.advance(46 * MB, 100 * MB, at(6_700)), None);
        assert_eq!(log.end_line(100 * MB, at(6_100), "sha256 verified"), "ternlm: downloaded m.gguf (100.0 MB in 6.1 s), sha256 verified");
    }

    #[test]
    fn unknown_sizes_and_resumes_have_lines_too() {
        let t0 = Instant::now();
        let mut log = LineLog::new("w.whl", DOWNLOAD, None, 0, t0);
        assert_eq!(log.start_line("http://h/w.whl", 0), "ternlm: downloading w.whl from http://h/w.whl");
        assert_eq!(log.advance(50 * MB, 50 * MB, t0 + Duration::from_secs(2)), None);
        assert_eq!(log.advance(10 * MB, 60 * MB, t0 + Duration::from_secs(3)).as_deref(), Some("ternlm: w.whl: 60.0 MB, 20.0 MB/s"));

        // A part from an earlier run at 35%: the next line is at 40%, and the rate counts only
        // what arrived now.
        let mut log = LineLog::new("m.gguf", DOWNLOAD, Some(100 * MB), 35 * MB, t0);
        assert!(log.start_line("http://h/m.gguf", 35 * MB).ends_with(", resuming at 35.0 MB"));
        assert_eq!(log.advance(4 * MB, 39 * MB, t0 + Duration::from_secs(1)), None);
        assert!(log.advance(MB, 40 * MB, t0 + Duration::from_secs(1)).is_some_and(|l| l.ends_with("(40%), 5.0 MB/s")));
        // A server that ignores the range starts over: lines follow the new position.
        log.reset(0);
        assert!(log.advance(10 * MB, 10 * MB, t0 + Duration::from_secs(2)).is_some_and(|l| l.contains("(10%)")));
    }

    #[test]
    fn sizes_read_for_people_and_urls_lose_secrets() {
        assert_eq!(human_bytes(51_200), "51.2 kB");
        assert_eq!(human_bytes(98_362_432), "98.4 MB");
        assert_eq!(human_bytes(1_200_000_000), "1.20 GB");
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(redact("https://user:tok@example.org/simple/x/a.whl?sig=1#sha256=ab"), "https://example.org/simple/x/a.whl");
        assert_eq!(redact("http://127.0.0.1:8/a@b/c"), "http://127.0.0.1:8/a@b/c");
    }
}
