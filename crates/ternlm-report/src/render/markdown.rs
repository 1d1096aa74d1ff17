//! The report as Markdown (GitHub's dialect: pipe tables), for pasting into issues and
//! pull requests. It says what the HTML page says, without the charts.

use std::fmt::Write;

use super::facts;
use crate::schema::Report;

/// The report as Markdown: title, each machine, the settings (defaults shown), a table
/// with one row per configuration, and the command that measures each again.
pub fn markdown(r: &Report) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(out, "# {}\n\n{}\n", facts::TITLE, text(&facts::summary(r)));
    for m in &r.machines {
        let _ = writeln!(out, "## Machine {}\n", code(&m.id));
        facts_list(&mut out, &facts::machine(m));
    }
    let _ = writeln!(out, "## Settings\n");
    facts_list(&mut out, &facts::settings(&r.settings));
    if let Some(note) = facts::merged_note(r) {
        let _ = writeln!(out, "{note}\n");
    }
    let _ = writeln!(out, "## Results\n");
    if r.cells.is_empty() {
        let _ = writeln!(out, "No configuration was measured.\n");
        return out;
    }
    let head = facts::table_head(&r.settings);
    table_row(&mut out, &head);
    table_row(&mut out, &head.iter().enumerate().map(|(i, _)| if i <= 6 { ":--" } else { "--:" }.to_string()).collect::<Vec<_>>());
    for row in facts::table_rows(r) {
        table_row(&mut out, &row);
    }
    let _ = writeln!(out, "\nMissing values print as `-`.\n\n### Commands\n");
    for (n, cmd) in facts::commands(r) {
        let _ = writeln!(out, "{n}. {}", code(&cmd));
    }
    out
}

fn facts_list(out: &mut String, rows: &[facts::Fact]) {
    for (label, value) in rows {
        let _ = writeln!(out, "- **{label}:** {}", text(value));
    }
    out.push('\n');
}

fn table_row(out: &mut String, cells: &[String]) {
    let cells: Vec<String> = cells.iter().map(|c| text(c)).collect();
    let _ = writeln!(out, "| {} |", cells.join(" | "));
}

/// Text made inert in Markdown: a pipe would split a table cell, `<` could open raw HTML
/// (a model named `<script>` must print, not run), and a line break would end the row.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '|' => out.push_str("\\|"),
            '\\' => out.push_str("\\\\"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            _ => out.push(ch),
        }
    }
    out
}

/// An inline code span that holds any text: fenced by one more backtick than the longest
/// run inside it, padded when the text starts or ends with one. Used outside tables only.
fn code(s: &str) -> String {
    let s = s.replace(['\n', '\r'], " ");
    let mut longest = 0;
    let mut run = 0;
    for ch in s.chars() {
        run = if ch == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') { " " } else { "" };
    format!("{fence}{pad}{s}{pad}{fence}")
}
