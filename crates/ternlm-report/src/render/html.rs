//! The report as one self-contained HTML page: inline CSS and inline SVG charts, no
//! scripts and nothing fetched, so the file can be mailed, archived or opened offline and
//! shows the same everywhere.

use std::fmt::Write;

use super::facts;
use super::plots::charts;
use crate::error::ReportError;
use crate::schema::Report;

const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; margin: 2rem auto; max-width: 1400px; padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2rem; }
.summary { color: #555; margin-top: 0; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; }
.note { color: #555; font-style: italic; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; }
th { background: #f3f3f3; text-align: left; vertical-align: bottom; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1.5rem 0; }
figure svg { max-width: 100%; height: auto; border: 1px solid #ddd; }
code { font-size: 0.85rem; background: #f5f5f5; padding: 0.1rem 0.3rem; word-break: break-all; }
";

/// The report as an HTML page: the Markdown's content (machines, settings, results table,
/// commands) plus the three charts.
pub fn html(r: &Report) -> Result<String, ReportError> {
    let charts = charts(r)?;
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(facts::TITLE)
    );
    let _ = writeln!(out, "<h1>{}</h1>\n<p class=\"summary\">{}</p>", esc(facts::TITLE), esc(&facts::summary(r)));
    for m in &r.machines {
        let _ = writeln!(out, "<h2>Machine <code>{}</code></h2>", esc(&m.id));
        fact_list(&mut out, &facts::machine(m));
    }
    let _ = writeln!(out, "<h2>Settings</h2>");
    fact_list(&mut out, &facts::settings(&r.settings));
    if let Some(note) = facts::merged_note(r) {
        let _ = writeln!(out, "<p class=\"note\">{}</p>", esc(note));
    }
    let _ = writeln!(out, "<h2>Charts</h2>");
    for c in &charts {
        // plotters escapes the text it writes into the SVG, so it is inserted as is.
        let _ = writeln!(out, "<figure aria-label=\"{}\">\n{}\n</figure>", esc(c.title), c.svg);
    }
    let _ = writeln!(out, "<h2>Results</h2>");
    if r.cells.is_empty() {
        let _ = writeln!(out, "<p>No configuration was measured.</p>");
    } else {
        results(&mut out, r);
    }
    out.push_str("</body>\n</html>\n");
    Ok(out)
}

fn fact_list(out: &mut String, rows: &[facts::Fact]) {
    out.push_str("<dl class=\"facts\">\n");
    for (label, value) in rows {
        let _ = writeln!(out, "<dt>{}</dt><dd>{}</dd>", esc(label), esc(value));
    }
    out.push_str("</dl>\n");
}

fn results(out: &mut String, r: &Report) {
    out.push_str("<div class=\"scroll\"><table>\n<thead><tr>");
    for h in facts::table_head(&r.settings) {
        let _ = write!(out, "<th>{}</th>", esc(&h));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in facts::table_rows(r) {
        out.push_str("<tr>");
        for (i, v) in row.iter().enumerate() {
            // Columns from `Threads` on are numbers, aligned right.
            let class = if i == 0 || i >= 6 { " class=\"n\"" } else { "" };
            let _ = write!(out, "<td{class}>{}</td>", esc(v));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table></div>\n<p class=\"note\">Missing values print as -.</p>\n<h3>Commands</h3>\n<ol>\n");
    for (_, cmd) in facts::commands(r) {
        let _ = writeln!(out, "<li><code>{}</code></li>", esc(&cmd));
    }
    out.push_str("</ol>\n");
}

/// Text as HTML: the five characters that could open markup or end an attribute.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}
