//! `ternlm report merge`: several runs (usually from several machines) in one report, so
//! one page compares them.
//!
//! The merged report keeps the first run's settings. Each cell's energy and cost figures
//! were computed under its own run's settings when it was measured, and cells carry their
//! own numbers, so merging changes none of them.

use std::collections::{HashMap, HashSet};

use crate::error::ReportError;
use crate::json::check_report;
use crate::schema::Report;

/// Combines reports: machines and cells concatenated in the order given, machine ids made
/// unique (a clash gets `-2`, `-3`, ... and that run's cells follow the new id), `created`
/// the latest run's. Every report must be of this schema and version.
pub fn merge(reports: Vec<Report>) -> Result<Report, ReportError> {
    for r in &reports {
        check_report(r)?;
    }
    let mut iter = reports.into_iter();
    let first = iter.next().ok_or(ReportError::NothingToMerge)?;
    let mut merged = Report { machines: Vec::new(), cells: Vec::new(), ..first.clone() };
    let mut taken: HashSet<String> = HashSet::new();
    for r in std::iter::once(first).chain(iter) {
        // RFC 3339 UTC timestamps of one format sort as text, so the greatest is the latest.
        if r.created > merged.created {
            merged.created = r.created.clone();
        }
        let mut renamed: HashMap<String, String> = HashMap::new();
        for mut m in r.machines {
            let id = unique_id(&m.id, &taken);
            taken.insert(id.clone());
            // Only the first machine of an id in one run keeps its cells; a run naming two
            // machines alike is already ambiguous, and its cells stay with the first.
            renamed.entry(m.id.clone()).or_insert_with(|| id.clone());
            m.id = id;
            merged.machines.push(m);
        }
        for mut c in r.cells {
            if let Some(id) = renamed.get(&c.machine) {
                c.machine = id.clone();
            }
            merged.cells.push(c);
        }
    }
    Ok(merged)
}

/// `id`, or the first of `id-2`, `id-3`, ... that no machine has yet.
fn unique_id(id: &str, taken: &HashSet<String>) -> String {
    if !taken.contains(id) {
        return id.to_string();
    }
    (2usize..).map(|n| format!("{id}-{n}")).find(|c| !taken.contains(c)).unwrap_or_else(|| id.to_string())
}
