//! What the three charts share: the canvas, colors, the legend panel beside the plot,
//! the "nothing to show" message, and axis ranges that are always drawable.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::ReportError;
use crate::render::format::num;
use crate::schema::Report;

/// Canvas size; the page scales it to its width.
pub(crate) const WIDTH: u32 = 1000;
pub(crate) const HEIGHT: u32 = 540;
/// Width of the legend panel right of the plot.
pub(crate) const LEGEND_WIDTH: u32 = 330;
pub(crate) const FONT: &str = "sans-serif";

pub(crate) type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Tableau 10: distinguishable, and readable on white.
const PALETTE: [RGBColor; 10] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xed, 0xc9, 0x48),
    RGBColor(0xb0, 0x7a, 0xa1),
    RGBColor(0xff, 0x9d, 0xa7),
    RGBColor(0x9c, 0x75, 0x5f),
    RGBColor(0xba, 0xb0, 0xac),
];

pub(crate) fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Turns any plotters error into the crate's, naming the chart.
pub(crate) fn plot_err<E: std::fmt::Display>(chart: &'static str) -> impl Fn(E) -> ReportError {
    move |e| ReportError::Plot { chart, message: e.to_string() }
}

/// Draws on a fresh SVG canvas split into the plot (left) and the legend panel (right),
/// and returns the SVG text.
pub(crate) fn svg(chart: &'static str, draw: impl FnOnce(&Area, &Area) -> Result<(), ReportError>) -> Result<String, ReportError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err(chart))?;
        let (plot, legend) = root.split_horizontally(WIDTH - LEGEND_WIDTH);
        draw(&plot, &legend)?;
        root.present().map_err(plot_err(chart))?;
    }
    Ok(out)
}

/// A message in place of an empty plot, with the title above it.
pub(crate) fn message(chart: &'static str, area: &Area, title: &str, lines: &[String]) -> Result<(), ReportError> {
    let area = area.titled(title, (FONT, 20)).map_err(plot_err(chart))?;
    let (w, h) = area.dim_in_pixel();
    let style = TextStyle::from((FONT, 18).into_font()).color(&RGBColor(0x55, 0x55, 0x55)).pos(Pos::new(HPos::Center, VPos::Center));
    let top = h as i32 / 2 - 11 * lines.len() as i32;
    for (i, line) in lines.iter().enumerate() {
        area.draw(&Text::new(line.clone(), (w as i32 / 2, top + 22 * i as i32), style.clone())).map_err(plot_err(chart))?;
    }
    Ok(())
}

/// How a legend entry is drawn.
#[derive(Clone, Copy)]
pub(crate) enum Mark {
    Dot,
    Triangle,
    Line,
}

/// A legend entry: a mark in a color, and its text.
pub(crate) struct Entry {
    pub mark: Mark,
    pub color: RGBColor,
    pub text: String,
}

/// Legend entries from the top of the panel, then notes (wrapped) under them. Entries
/// past the panel's height are counted rather than drawn.
pub(crate) fn legend(chart: &'static str, area: &Area, entries: &[Entry], notes: &[String]) -> Result<(), ReportError> {
    const ROW: i32 = 22;
    // What fits the panel at this font size: entries are cut there, notes wrapped a
    // little shorter since wrapping at spaces leaves ragged ends.
    const CHARS: usize = 44;
    const NOTE_CHARS: usize = 40;
    let style = TextStyle::from((FONT, 16).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let (_, h) = area.dim_in_pixel();
    let note_lines: Vec<String> = notes.iter().flat_map(|n| wrap(n, NOTE_CHARS)).collect();
    let room = ((h as i32 - 50 - ROW * (note_lines.len() as i32 + 1)) / ROW).max(1) as usize;
    let mut y = 45;
    let shown = if entries.len() > room { room.saturating_sub(1) } else { entries.len() };
    for e in &entries[..shown] {
        let at = EmptyElement::at((8, y));
        let text = Text::new(truncate(&e.text, CHARS), (22, 0), style.clone());
        let drawn = match e.mark {
            Mark::Dot => area.draw(&(at + Circle::new((6, 0), 5, e.color.filled()) + text)),
            Mark::Triangle => area.draw(&(at + TriangleMarker::new((6, 0), 6, e.color.filled()) + text)),
            Mark::Line => area.draw(&(at + PathElement::new(vec![(0, 0), (14, 0)], e.color.stroke_width(3)) + text)),
        };
        drawn.map_err(plot_err(chart))?;
        y += ROW;
    }
    if shown < entries.len() {
        area.draw(&Text::new(format!("… and {} more", entries.len() - shown), (30, y), style.clone())).map_err(plot_err(chart))?;
        y += ROW;
    }
    y += ROW / 2;
    let note_style = style.color(&RGBColor(0x55, 0x55, 0x55));
    for line in note_lines {
        area.draw(&Text::new(line, (8, y), note_style.clone())).map_err(plot_err(chart))?;
        y += ROW;
    }
    Ok(())
}

/// Index of each machine id for colors: the report's machines in order, then any id a
/// cell names that no machine has.
pub(crate) fn machine_ids(r: &Report) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for id in r.machines.iter().map(|m| &m.id).chain(r.cells.iter().map(|c| &c.machine)) {
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    ids
}

pub(crate) fn machine_color(ids: &[String], id: &str) -> RGBColor {
    color(ids.iter().position(|m| m == id).unwrap_or(0))
}

/// A linear axis from zero to a little above the largest value (1 when there is none),
/// so points never sit on the frame and the range is never empty.
pub(crate) fn zero_to(max: f64) -> std::ops::Range<f64> {
    let top = max * 1.15;
    let top = if top.is_finite() && top > 0.0 {
        top
    } else if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    0.0..top
}

/// A logarithmic axis around positive values, a factor `pad` beyond the extremes.
pub(crate) fn log_around(values: impl Iterator<Item = f64>, pad: f64) -> std::ops::Range<f64> {
    let (lo, hi) = values.filter_map(positive).fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= 0.0 {
        return 0.1..10.0;
    }
    lo / pad..hi * pad
}

/// Values the charts take: plotters' tick search loops on ranges near the ends of f64
/// (denormals, overflow), and no measurement is that small or large, so values outside
/// these bounds are left out as broken.
const SMALLEST: f64 = 1e-12;
const LARGEST: f64 = 1e15;

/// A plottable positive value, or nothing.
pub(crate) fn positive(v: f64) -> Option<f64> {
    (v.is_finite() && (SMALLEST..LARGEST).contains(&v)).then_some(v)
}

/// A plottable value of a linear axis from zero: zero itself, or [`positive`].
pub(crate) fn plottable(v: f64) -> Option<f64> {
    if v == 0.0 { Some(0.0) } else { positive(v) }
}

/// Axis tick text: [`num`] without trailing zeros, so ticks read 5, 10, 15 rather than
/// 5.00, 10.0, 15.0.
pub(crate) fn tick(v: &f64) -> String {
    let s = num(*v);
    if s.contains('.') && !s.contains('e') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

fn truncate(s: &str, chars: usize) -> String {
    if s.chars().count() <= chars { s.to_string() } else { s.chars().take(chars - 1).chain(std::iter::once('…')).collect() }
}

/// Splits text into lines of at most `chars` characters at spaces (a longer word gets a
/// line of its own).
fn wrap(text: &str, chars: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > chars {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}
