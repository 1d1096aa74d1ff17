//! What the Markdown and the HTML both show, as plain-text rows: the machine facts, the
//! settings (defaults included), the results table and the commands that repeat each
//! cell. Markup (and its escaping) is the renderers' business; this module only words
//! and formats.

use super::format::{MISSING, binary_size, median, num, opt, scaled, spread, usd};
use crate::schema::{CostBasis, EnergySource, Machine, Report, Settings, ThreadPoint};

/// A labelled fact: `("CPU", "AMD EPYC 9654")`.
pub(crate) type Fact = (&'static str, String);

/// The title of every rendering.
pub(crate) const TITLE: &str = "ternlm hardware report";

/// The line under the title: when, which layout, how much.
pub(crate) fn summary(r: &Report) -> String {
    format!("Created {} · schema {} version {} · {} machine{} · {} configuration{}", r.created, r.schema, r.version, r.machines.len(), plural(r.machines.len()), r.cells.len(), plural(r.cells.len()))
}

/// Said under the settings of a merged report, whose runs may have had other settings.
pub(crate) fn merged_note(r: &Report) -> Option<&'static str> {
    (r.machines.len() > 1)
        .then_some("This report merges several runs: the settings shown are the first run's. Each configuration's energy and cost were computed under its own run's settings when it was measured.")
}

/// The facts about one machine.
pub(crate) fn machine(m: &Machine) -> Vec<Fact> {
    let caches = m.caches.iter().map(|c| format!("L{} {} {} (shared by {})", c.level, c.kind, binary_size(c.size_bytes), c.shared_by)).collect::<Vec<_>>();
    vec![
        ("CPU", m.cpu_model.clone()),
        ("ISA used (best available)", format!("{} ({})", m.isa, m.isa_best)),
        ("CPU flags", list_or(&m.cpu_flags, MISSING)),
        ("Cores", format!("{} physical, {} usable CPU{}", m.physical_cores, m.usable_cpus, plural(m.usable_cpus))),
        ("Caches", list_or(&caches, MISSING)),
        ("Memory", binary_size(m.memory_bytes)),
        ("Read bandwidth (GB/s)", per_thread(&m.bandwidth, 1e-9)),
        ("Int8 GMAC/s", per_thread(&m.int8_macs, 1e-9)),
        ("GPUs", list_or(&m.gpus, "none")),
        ("OS", m.os.clone()),
        ("ternlm", format!("{} (commit {})", m.ternlm_version, m.commit)),
    ]
}

/// The settings as used, every default shown.
pub(crate) fn settings(s: &Settings) -> Vec<Fact> {
    let energy = match (s.energy, s.watts) {
        (EnergySource::FromWatts, Some(w)) => format!("{} ({} W)", s.energy.label(), num(w)),
        _ => s.energy.label().to_string(),
    };
    let basis = match s.cost_basis {
        CostBasis::PricePerHour => format!("rented: {} per hour (--price-per-hour)", usd(s.price_per_hour)),
        CostBasis::Owned => {
            format!("owned: hardware {} over {} years at {}% utilization, plus electricity at {}/kWh", usd(s.hardware_cost), num(s.lifetime_years), num(s.utilization * 100.0), usd(Some(s.kwh_price)))
        }
        CostBasis::None => "none (give --price-per-hour, or --hardware-cost for owned hardware)".to_string(),
    };
    vec![
        ("Prompt tokens", s.prompt_tokens.to_string()),
        ("Generated tokens", s.gen_tokens.to_string()),
        ("Repetitions", s.reps.to_string()),
        ("Energy per token", energy),
        ("Watts (--watts)", opt(s.watts)),
        ("Cost basis", basis),
        ("Price per hour (--price-per-hour)", usd(s.price_per_hour)),
        ("Electricity (--kwh-price, USD/kWh)", usd(Some(s.kwh_price))),
        ("Hardware cost (--hardware-cost)", usd(s.hardware_cost)),
        ("Lifetime (--lifetime-years)", num(s.lifetime_years)),
        ("Utilization (--utilization)", format!("{}%", num(s.utilization * 100.0))),
        ("Cost of an hour generating", usd(s.usd_per_hour)),
        ("Perplexity text (--quality)", s.quality_file.clone().unwrap_or_else(|| MISSING.to_string())),
    ]
}

/// The results table's column heads; the energy column names its source.
pub(crate) fn table_head(s: &Settings) -> Vec<String> {
    let fixed = ["#", "Machine", "Model", "Device", "Layout (bits)", "Int8 head", "Threads", "Decode t/s median (min..max)", "Prefill t/s", "TTFT ms", "Peak RSS MB", "MB/token", "% of bandwidth"];
    let mut head: Vec<String> = fixed.iter().map(|h| h.to_string()).collect();
    head.push(format!("J/token ({})", s.energy.label()));
    head.push("$/Mtok".to_string());
    head.push("Perplexity".to_string());
    head
}

/// One row per cell, in [`table_head`]'s order; `#` is the number the charts label
/// points with.
pub(crate) fn table_rows(r: &Report) -> Vec<Vec<String>> {
    r.cells
        .iter()
        .enumerate()
        .map(|(i, c)| {
            vec![
                (i + 1).to_string(),
                c.machine.clone(),
                c.model.clone(),
                c.device.clone(),
                c.ternary_layout.clone(),
                if c.int8_head { "yes" } else { "no" }.to_string(),
                c.threads.to_string(),
                spread(&c.decode_tokens_per_s, 1.0),
                median(&c.prefill_tokens_per_s, 1.0),
                median(&c.ttft_s, 1e3),
                num(c.peak_rss_bytes as f64 / 1e6),
                num(c.bytes_per_token / 1e6),
                scaled(c.bandwidth_share, 100.0),
                opt(c.decode_joules_per_token),
                opt(c.decode_usd_per_mtok),
                opt(c.perplexity),
            ]
        })
        .collect()
}

/// `(number, command)` for every cell.
pub(crate) fn commands(r: &Report) -> Vec<(usize, String)> {
    r.cells.iter().enumerate().map(|(i, c)| (i + 1, c.command.clone())).collect()
}

/// `1 thread: 20.1, 8 threads: 95.0` of a per-thread measurement times `scale`.
fn per_thread(points: &[ThreadPoint], scale: f64) -> String {
    let parts: Vec<String> = points.iter().map(|p| format!("{} thread{}: {}", p.threads, plural(p.threads), num(p.per_s * scale))).collect();
    list_or(&parts, MISSING)
}

fn list_or(items: &[String], empty: &str) -> String {
    if items.is_empty() { empty.to_string() } else { items.join(", ") }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
