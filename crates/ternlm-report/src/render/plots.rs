//! The report's three charts as SVG strings, drawn with `plotters`' SVG backend (text is
//! SVG `<text>`, so neither building nor viewing needs font libraries):
//!
//! - [`cost_chart`]: decode tokens/s against $/Mtok, one point per configuration;
//! - [`roofline_chart`]: achieved GMAC/s against arithmetic intensity, under each
//!   machine's bandwidth and int8 compute ceilings;
//! - [`threads_chart`]: decode tokens/s against thread count, one line per configuration.
//!
//! Points are labelled with the results table's `#`. Any input draws: missing, zero,
//! negative or non-finite values are left out, and a chart with nothing to show says why.

mod common;
mod cost;
mod roofline;
mod threads;

pub use cost::cost_chart;
pub use roofline::roofline_chart;
pub use threads::threads_chart;

use crate::error::ReportError;
use crate::schema::Report;

/// A chart's title and its SVG.
#[derive(Clone, Debug)]
pub struct Chart {
    pub title: &'static str,
    pub svg: String,
}

/// All three charts, in the order the HTML page shows them.
pub fn charts(r: &Report) -> Result<Vec<Chart>, ReportError> {
    Ok(vec![Chart { title: cost::TITLE, svg: cost_chart(r)? }, Chart { title: roofline::TITLE, svg: roofline_chart(r)? }, Chart { title: threads::TITLE, svg: threads_chart(r)? }])
}
