//! The charts draw whatever they are given: no cells, one cell, one thread count, zeros,
//! missing values, NaN and infinities, absurd magnitudes.

mod common;

use ternlm_report::render::plots::{charts, cost_chart, roofline_chart, threads_chart};
use ternlm_report::schema::Stat;

fn all_draw(r: &ternlm_report::Report) -> Vec<String> {
    let svgs = vec![cost_chart(r).expect("cost"), roofline_chart(r).expect("roofline"), threads_chart(r).expect("threads")];
    for s in &svgs {
        assert!(s.starts_with("<svg"), "{s}");
        assert!(s.trim_end().ends_with("</svg>"));
        assert!(!s.contains("NaN") && !s.contains(">inf") && !s.contains("\"inf"), "{s}");
    }
    svgs
}

#[test]
fn sample_draws_points_and_lines() {
    let svgs = all_draw(&common::sample());
    assert!(svgs[0].contains("#6") && svgs[0].contains("2 configurations without a cost"), "{}", svgs[0]);
    assert!(svgs[1].contains("<polyline"), "roofs are drawn");
    assert!(svgs[2].contains("epyc · bitnet-2b · cpu · 2-bit"));
    assert_eq!(charts(&common::sample()).expect("charts").len(), 3);
}

#[test]
fn no_cells_says_so() {
    let mut r = common::sample();
    r.cells.clear();
    let svgs = all_draw(&r);
    assert!(svgs[0].contains("No configuration was measured."));
    assert!(svgs[2].contains("No configuration has a decode measurement."));
    r.machines.clear();
    let svgs = all_draw(&r);
    assert!(svgs[1].contains("Nothing to show"));
}

#[test]
fn no_cost_says_so() {
    let mut r = common::sample();
    for c in &mut r.cells {
        c.decode_usd_per_mtok = None;
    }
    assert!(cost_chart(&r).expect("cost").contains("No configuration has a cost."));
}

#[test]
fn one_cell_one_thread_count() {
    let mut r = common::sample();
    r.cells.truncate(1);
    r.machines.truncate(1);
    r.machines[0].bandwidth.truncate(1);
    r.machines[0].int8_macs.truncate(1);
    all_draw(&r);
}

#[test]
fn broken_values_do_not_panic() {
    let weird = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -1.0, 1e-300, 1e300, f64::MAX, f64::MIN_POSITIVE];
    for &v in &weird {
        let mut r = common::sample();
        for c in &mut r.cells {
            c.decode_tokens_per_s = Stat::of(&[v]);
            c.decode_tokens_per_s.median = v;
            c.prefill_macs_per_s = v;
            c.decode_usd_per_mtok = Some(v);
            c.bytes_per_token = v;
            c.macs_per_token = v;
        }
        for m in &mut r.machines {
            for p in m.bandwidth.iter_mut().chain(m.int8_macs.iter_mut()) {
                p.per_s = v;
            }
        }
        all_draw(&r);
        ternlm_report::html(&r).expect("renders");
        ternlm_report::markdown(&r);
        // Only some values broken: the rest still draws.
        r.cells[0] = common::cell("epyc", "ok", 2, 10.0, Some(1.0), None);
        all_draw(&r);
    }
}

#[test]
fn threads_zero_and_huge() {
    let mut r = common::sample();
    r.cells[0].threads = 0;
    r.cells[1].threads = usize::MAX;
    r.settings.prompt_tokens = 0;
    all_draw(&r);
}
