//! Decode tokens/s against dollars per million tokens: up and to the left is fast and
//! cheap. One point per configuration, colored by machine.

use plotters::prelude::*;

use super::common::{Entry, FONT, Mark, legend, machine_color, machine_ids, message, plot_err, plottable, svg, tick, zero_to};
use crate::error::ReportError;
use crate::schema::Report;

pub(crate) const TITLE: &str = "Decode tokens/s vs $ per million tokens";
const CHART: &str = "cost";

/// The cost chart as SVG. Configurations without a cost are left out (the legend says
/// how many); when none has one, the chart says so instead.
pub fn cost_chart(r: &Report) -> Result<String, ReportError> {
    let ids = machine_ids(r);
    // (table number, machine, $/Mtok, tokens/s)
    let points: Vec<(usize, &str, f64, f64)> = r
        .cells
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let usd = plottable(c.decode_usd_per_mtok?)?;
            let tps = plottable(c.decode_tokens_per_s.median)?;
            Some((i + 1, c.machine.as_str(), usd, tps))
        })
        .collect();
    let left_out = r.cells.len() - points.len();
    svg(CHART, |plot, side| {
        if points.is_empty() {
            let why = if r.cells.is_empty() {
                vec!["No configuration was measured.".to_string()]
            } else {
                vec!["No configuration has a cost.".to_string(), "Give --price-per-hour (a rented machine) or".to_string(), "--hardware-cost (owned hardware) to see one.".to_string()]
            };
            return message(CHART, plot, TITLE, &why);
        }
        let x = zero_to(points.iter().map(|p| p.2).fold(0.0, f64::max));
        let y = zero_to(points.iter().map(|p| p.3).fold(0.0, f64::max));
        let mut chart = ChartBuilder::on(plot).caption(TITLE, (FONT, 22)).margin(12).x_label_area_size(50).y_label_area_size(70).build_cartesian_2d(x, y).map_err(plot_err(CHART))?;
        chart
            .configure_mesh()
            .x_desc("$ per million decoded tokens")
            .y_desc("decode tokens/s")
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .light_line_style(RGBColor(0xee, 0xee, 0xee))
            .draw()
            .map_err(plot_err(CHART))?;
        chart
            .draw_series(
                points.iter().map(|&(n, m, usd, tps)| EmptyElement::at((usd, tps)) + Circle::new((0, 0), 5, machine_color(&ids, m).filled()) + Text::new(format!("#{n}"), (7, -18), (FONT, 14))),
            )
            .map_err(plot_err(CHART))?;
        let entries: Vec<Entry> = ids.iter().map(|id| Entry { mark: Mark::Dot, color: machine_color(&ids, id), text: id.clone() }).collect();
        let mut notes = vec!["Labels are the results table's #.".to_string()];
        if left_out > 0 {
            notes.push(format!("{left_out} configuration{} without a cost left out.", if left_out == 1 { "" } else { "s" }));
        }
        legend(CHART, side, &entries, &notes)
    })
}
