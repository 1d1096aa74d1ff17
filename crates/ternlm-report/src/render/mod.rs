//! The report's readable forms: Markdown, a self-contained HTML page, and the SVG charts
//! the page embeds. Markdown and HTML say the same things: both are built from the
//! private `facts` module's rows, and differ only in markup.

pub mod html;
pub mod markdown;
pub mod plots;

mod facts;
mod format;

pub use html::html;
pub use markdown::markdown;
