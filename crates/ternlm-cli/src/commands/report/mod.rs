//! `ternlm report`: measures a matrix of configurations on this machine (models x ternary
//! layouts x int8 head x devices x thread counts) and writes what it found as Markdown (on
//! stdout), JSON and a self-contained HTML page; `ternlm report merge` combines reports of
//! several machines. Each cell runs in a child process of its own (this binary, with a
//! hidden `--cell-job`), so the peak memory reported is that cell's alone; the command that
//! measures a cell again is printed beside it.

mod child;

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use ternlm_report::cost::CostInputs;
use ternlm_report::probe::energy::EnergyMeter;
use ternlm_report::schema::{Cell, EnergySource, Report, SCHEMA_NAME, SCHEMA_VERSION, Settings};

use crate::cli::{ReportAction, ReportArgs, ReportOutputArgs};
use crate::out::{note, outln};

pub use child::CellJob;

pub fn report(a: ReportArgs) -> Result<ExitCode> {
    if let Some(job) = &a.cell_job {
        return child::run_job(job);
    }
    if let Some(ReportAction::Merge(m)) = &a.action {
        return merge(m);
    }
    check(&a)?;
    let paths: Vec<std::path::PathBuf> = if a.models.is_empty() { vec![crate::load::model_path(None)?] } else { a.models.iter().map(|m| crate::load::model_path(Some(m))).collect::<Result<_>>()? };
    let threads = thread_counts(&a);
    let max_threads = threads.iter().copied().max().unwrap_or(1);
    let mut probe_threads: Vec<usize> = (1..=max_threads).collect();
    probe_threads.dedup();
    note!("ternlm report: probing this machine (read bandwidth and int8 rate at 1..{max_threads} threads)");
    let mut machine = ternlm_report::probe::machine::probe(a.label.as_deref(), &probe_threads, env!("TERNLM_GIT_COMMIT"), &mut |what| note!("  {what}"));
    // Listing adapters starts a graphics API: only where a GPU may exist or one was asked for.
    let wants_gpu = a.device.iter().any(|d| *d != ternlm::DeviceChoice::Cpu);
    let listed = if wants_gpu || ternlm::devices::may_have_hardware_gpu() { ternlm::devices() } else { Vec::new() };
    machine.gpus = listed.into_iter().map(|d| format!("gpu:{} {} ({}, {}{})", d.index, d.name, d.backend, d.device_type, if d.software { ", software" } else { "" })).collect();
    let meter = EnergyMeter::open();
    let energy = match (&meter, a.watts) {
        (Some(_), _) => EnergySource::Measured,
        (None, Some(_)) => EnergySource::FromWatts,
        (None, None) => EnergySource::None,
    };
    let cost = cost_inputs(&a);
    let power_known = meter.is_some() || a.watts.is_some();
    let settings = Settings {
        prompt_tokens: a.n_prompt,
        gen_tokens: a.n_gen,
        reps: a.reps,
        energy,
        watts: a.watts,
        cost_basis: cost.basis(power_known),
        price_per_hour: cost.price_per_hour,
        kwh_price: cost.kwh_price,
        hardware_cost: cost.hardware_cost,
        lifetime_years: cost.lifetime_years,
        utilization: cost.utilization,
        // Fixed only when the power is: a given price, or owned hardware at --watts.
        usd_per_hour: if meter.is_some() && cost.price_per_hour.is_none() { None } else { cost.usd_per_hour(a.watts) },
        quality_file: a.quality.as_ref().map(|p| p.display().to_string()),
    };
    let mut jobs = Vec::new();
    for path in &paths {
        for &layout in &a.ternary_layout {
            for &int8 in &a.int8_head {
                for device in &a.device {
                    for &t in &threads {
                        jobs.push(CellJob::new(&a, path, layout.into(), int8.on(), *device, t, &machine, &cost));
                    }
                }
            }
        }
    }
    let mut cells: Vec<Cell> = Vec::with_capacity(jobs.len());
    let started = std::time::Instant::now();
    for (i, job) in jobs.iter().enumerate() {
        note!("[{}/{}] {}", i + 1, jobs.len(), job.describe());
        match child::spawn(job) {
            Ok(cell) => {
                note!(
                    "      prefill {:.1} t/s, decode {:.1} t/s, first token {:.0} ms, peak {:.0} MB ({:.0} s so far)",
                    cell.prefill_tokens_per_s.median,
                    cell.decode_tokens_per_s.median,
                    cell.ttft_s.median * 1e3,
                    cell.peak_rss_bytes as f64 / 1e6,
                    started.elapsed().as_secs_f64()
                );
                cells.push(cell);
            }
            Err(e) => {
                note!("      failed: {e:#}");
                note!("      (again: {})", job.command);
            }
        }
    }
    if cells.is_empty() {
        bail!("no cell could be measured");
    }
    let report = Report { schema: SCHEMA_NAME.into(), version: SCHEMA_VERSION, created: now_rfc3339(), machines: vec![machine], settings, cells };
    write_outputs(&report, &a.out)?;
    Ok(ExitCode::SUCCESS)
}

/// Flags that cannot make a report.
fn check(a: &ReportArgs) -> Result<()> {
    if a.reps == 0 || a.n_prompt == 0 || a.n_gen == 0 {
        bail!("--reps, --n-prompt and --n-gen must be at least 1");
    }
    if a.threads.contains(&0) {
        bail!("--threads must be at least 1");
    }
    for (flag, v) in [("--watts", a.watts), ("--price-per-hour", a.price_per_hour), ("--hardware-cost", a.hardware_cost)] {
        if let Some(v) = v
            && !(v.is_finite() && v >= 0.0)
        {
            bail!("{flag} must be a number >= 0, not {v}");
        }
    }
    let sane = a.kwh_price.is_finite() && a.kwh_price >= 0.0 && a.lifetime_years.is_finite() && a.lifetime_years > 0.0 && a.utilization > 0.0 && a.utilization <= 1.0;
    if !sane {
        bail!("--kwh-price must be >= 0, --lifetime-years > 0 and --utilization in (0, 1]");
    }
    if let Some(q) = &a.quality
        && !q.is_file()
    {
        bail!("--quality {}: no such file", q.display());
    }
    check_outputs(&a.out)
}

/// Fails before any work when an output file cannot be written.
fn check_outputs(o: &ReportOutputArgs) -> Result<()> {
    for p in [&o.output, &o.md, &o.html].into_iter().flatten() {
        super::check_writable(p)?;
    }
    Ok(())
}

/// `-t`, or 1 and the default thread count.
fn thread_counts(a: &ReportArgs) -> Vec<usize> {
    let mut t = if a.threads.is_empty() { vec![1, ternlm::default_threads()] } else { a.threads.clone() };
    t.sort_unstable();
    t.dedup();
    t
}

fn cost_inputs(a: &ReportArgs) -> CostInputs {
    CostInputs { price_per_hour: a.price_per_hour, kwh_price: a.kwh_price, hardware_cost: a.hardware_cost, lifetime_years: a.lifetime_years, utilization: a.utilization }
}

/// Markdown to stdout (or the JSON with `--json`), and the files asked for.
fn write_outputs(report: &Report, out: &ReportOutputArgs) -> Result<()> {
    let (json_path, md_path, html_path) = (out.output.as_deref(), out.md.as_deref(), out.html.as_deref());
    let json = serde_json::to_string_pretty(report)?;
    let md = ternlm_report::render::markdown(report);
    if let Some(p) = json_path {
        std::fs::write(p, &json).with_context(|| format!("writing {}", p.display()))?;
        note!("ternlm report: wrote {}", p.display());
    }
    if let Some(p) = md_path {
        std::fs::write(p, &md).with_context(|| format!("writing {}", p.display()))?;
        note!("ternlm report: wrote {}", p.display());
    }
    if let Some(p) = html_path {
        let html = ternlm_report::render::html(report)?;
        std::fs::write(p, html).with_context(|| format!("writing {}", p.display()))?;
        note!("ternlm report: wrote {}", p.display());
    }
    if out.json {
        outln!("{json}")?;
    } else {
        outln!("{md}")?;
    }
    Ok(())
}

/// `ternlm report merge A.json B.json ...`.
fn merge(m: &crate::cli::ReportMergeArgs) -> Result<ExitCode> {
    if m.files.len() < 2 {
        bail!("report merge takes at least two report files");
    }
    let mut reports = Vec::with_capacity(m.files.len());
    for f in &m.files {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{} is not a ternlm report (not UTF-8 text)", f.display()))?;
        reports.push(ternlm_report::parse(&text).with_context(|| format!("{} is not a ternlm report", f.display()))?);
    }
    check_outputs(&m.out)?;
    let merged = ternlm_report::merge::merge(reports)?;
    write_outputs(&merged, &m.out)?;
    Ok(ExitCode::SUCCESS)
}

/// The current time as RFC 3339 UTC.
fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

/// `secs` after the Unix epoch as RFC 3339 UTC (no date crate needed for this).
fn rfc3339(secs: u64) -> String {
    let rem = secs % 86_400;
    format!("{}T{:02}:{:02}:{:02}Z", crate::civil_date::civil_date(secs / 86_400), rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_civil() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(20_789 * 86_400 + 8 * 3600 + 50 * 60 + 7), "2026-12-02T08:50:07Z");
    }
}
