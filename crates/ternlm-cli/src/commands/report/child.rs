//! One cell of `ternlm report` in a process of its own: the parent serializes a
//! [`CellJob`], starts this binary with `report --cell-job JSON`, and reads the measured
//! cell back as one JSON line on the child's stdout.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use ternlm::{DeviceChoice, TernaryLayout};
use ternlm_report::cost::CostInputs;
use ternlm_report::measure::{CellSpec, Plan, layout_name, measure_cell};
use ternlm_report::probe::energy::EnergyMeter;
use ternlm_report::schema::{Cell, Machine};

use crate::cli::ReportArgs;
use crate::out::outln;

/// Everything a child needs to measure one cell.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CellJob {
    pub model: String,
    pub layout: String,
    pub int8_head: bool,
    pub device: String,
    pub threads: usize,
    pub machine: String,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub reps: usize,
    pub watts: Option<f64>,
    pub price_per_hour: Option<f64>,
    pub kwh_price: f64,
    pub hardware_cost: Option<f64>,
    pub lifetime_years: f64,
    pub utilization: f64,
    pub bandwidth_ceiling: Option<f64>,
    pub macs_ceiling: Option<f64>,
    pub quality: Option<String>,
    pub quality_chunks: usize,
    /// A command that measures this cell again (as a one-cell report).
    pub command: String,
}

fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c)) { s.to_string() } else { format!("'{}'", s.replace('\'', "'\\''")) }
}

impl CellJob {
    #[allow(clippy::too_many_arguments)]
    pub fn new(a: &ReportArgs, model: &Path, layout: TernaryLayout, int8_head: bool, device: DeviceChoice, threads: usize, machine: &Machine, cost: &CostInputs) -> CellJob {
        let at = |points: &[ternlm_report::schema::ThreadPoint]| points.iter().find(|p| p.threads == threads).map(|p| p.per_s);
        let model = model.display().to_string();
        let mut cmd = vec![
            "ternlm".to_string(),
            "report".into(),
            "-m".into(),
            shell_word(&model),
            "--ternary-layout".into(),
            layout_name(layout).into(),
            "--int8-head".into(),
            if int8_head { "on" } else { "off" }.into(),
            "--device".into(),
            device.to_string(),
            "-t".into(),
            threads.to_string(),
            "-p".into(),
            a.n_prompt.to_string(),
            "-n".into(),
            a.n_gen.to_string(),
            "-r".into(),
            a.reps.to_string(),
        ];
        let mut opt = |flag: &str, v: Option<String>| {
            if let Some(v) = v {
                cmd.push(flag.to_string());
                cmd.push(shell_word(&v));
            }
        };
        opt("--watts", a.watts.map(|v| v.to_string()));
        opt("--price-per-hour", a.price_per_hour.map(|v| v.to_string()));
        opt("--hardware-cost", a.hardware_cost.map(|v| v.to_string()));
        opt("--quality", a.quality.as_ref().map(|p| p.display().to_string()));
        CellJob {
            model,
            layout: layout_name(layout).into(),
            int8_head,
            device: device.to_string(),
            threads,
            machine: machine.id.clone(),
            prompt_tokens: a.n_prompt,
            gen_tokens: a.n_gen,
            reps: a.reps,
            watts: a.watts,
            price_per_hour: cost.price_per_hour,
            kwh_price: cost.kwh_price,
            hardware_cost: cost.hardware_cost,
            lifetime_years: cost.lifetime_years,
            utilization: cost.utilization,
            bandwidth_ceiling: at(&machine.bandwidth),
            macs_ceiling: at(&machine.int8_macs),
            quality: a.quality.as_ref().map(|p| p.display().to_string()),
            quality_chunks: a.quality_chunks,
            command: cmd.join(" "),
        }
    }

    /// "MODEL, layout 2, int8 head off, cpu, 2 threads".
    pub fn describe(&self) -> String {
        let name = Path::new(&self.model).file_name().map_or_else(|| self.model.clone(), |n| n.to_string_lossy().into_owned());
        format!("{name}, layout {}, int8 head {}, {}, {} thread{}", self.layout, if self.int8_head { "on" } else { "off" }, self.device, self.threads, if self.threads == 1 { "" } else { "s" })
    }
}

/// Runs `job` in a child process and returns its cell.
pub fn spawn(job: &CellJob) -> Result<Cell> {
    let exe = std::env::current_exe().context("finding this program to measure a cell")?;
    let out = Command::new(exe)
        .args(["report", "--cell-job", &serde_json::to_string(job)?])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .output()
        .context("starting the measuring process")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| l.contains("error")).or_else(|| err.lines().last()).unwrap_or("no message");
        bail!("{}", last.trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{')).context("the measuring process printed no cell")?;
    serde_json::from_str(line).context("the measuring process printed a malformed cell")
}

/// The child's side: measure and print the cell as one JSON line.
pub fn run_job(json: &str) -> Result<ExitCode> {
    let job: CellJob = serde_json::from_str(json).context("a malformed --cell-job")?;
    let layout = match job.layout.as_str() {
        "1.6" => TernaryLayout::Bits1_6,
        _ => TernaryLayout::Bits2,
    };
    let device: DeviceChoice = job.device.parse().map_err(anyhow::Error::msg)?;
    let spec = CellSpec { model_path: job.model.clone().into(), ternary_layout: layout, int8_head: job.int8_head, device, threads: job.threads };
    let quality = match &job.quality {
        Some(p) => Some((std::fs::read_to_string(p).with_context(|| format!("reading {p}"))?, job.quality_chunks)),
        None => None,
    };
    let cost = CostInputs { price_per_hour: job.price_per_hour, kwh_price: job.kwh_price, hardware_cost: job.hardware_cost, lifetime_years: job.lifetime_years, utilization: job.utilization };
    let plan = Plan {
        machine: job.machine.clone(),
        prompt_tokens: job.prompt_tokens,
        gen_tokens: job.gen_tokens,
        reps: job.reps,
        watts: job.watts,
        cost,
        bandwidth_ceiling: job.bandwidth_ceiling,
        macs_ceiling: job.macs_ceiling,
        quality,
        command: job.command.clone(),
    };
    let meter = EnergyMeter::open();
    let cell = measure_cell(&spec, &plan, meter.as_ref()).with_context(|| format!("measuring {}", job.describe()))?;
    outln!("{}", serde_json::to_string(&cell)?)?;
    Ok(ExitCode::SUCCESS)
}
