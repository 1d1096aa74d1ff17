//! `report merge`: ids stay unique and cells follow their machine's new id.

mod common;

use ternlm_report::{ReportError, merge};

#[test]
fn same_machine_ids_become_unique() {
    let a = common::sample();
    let mut b = common::sample();
    b.created = "2026-12-03T10:00:00Z".to_string();
    let mut c = common::sample();
    c.created = "2026-11-30T10:00:00Z".to_string();
    let m = merge(vec![a.clone(), b, c]).expect("merges");
    let ids: Vec<&str> = m.machines.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["epyc", "laptop", "epyc-2", "laptop-2", "epyc-3", "laptop-3"]);
    assert_eq!(m.cells.len(), 3 * a.cells.len());
    // The second run's cells moved with their machines.
    let n = a.cells.len();
    assert_eq!(m.cells[n].machine, "epyc-2");
    assert_eq!(m.cells[n + 3].machine, "laptop-2");
    assert_eq!(m.cells[2 * n].machine, "epyc-3");
    assert_eq!(m.created, "2026-12-03T10:00:00Z");
    assert_eq!(m.settings, a.settings);
}

#[test]
fn a_suffix_already_taken_is_skipped() {
    let mut a = common::sample();
    a.machines[1].id = "epyc-2".to_string();
    for c in a.cells.iter_mut().filter(|c| c.machine == "laptop") {
        c.machine = "epyc-2".to_string();
    }
    let m = merge(vec![a, common::sample()]).expect("merges");
    let ids: Vec<&str> = m.machines.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["epyc", "epyc-2", "epyc-3", "laptop"]);
}

#[test]
fn refuses_nothing_and_other_versions() {
    assert!(matches!(merge(vec![]), Err(ReportError::NothingToMerge)));
    let mut b = common::sample();
    b.version = 99;
    assert!(matches!(merge(vec![common::sample(), b]), Err(ReportError::WrongVersion { .. })));
    let mut b = common::sample();
    b.schema = "other".to_string();
    assert!(matches!(merge(vec![common::sample(), b]), Err(ReportError::WrongSchema { .. })));
}

#[test]
fn merged_report_renders_with_a_note() {
    let m = merge(vec![common::sample(), common::sample()]).expect("merges");
    let md = ternlm_report::markdown(&m);
    assert!(md.contains("merges several runs"));
    assert!(md.contains("## Machine `epyc-2`"));
    assert!(ternlm_report::html(&m).is_ok());
}
