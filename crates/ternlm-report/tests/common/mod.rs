//! A sample report for the tests: two machines with plausible measurements, cells with
//! and without energy and cost, as `ternlm report` would write them.

#![allow(dead_code)] // Each test file uses part of it.

use ternlm_report::schema::{Cache, Cell, CostBasis, EnergySource, Machine, Report, SCHEMA_NAME, SCHEMA_VERSION, Settings, Stat, ThreadPoint};

pub fn machine(id: &str, cpu: &str, cores: usize, gbps: f64, gmacs: f64) -> Machine {
    let threads = [1, cores / 2, cores];
    Machine {
        id: id.to_string(),
        cpu_model: cpu.to_string(),
        isa: "avx2".to_string(),
        isa_best: "avx512".to_string(),
        cpu_flags: vec!["avx2".to_string(), "avx512_vnni".to_string()],
        physical_cores: cores,
        usable_cpus: cores * 2,
        caches: vec![
            Cache { level: 1, kind: "data".to_string(), size_bytes: 48 * 1024, shared_by: 2 },
            Cache { level: 2, kind: "unified".to_string(), size_bytes: 2 * 1024 * 1024, shared_by: 2 },
            Cache { level: 3, kind: "unified".to_string(), size_bytes: 32 * 1024 * 1024, shared_by: cores * 2 },
        ],
        memory_bytes: 64 * 1024 * 1024 * 1024,
        // Bandwidth saturates; compute scales with threads.
        bandwidth: threads.iter().map(|&t| ThreadPoint { threads: t, per_s: gbps * 1e9 * (t as f64 / cores as f64).sqrt() }).collect(),
        int8_macs: threads.iter().map(|&t| ThreadPoint { threads: t, per_s: gmacs * 1e9 * t as f64 / cores as f64 }).collect(),
        gpus: vec![],
        os: "Linux 6.1.0 x86_64".to_string(),
        ternlm_version: "0.1.0".to_string(),
        commit: "7f3a5e9".to_string(),
    }
}

pub fn settings() -> Settings {
    Settings {
        prompt_tokens: 512,
        gen_tokens: 128,
        reps: 3,
        energy: EnergySource::FromWatts,
        watts: Some(65.0),
        cost_basis: CostBasis::PricePerHour,
        price_per_hour: Some(0.68),
        kwh_price: 0.3,
        hardware_cost: None,
        lifetime_years: 4.0,
        utilization: 0.5,
        usd_per_hour: Some(0.68),
        quality_file: Some("wiki.test.raw".to_string()),
    }
}

/// A cell of a 2B ternary model (0.5 GB of weights read per token).
pub fn cell(machine: &str, model: &str, threads: usize, tps: f64, usd: Option<f64>, joules: Option<f64>) -> Cell {
    // A 360M model reads and multiplies less per token than a 2B one.
    let (bytes, macs) = if model.contains("360m") { (0.09e9, 0.36e9) } else { (0.52e9, 2.4e9) };
    let prefill = tps * 2.0;
    Cell {
        machine: machine.to_string(),
        model: model.to_string(),
        model_path: format!("/models/{model}.gguf"),
        model_bytes: 560_000_000,
        params: 2_400_000_000,
        device: "cpu".to_string(),
        ternary_layout: "2".to_string(),
        int8_head: !model.contains("360m"),
        threads,
        decode_tokens_per_s: Stat::of(&[tps * 0.97, tps, tps * 1.02]),
        prefill_tokens_per_s: Stat::of(&[prefill]),
        ttft_s: Stat::of(&[512.0 / prefill]),
        peak_rss_bytes: 812_000_000,
        bytes_per_token: bytes,
        macs_per_token: macs,
        decode_bytes_per_s: bytes * tps,
        bandwidth_ceiling: Some(40e9),
        bandwidth_share: Some(bytes * tps / 40e9),
        prefill_macs_per_s: macs * prefill,
        compute_share: Some(0.4),
        decode_joules_per_token: joules,
        decode_usd_per_mtok: usd,
        perplexity: Some(9.87),
        command: format!("ternlm report --model /models/{model}.gguf --threads {threads} --cells 1"),
    }
}

pub fn sample() -> Report {
    Report {
        schema: SCHEMA_NAME.to_string(),
        version: SCHEMA_VERSION,
        created: "2026-12-02T08:50:00Z".to_string(),
        machines: vec![machine("epyc", "AMD EPYC 9654 96-Core Processor", 16, 80.0, 900.0), machine("laptop", "Intel(R) Core(TM) i7-1260P", 4, 30.0, 150.0)],
        settings: settings(),
        cells: vec![
            cell("epyc", "bitnet-2b", 1, 9.5, Some(19.9), Some(6.8)),
            cell("epyc", "bitnet-2b", 8, 41.2, Some(4.58), Some(1.58)),
            cell("epyc", "bitnet-2b", 16, 55.7, Some(3.39), Some(1.17)),
            cell("laptop", "bitnet-2b", 1, 6.1, None, None),
            cell("laptop", "bitnet-2b", 4, 17.3, None, Some(3.75)),
            cell("laptop", "smollm2-360m", 4, 88.0, Some(2.15), None),
        ],
    }
}
