//! One cell of a report: a model loaded with one set of options on one device at one thread
//! count, timed (prefill, time to first token, decode), with its memory, traffic, energy
//! and cost per token worked out. `ternlm report` runs each cell in a process of its own so
//! that the peak resident memory is that cell's alone.

use std::path::{Path, PathBuf};

use ternlm::{DeviceChoice, LoadOptions, Model, TernaryLayout};

use crate::cost::{CostInputs, usd_per_mtok};
use crate::probe::energy::EnergyMeter;
use crate::schema::{Cell, Stat};

/// What to measure.
#[derive(Clone, Debug)]
pub struct CellSpec {
    pub model_path: PathBuf,
    pub ternary_layout: TernaryLayout,
    pub int8_head: bool,
    pub device: DeviceChoice,
    pub threads: usize,
}

/// How to measure it, and the machine's ceilings to compare with.
#[derive(Clone, Debug)]
pub struct Plan {
    pub machine: String,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub reps: usize,
    /// `--watts`: used for energy when no counter can be read.
    pub watts: Option<f64>,
    pub cost: CostInputs,
    /// Read bandwidth and int8 MAC rate measured at this cell's thread count.
    pub bandwidth_ceiling: Option<f64>,
    pub macs_ceiling: Option<f64>,
    /// Text to measure perplexity on, and the chunks of 512 tokens to score at most.
    pub quality: Option<(String, usize)>,
    /// The command that measures this cell again.
    pub command: String,
}

/// Peak resident memory of this process (VmHWM), 0 where it cannot be read.
pub fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()).map_or(0, |kb| kb * 1024)
}

/// The `--ternary-layout` value of a layout.
pub fn layout_name(l: TernaryLayout) -> &'static str {
    match l {
        TernaryLayout::Bits2 => "2",
        TernaryLayout::Bits1_6 => "1.6",
    }
}

/// Loads the model and measures the cell; `meter` reads energy around the decode test.
pub fn measure_cell(spec: &CellSpec, plan: &Plan, meter: Option<&EnergyMeter>) -> ternlm::Result<Cell> {
    let opts = LoadOptions { threads: spec.threads, ternary_layout: spec.ternary_layout, int8_head: spec.int8_head, device: spec.device };
    let model = Model::load(&spec.model_path, &opts)?;
    let (p, n, reps) = (plan.prompt_tokens.max(1), plan.gen_tokens.max(1), plan.reps.max(1));
    let prefill = ternlm::timing::prefill_rates(&model, reps, p)?;
    let ttft = ternlm::timing::first_token_secs(&model, reps, p)?;
    let before = meter.map(|m| (m.read(), std::time::Instant::now()));
    let decode = ternlm::timing::decode_rates(&model, reps, n)?;
    // The decode test ran n tokens reps + 1 times (one warm-up run).
    let energy = match (meter, before) {
        (Some(m), Some((r0, t0))) => {
            let joules = m.joules_between(&r0, &m.read());
            let secs = t0.elapsed().as_secs_f64();
            Some((joules / (n * (reps + 1)) as f64, joules / secs.max(1e-9)))
        }
        _ => None,
    };
    let decode = Stat::of(&decode);
    let prefill = Stat::of(&prefill);
    let cfg = &model.config;
    // Decode reads the weights once a token, and on average half the cache the test fills.
    let bytes_per_token = model.weight_bytes_per_step() as f64 + (n / 2) as f64 * cfg.kv_bytes_per_position() as f64;
    let macs_per_token = cfg.macs_per_token(n / 2) as f64;
    let decode_bytes_per_s = bytes_per_token * decode.median;
    // A prompt's tokens see positions 0..p: the average is p / 2.
    let prefill_macs_per_s = cfg.macs_per_token(p / 2) as f64 * prefill.median;
    let (joules_per_token, watts) = match energy {
        Some((j, w)) => (Some(j), Some(w)),
        None => (plan.watts.map(|w| w / decode.median.max(1e-12)), plan.watts),
    };
    let usd = plan.cost.usd_per_hour(watts).and_then(|h| usd_per_mtok(h, decode.median));
    // The machine's ceilings are the CPU's: they say nothing about a GPU cell.
    let on_cpu = model.backend_name() == "cpu";
    let (bandwidth_ceiling, macs_ceiling) = if on_cpu { (plan.bandwidth_ceiling, plan.macs_ceiling) } else { (None, None) };
    let perplexity = match &plan.quality {
        Some((text, chunks)) => {
            let tokens = model.tokenizer.encode(text, false, false)?;
            Some(ternlm::perplexity::perplexity(&model, &tokens, 512.min(tokens.len()), Some(*chunks), &mut |_, _, _| {})?.perplexity)
        }
        None => None,
    };
    Ok(Cell {
        machine: plan.machine.clone(),
        model: model.name(),
        model_path: display(&spec.model_path),
        model_bytes: model.file_bytes(),
        params: model.param_count(),
        device: model.device().to_string(),
        ternary_layout: layout_name(spec.ternary_layout).to_string(),
        int8_head: spec.int8_head,
        threads: spec.threads,
        decode_tokens_per_s: decode,
        prefill_tokens_per_s: prefill,
        ttft_s: Stat::of(&ttft),
        peak_rss_bytes: peak_rss_bytes(),
        bytes_per_token,
        macs_per_token,
        decode_bytes_per_s,
        bandwidth_ceiling,
        bandwidth_share: bandwidth_ceiling.filter(|c| *c > 0.0).map(|c| decode_bytes_per_s / c),
        prefill_macs_per_s,
        compute_share: macs_ceiling.filter(|c| *c > 0.0).map(|c| prefill_macs_per_s / c),
        decode_joules_per_token: joules_per_token,
        decode_usd_per_mtok: usd,
        perplexity,
        command: plan.command.clone(),
    })
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
