//! Decode tokens/s against thread count: where adding threads stops paying (usually when
//! memory bandwidth runs out). One line per configuration apart from its thread count.

use plotters::prelude::*;

use super::common::{Entry, FONT, Mark, color, legend, message, plot_err, plottable, svg, tick, zero_to};
use crate::error::ReportError;
use crate::schema::{Cell, Report};

pub(crate) const TITLE: &str = "Decode tokens/s vs threads";
const CHART: &str = "threads";

/// What makes a line: everything about a cell but its thread count.
fn key(c: &Cell) -> String {
    format!("{} · {} · {} · {}-bit{}", c.machine, c.model, c.device, c.ternary_layout, if c.int8_head { " · int8 head" } else { "" })
}

/// The threads chart as SVG.
pub fn threads_chart(r: &Report) -> Result<String, ReportError> {
    // Lines in the order their configurations first appear, each (threads, tokens/s).
    let mut lines: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for c in &r.cells {
        let Some((threads, tps)) = plottable(c.threads as f64).zip(plottable(c.decode_tokens_per_s.median)) else { continue };
        let k = key(c);
        let point = (threads, tps);
        match lines.iter_mut().find(|l| l.0 == k) {
            Some(l) => l.1.push(point),
            None => lines.push((k, vec![point])),
        }
    }
    for l in &mut lines {
        l.1.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    svg(CHART, |plot, side| {
        if lines.is_empty() {
            return message(CHART, plot, TITLE, &["No configuration has a decode measurement.".to_string()]);
        }
        let all = || lines.iter().flat_map(|l| l.1.iter());
        let (t0, t1) = all().fold((f64::INFINITY, 0.0f64), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
        // Half a thread of room each side, so one thread count still gives a range.
        let x = (t0 - 0.5).max(0.0)..t1 + 0.5;
        let y = zero_to(all().map(|p| p.1).fold(0.0, f64::max));
        let mut chart = ChartBuilder::on(plot).caption(TITLE, (FONT, 22)).margin(12).x_label_area_size(50).y_label_area_size(70).build_cartesian_2d(x, y).map_err(plot_err(CHART))?;
        chart
            .configure_mesh()
            .x_desc("threads")
            .y_desc("decode tokens/s")
            .x_label_formatter(&whole)
            .y_label_formatter(&tick)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .light_line_style(RGBColor(0xee, 0xee, 0xee))
            .draw()
            .map_err(plot_err(CHART))?;
        for (i, (_, pts)) in lines.iter().enumerate() {
            let c = color(i);
            chart.draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2))).map_err(plot_err(CHART))?;
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled()))).map_err(plot_err(CHART))?;
        }
        let entries: Vec<Entry> = lines.iter().enumerate().map(|(i, (k, _))| Entry { mark: Mark::Line, color: color(i), text: k.clone() }).collect();
        legend(CHART, side, &entries, &[])
    })
}

/// Thread counts are whole: ticks between them get no text.
fn whole(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-6 { format!("{}", v.round()) } else { String::new() }
}
