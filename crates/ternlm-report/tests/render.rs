//! Markdown and HTML say what was measured, escape what they were given, and the page
//! is self-contained.

mod common;

use ternlm_report::{html, markdown};

#[test]
fn markdown_has_the_key_values() {
    let md = markdown(&common::sample());
    for want in [
        "# ternlm hardware report",
        "## Machine `epyc`",
        "AMD EPYC 9654 96-Core Processor",
        "avx2 (avx512)",
        "16 physical, 32 usable CPUs",
        "L1 data 48.0 KiB (shared by 2)",
        "Memory:** 64.0 GiB",
        "16 threads: 80.0",
        "16 threads: 900",
        "Linux 6.1.0 x86_64",
        "0.1.0 (commit 7f3a5e9)",
        "from --watts (65.0 W)",
        "rented: $0.68 per hour",
        "J/token (from --watts)",
        "| 3 | epyc | bitnet-2b | cpu | 2 | yes | 16 | 55.7 (54.0..56.8) |",
        "| 3.39 | 9.87 |",
        "ternlm report --model /models/bitnet-2b.gguf --threads 16 --cells 1",
    ] {
        assert!(md.contains(want), "missing {want:?} in\n{md}");
    }
    // The laptop's single-thread cell has neither energy nor cost.
    let row = md.lines().find(|l| l.starts_with("| 4 |")).expect("row 4");
    assert!(row.ends_with("| - | - | 9.87 |"), "{row}");
}

#[test]
fn markdown_defaults_are_shown() {
    let mut r = common::sample();
    r.settings.energy = ternlm_report::schema::EnergySource::None;
    r.settings.cost_basis = ternlm_report::schema::CostBasis::None;
    r.settings.usd_per_hour = None;
    let md = markdown(&r);
    assert!(md.contains("Energy per token:** not available"), "{md}");
    assert!(md.contains("Cost basis:** none"), "{md}");
    assert!(md.contains("Lifetime (--lifetime-years):** 4.00"), "{md}");
    assert!(md.contains("Utilization (--utilization):** 50.0%"), "{md}");
}

fn hostile() -> ternlm_report::Report {
    let mut r = common::sample();
    r.cells[0].model = "<script>alert(1)</script> | x & \"y\"".to_string();
    r.machines[0].cpu_model = "<img src=x onerror=alert(1)>".to_string();
    r
}

#[test]
fn markdown_escapes_markup() {
    let md = markdown(&hostile());
    assert!(!md.contains("<script>"), "{md}");
    assert!(!md.contains("<img"), "{md}");
    assert!(md.contains("&lt;script&gt;alert(1)&lt;/script&gt; \\| x &amp;"), "{md}");
}

#[test]
fn html_is_a_self_contained_page() {
    let page = html(&common::sample()).expect("renders");
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.trim_end().ends_with("</html>"));
    assert_eq!(page.matches("<svg").count(), 3, "three charts");
    assert_eq!(page.matches("</svg>").count(), 3);
    // Nothing fetched or run: no scripts, stylesheets, images or fonts from elsewhere.
    // (The SVG namespace URI is a name, not a reference, and is allowed.)
    for bad in ["<script", "<link", "<img", "<iframe", "src=", "href=", "url(", "@import"] {
        assert!(!page.contains(bad), "page contains {bad:?}");
    }
    let refs = page.matches("http://").count() + page.matches("https://").count();
    assert_eq!(refs, page.matches("xmlns=\"http://www.w3.org/2000/svg\"").count(), "only SVG namespaces");
    for want in ["AMD EPYC 9654", "55.7 (54.0..56.8)", "<th>$/Mtok</th>", "--threads 16 --cells 1", "Roofline"] {
        assert!(page.contains(want), "missing {want:?}");
    }
}

#[test]
fn html_escapes_text() {
    let page = html(&hostile()).expect("renders");
    assert!(!page.contains("<script"), "a model name must not become a script");
    assert!(!page.contains("<img"));
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt; | x &amp; &quot;y&quot;"));
}

/// With TERNLM_REPORT_SAMPLE_HTML set, writes the sample page there for a look in a
/// browser (`chromium --headless --screenshot`).
#[test]
fn sample_page_for_a_browser() {
    let Ok(path) = std::env::var("TERNLM_REPORT_SAMPLE_HTML") else { return };
    let merged = ternlm_report::merge(vec![common::sample()]).expect("merges");
    std::fs::write(&path, html(&merged).expect("renders")).expect("writes");
    if let Ok(md) = std::env::var("TERNLM_REPORT_SAMPLE_MD") {
        std::fs::write(md, markdown(&merged)).expect("writes");
    }
}

#[test]
fn empty_report_renders() {
    let mut r = common::sample();
    r.cells.clear();
    r.machines.clear();
    let page = html(&r).expect("renders");
    assert_eq!(page.matches("<svg").count(), 3);
    assert!(page.contains("No configuration was measured."));
    assert!(markdown(&r).contains("No configuration was measured."));
}
