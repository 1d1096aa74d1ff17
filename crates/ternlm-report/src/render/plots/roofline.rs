//! The roofline: how close decode and prefill come to what the machine allows. A kernel
//! doing `I` multiply-accumulates per byte read can reach at most
//! `min(bandwidth × I, int8 MAC rate)`; decode (one token per weight read) sits far left
//! under the bandwidth slope, prefill (a prompt's tokens per weight read) further right
//! toward the compute ceiling.
//!
//! Ceilings are each machine's measurements at its largest thread count. Prefill's bytes
//! per token are approximated by `bytes_per_token / prompt_tokens` (one read of the
//! weights serves the whole prompt; the KV cache's share is small at these lengths).

use plotters::prelude::*;

use super::common::{Entry, FONT, Mark, legend, log_around, machine_color, machine_ids, message, plot_err, positive, svg, tick};
use crate::error::ReportError;
use crate::render::format::num;
use crate::schema::{Machine, Report, ThreadPoint};

pub(crate) const TITLE: &str = "Roofline: achieved GMAC/s vs arithmetic intensity";
const CHART: &str = "roofline";

/// A machine's ceilings: read bandwidth in bytes/s and int8 MAC/s, either may be unknown.
struct Roof<'a> {
    id: &'a str,
    bytes_per_s: Option<f64>,
    macs_per_s: Option<f64>,
    threads: usize,
}

impl Roof<'_> {
    /// GMAC/s allowed at `intensity` MAC/byte.
    fn at(&self, intensity: f64) -> Option<f64> {
        let slope = self.bytes_per_s.map(|b| b * intensity / 1e9);
        let flat = self.macs_per_s.map(|m| m / 1e9);
        match (slope, flat) {
            (Some(s), Some(f)) => Some(s.min(f)),
            (s, f) => s.or(f),
        }
    }

    /// Intensity where the slope meets the flat ceiling.
    fn ridge(&self) -> Option<f64> {
        positive(self.macs_per_s? / self.bytes_per_s?)
    }
}

/// The measurement at the largest thread count with a usable value.
fn at_most_threads(points: &[ThreadPoint]) -> Option<(usize, f64)> {
    points.iter().filter_map(|p| positive(p.per_s).map(|v| (p.threads, v))).max_by_key(|p| p.0)
}

fn roof(m: &Machine) -> Option<Roof<'_>> {
    let bw = at_most_threads(&m.bandwidth);
    let macs = at_most_threads(&m.int8_macs);
    let threads = bw.map_or(0, |b| b.0).max(macs.map_or(0, |c| c.0));
    (bw.is_some() || macs.is_some()).then(|| Roof { id: &m.id, bytes_per_s: bw.map(|b| b.1), macs_per_s: macs.map(|c| c.1), threads })
}

/// One plotted point: table number, machine, intensity (MAC/byte), GMAC/s, prefill or not.
type Point<'a> = (usize, &'a str, f64, f64, bool);

fn points(r: &Report) -> Vec<Point<'_>> {
    let prompt = r.settings.prompt_tokens.max(1) as f64;
    let mut out = Vec::new();
    for (i, c) in r.cells.iter().enumerate() {
        let decode = positive(c.macs_per_token / c.bytes_per_token).zip(positive(c.decode_tokens_per_s.median * c.macs_per_token / 1e9));
        if let Some((x, y)) = decode {
            out.push((i + 1, c.machine.as_str(), x, y, false));
        }
        let prefill = positive(c.macs_per_token * prompt / c.bytes_per_token).zip(positive(c.prefill_macs_per_s / 1e9));
        if let Some((x, y)) = prefill {
            out.push((i + 1, c.machine.as_str(), x, y, true));
        }
    }
    out
}

/// The roofline chart as SVG.
pub fn roofline_chart(r: &Report) -> Result<String, ReportError> {
    let ids = machine_ids(r);
    let roofs: Vec<Roof> = r.machines.iter().filter_map(roof).collect();
    let pts = points(r);
    svg(CHART, |plot, side| {
        if pts.is_empty() && roofs.is_empty() {
            return message(CHART, plot, TITLE, &["Nothing to show: no ceilings were measured".to_string(), "and no configuration has MACs and bytes per token.".to_string()]);
        }
        let x = log_around(pts.iter().map(|p| p.2).chain(roofs.iter().filter_map(Roof::ridge)), 4.0);
        let y = log_around(pts.iter().map(|p| p.3).chain(roofs.iter().filter_map(|f| f.macs_per_s.map(|m| m / 1e9))).chain(roofs.iter().filter_map(|f| f.at(x.end))), 3.0);
        let mut chart = ChartBuilder::on(plot)
            .caption(TITLE, (FONT, 22))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(x.clone().log_scale(), y.clone().log_scale())
            .map_err(plot_err(CHART))?;
        chart
            .configure_mesh()
            .x_desc("arithmetic intensity (MAC per byte read)")
            .y_desc("GMAC/s")
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .light_line_style(RGBColor(0xee, 0xee, 0xee))
            .draw()
            .map_err(plot_err(CHART))?;
        for f in &roofs {
            // On log-log axes the roof is two straight pieces, so its corners suffice: the
            // plot's edges, the ridge, and where the slope enters and leaves the y range
            // (rounding may put those a hair outside; they are pulled back onto the edge).
            let mut xs = vec![x.start, x.end];
            xs.extend(f.ridge());
            xs.extend(f.bytes_per_s.into_iter().flat_map(|b| [y.start * 1e9 / b, y.end * 1e9 / b]));
            xs.retain(|v| x.contains(v) || *v == x.end);
            xs.sort_by(f64::total_cmp);
            let inside = |g: &f64| *g >= y.start * (1.0 - 1e-9) && *g <= y.end * (1.0 + 1e-9);
            let line: Vec<(f64, f64)> = xs.into_iter().filter_map(|v| f.at(v).filter(inside).map(|g| (v, g.clamp(y.start, y.end)))).collect();
            chart.draw_series(LineSeries::new(line, machine_color(&ids, f.id).stroke_width(2))).map_err(plot_err(CHART))?;
        }
        let label = |n: usize| Text::new(format!("#{n}"), (7, -18), (FONT, 14));
        chart
            .draw_series(pts.iter().filter(|p| !p.4).map(|&(n, m, px, py, _)| EmptyElement::at((px, py)) + Circle::new((0, 0), 5, machine_color(&ids, m).filled()) + label(n)))
            .map_err(plot_err(CHART))?;
        chart
            .draw_series(pts.iter().filter(|p| p.4).map(|&(n, m, px, py, _)| EmptyElement::at((px, py)) + TriangleMarker::new((0, 0), 6, machine_color(&ids, m).filled()) + label(n)))
            .map_err(plot_err(CHART))?;
        let mut entries: Vec<Entry> =
            roofs.iter().map(|f| Entry { mark: Mark::Line, color: machine_color(&ids, f.id), text: format!("{}: {} GB/s, {} GMAC/s", f.id, ceiling(f.bytes_per_s), ceiling(f.macs_per_s)) }).collect();
        let black = RGBColor(0x33, 0x33, 0x33);
        entries.push(Entry { mark: Mark::Dot, color: black, text: "decode".to_string() });
        entries.push(Entry { mark: Mark::Triangle, color: black, text: "prefill".to_string() });
        let threads: Vec<String> = roofs.iter().map(|f| format!("{} at {} threads", f.id, f.threads)).collect();
        let mut lines = "Lines: each machine's ceiling, min(bandwidth × intensity, int8 MAC rate), at its largest thread count".to_string();
        if !threads.is_empty() {
            lines += &format!(" ({})", threads.join(", "));
        }
        lines.push('.');
        let notes = vec![lines, "Labels are the results table's #; colors are machines.".to_string()];
        legend(CHART, side, &entries, &notes)
    })
}

fn ceiling(v: Option<f64>) -> String {
    v.map_or_else(|| "?".to_string(), |v| num(v / 1e9))
}
