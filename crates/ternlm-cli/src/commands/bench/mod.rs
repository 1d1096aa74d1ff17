//! `ternlm bench`: llama-bench-style timing of prompt processing (one batch of `-p` tokens)
//! and generation (`-n` tokens one at a time), with repetitions, median and spread. For
//! generation it also reports the bytes each token reads, the GB/s that makes, and the share
//! of the machine's read bandwidth (measured by a short probe) it reaches.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, bail};
use serde_json::json;
use ternlm::{GenerateParams, Model, SamplerConfig, Sequence};

mod speculate;

use crate::cli::BenchArgs;
use crate::load::{ignore_gpu_layers, model_path, naming_path, threads as threads_checked};
use crate::out::outln;

struct Row {
    test: String,
    n_prompt: usize,
    n_gen: usize,
    samples: Vec<f64>,
    bytes_per_token: f64,
}

impl Row {
    fn sorted(&self) -> Vec<f64> {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        s
    }
    fn median(&self) -> f64 {
        let s = self.sorted();
        let n = s.len();
        if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 }
    }
    fn min(&self) -> f64 {
        self.sorted()[0]
    }
    fn max(&self) -> f64 {
        *self.sorted().last().unwrap_or(&0.0)
    }
}

pub fn bench(a: BenchArgs) -> Result<ExitCode> {
    if a.reps == 0 {
        bail!("--reps must be at least 1");
    }
    let path = model_path(a.model.as_deref())?;
    let threads = if a.threads.is_empty() { vec![ternlm::default_threads()] } else { a.threads.clone() };
    let model_name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    // Said once, before any test runs.
    ignore_gpu_layers(a.n_gpu_layers);
    for &t in &threads {
        threads_checked(Some(t))?;
    }
    let speculating = a.speculate.speculate.is_some() || a.prompt_file.is_some() || a.speculate.draft_model.is_some();
    // The bandwidth lines and footnotes follow the whole table, never split it.
    let mut after_table = Vec::new();
    let mut above_probe = false;
    for (i, &t) in threads.iter().enumerate() {
        let model = naming_path(Model::load(&path, &a.weights.load_options(t)), "loading", &path)?;
        crate::load::say_kernel_checks();
        crate::load::say_device(&model, &a.weights);
        if speculating {
            let model = match a.speculate.draft_model.as_deref() {
                Some(draft) => crate::load::attach_draft(model, draft, &a.weights)?,
                None => model,
            };
            speculation_tests(&model, &a, t)?;
            continue;
        }
        if let Some(&p) = a.n_prompt.iter().find(|&&p| p > model.config.n_ctx_train) {
            bail!("-p {p} is more than the model's context ({} tokens)", model.config.n_ctx_train);
        }
        if i == 0 && !a.json {
            outln!("| model | size | params | isa | threads | test | t/s (median) | min..max | MB/token | GB/s | % of BW |")?;
            outln!("| --- | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")?;
        }
        // On a GPU the CPU's kernel level and memory bandwidth say nothing about the run.
        let on_gpu = model.backend_name() == "gpu";
        let isa = if on_gpu { "gpu" } else { ternlm::machine::active_isa_name() };
        // The kinds of weights whose products run at another level than the rest.
        let kernels = model.kernel_levels();
        let others: Vec<String> = kernels.iter().filter(|&&(_, l)| l != isa).map(|(n, l)| format!("{n}: {l}")).collect();
        let isa_cell = if others.is_empty() { isa.to_string() } else { format!("{isa} ({})", others.join(", ")) };
        let params = model.param_count();
        let size = model.file_bytes();
        let weights = model.weight_bytes_per_step() as f64;
        let ceiling = if a.no_probe || on_gpu { None } else { Some(ternlm::machine::read_bandwidth(&model, 512 << 20, 5)) };
        let mut rows = Vec::new();
        for &p in a.n_prompt.iter().filter(|&&p| p > 0) {
            let samples = time_reps(&model, a.reps, p, 0)?;
            rows.push(Row { test: format!("pp{p}"), n_prompt: p, n_gen: 0, samples, bytes_per_token: weights / p as f64 });
        }
        for &n in a.n_gen.iter().filter(|&&n| n > 0) {
            let samples = time_reps(&model, a.reps, 0, n)?;
            // Each step also reads the KV cache, on average half of what the test fills.
            let kv = (n / 2) as f64 * (model.config.kv_dim() * 2 * 2 * model.config.n_layer) as f64;
            rows.push(Row { test: format!("tg{n}"), n_prompt: 0, n_gen: n, samples, bytes_per_token: weights + kv });
        }
        for &s in a.streams.iter().filter(|&&s| s > 0) {
            let n = a.n_gen.iter().copied().find(|&n| n > 0).unwrap_or(32);
            let samples = time_streams(&model, a.reps, s, n)?;
            // One step reads the weights once for all streams, plus each stream's cache.
            let kv = (STREAM_PROMPT + n / 2) as f64 * (model.config.kv_dim() * 2 * 2 * model.config.n_layer) as f64;
            rows.push(Row { test: format!("tg{n} x{s}"), n_prompt: 0, n_gen: n * s, samples, bytes_per_token: weights / s as f64 + kv });
        }
        for r in &rows {
            let gbps = r.bytes_per_token * r.median() / 1e9;
            let share = ceiling.map(|c| gbps * 1e9 / c);
            // More than the probe's bandwidth means part of what a token reads came from the
            // CPU caches (a model this small fits in them between steps), so the probe is not
            // this test's ceiling: mark the cell rather than print a share that cannot be.
            let beyond = share.is_some_and(|s| s > 1.0);
            above_probe |= beyond;
            if a.json {
                let line = json!({
                    "model": model_name,
                    "model_path": path.display().to_string(),
                    "size_bytes": size,
                    "params": params,
                    "isa": isa,
                    "kernels": kernels.iter().map(|&(n, l)| (n.to_string(), json!(l))).collect::<serde_json::Map<String, serde_json::Value>>(),
                    "device": model.device(),
                    "threads": t,
                    "test": r.test,
                    "n_prompt": r.n_prompt,
                    "n_gen": r.n_gen,
                    "reps": a.reps,
                    "tokens_per_s": r.median(),
                    "min": r.min(),
                    "max": r.max(),
                    "samples": r.samples,
                    "bytes_per_token": r.bytes_per_token.round() as u64,
                    "gbps": gbps,
                    "bw_ceiling_gbps": ceiling.map(|c| c / 1e9),
                    "bw_share": share,
                    "bw_share_above_probe": beyond,
                    "load_ms": model.load_time().as_secs_f64() * 1e3,
                });
                outln!("{line}")?;
            } else {
                outln!(
                    "| {model_name} | {:.2} GiB | {:.2} B | {isa_cell} | {t} | {} | {:.2} | {:.2}..{:.2} | {:.1} | {:.2} | {} |",
                    size as f64 / (1u64 << 30) as f64,
                    params as f64 / 1e9,
                    r.test,
                    r.median(),
                    r.min(),
                    r.max(),
                    r.bytes_per_token / 1e6,
                    gbps,
                    share.map_or("-".into(), |s| format!("{:.0}%{}", s * 100.0, if beyond { "*" } else { "" })),
                )?;
            }
        }
        if let Some(c) = ceiling {
            after_table.push(format!("threads {t}: read bandwidth ceiling {:.2} GB/s (probe), load {:.0} ms", c / 1e9, model.load_time().as_secs_f64() * 1e3));
        }
    }
    if !a.json {
        if !after_table.is_empty() {
            outln!()?;
        }
        for line in &after_table {
            outln!("{line}")?;
        }
        if above_probe {
            outln!("* above the probe's bandwidth: part of each token's reads came from the CPU caches, so the probe is not this test's ceiling")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prompt tokens each stream of a `--streams` test holds before decoding starts.
const STREAM_PROMPT: usize = 16;

/// Aggregate tokens per second of `reps` runs (after a warm-up run) of `s` sequences
/// generating `n` tokens each (greedy, so each follows a real trajectory) after a short
/// prompt each, every step one batched forward for all of them.
fn time_streams(model: &Model, reps: usize, s: usize, n: usize) -> Result<Vec<f64>> {
    let vocab = model.config.n_vocab as u32;
    let mut seqs: Vec<Sequence> = (0..s).map(|_| model.new_sequence(STREAM_PROMPT + n + 1)).collect();
    let params = GenerateParams { max_tokens: n, sampler: SamplerConfig::greedy(), ..Default::default() };
    let mut samples = Vec::with_capacity(reps);
    for rep in 0..=reps {
        for (i, seq) in seqs.iter_mut().enumerate() {
            seq.reset();
            let prompt: Vec<u32> = (0..STREAM_PROMPT as u32).map(|j| (i as u32 * 7919 + j * 104_729) % vocab).collect();
            seq.start(model, &prompt, &params)?;
        }
        // The prompts in one step, untimed: the test is decoding.
        model.step(&mut seqs.iter_mut().collect::<Vec<_>>(), None)?;
        let start = Instant::now();
        let mut generated = 0;
        loop {
            let mut active: Vec<&mut Sequence> = seqs.iter_mut().filter(|q| q.is_active()).collect();
            if active.is_empty() {
                break;
            }
            model.step(&mut active, None)?;
            generated += active.len();
        }
        let secs = start.elapsed().as_secs_f64();
        if rep > 0 {
            samples.push(generated as f64 / secs);
        }
    }
    Ok(samples)
}

/// Tokens per second of `reps` runs (after one warm-up run) of either a `p`-token prompt
/// batch or `n` single-token steps, each from an empty context.
fn time_reps(model: &Model, reps: usize, p: usize, n: usize) -> Result<Vec<f64>> {
    Ok(if p > 0 { ternlm::timing::prefill_rates(model, reps, p)? } else { ternlm::timing::decode_rates(model, reps, n)? })
}

/// `--speculate`: the verification cost curve, then the prompt file's side-by-side runs.
fn speculation_tests(model: &Model, a: &BenchArgs, threads: usize) -> Result<()> {
    let spec = crate::load::speculation(&a.speculate)?;
    let curve = speculate::verify_curve(model, a.reps)?;
    let one = curve[0].1.max(1e-9);
    let name = model.name();
    if a.json {
        for &(k, ms) in &curve {
            outln!("{}", json!({"test": "verify", "model": name, "threads": threads, "positions": k, "ms": ms, "relative_to_one": ms / one}))?;
        }
    } else {
        outln!("verification cost, {name}, {threads} threads (one sequence, after {} tokens):", speculate::CURVE_CONTEXT)?;
        outln!("| positions | ms/step (median) | x one-token step |")?;
        outln!("| ---: | ---: | ---: |")?;
        for &(k, ms) in &curve {
            outln!("| {k} | {ms:.2} | {:.2} |", ms / one)?;
        }
        outln!()?;
    }
    if let Some(file) = &a.prompt_file {
        let prompts = speculate::read_prompts(file)?;
        let n = a.n_gen.iter().copied().find(|&n| n > 0).unwrap_or(128);
        let label = file.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        if !a.json {
            outln!("speculative decoding ({}, up to {} drafts), {name}, {threads} threads, {n} greedy tokens, {} prompts of {}:", spec.mode.as_str(), spec.draft_max, prompts.len(), file.display())?;
        }
        speculate::bench_prompts(model, &prompts, spec, n, a.reps, a.json, &label)?;
    }
    Ok(())
}
