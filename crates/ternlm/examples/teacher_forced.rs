//! Teacher-forced log-probabilities for comparing ternlm with another engine on any prompts:
//!
//! ```text
//! cargo run --release -p ternlm --example teacher_forced -- MODEL.gguf CASES.tsv OUT_DIR [THREADS] [--stepwise]
//! ```
//! Each line of CASES.tsv is `id<TAB>prompt ids<TAB>continuation ids` (comma-separated). For
//! every continuation step k, OUT_DIR/id.bin gets the natural-log softmax over the whole
//! vocabulary (little-endian f32) of the logits that predict `continuation[k]` after
//! `prompt + continuation[..k]`. By default everything runs in one batch; `--stepwise`
//! runs the prompt as one batch and then one token per step, as llama-server does (ternlm
//! gives the same bits either way).

use std::path::PathBuf;

use ternlm::{LoadOptions, Logits, Model};

fn parse_ids(s: &str) -> Result<Vec<u32>, std::num::ParseIntError> {
    s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::parse).collect()
}

fn log_softmax(row: &[f32]) -> Vec<f32> {
    let lse = ternlm::logprob::log_sum_exp(row);
    row.iter().map(|&v| (f64::from(v) - lse) as f32).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: teacher_forced MODEL.gguf CASES.tsv OUT_DIR [THREADS] [--stepwise]";
    let stepwise = args.iter().any(|a| a == "--stepwise");
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let model_path = PathBuf::from(pos.first().ok_or(usage)?);
    let cases = std::fs::read_to_string(pos.get(1).ok_or(usage)?)?;
    let out = PathBuf::from(pos.get(2).ok_or(usage)?);
    let threads = pos.get(3).map(|t| t.parse()).transpose()?.unwrap_or(1);
    let model = Model::load(&model_path, &LoadOptions { threads, ..Default::default() })?;
    std::fs::create_dir_all(&out)?;
    let nv = model.config.n_vocab;
    for line in cases.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split('\t');
        let (id, prompt, cont) = (fields.next().ok_or("missing id")?, parse_ids(fields.next().ok_or("missing prompt ids")?)?, parse_ids(fields.next().ok_or("missing continuation ids")?)?);
        if prompt.is_empty() || cont.is_empty() {
            return Err(format!("{id}: empty prompt or continuation").into());
        }
        let mut session = model.session(prompt.len() + cont.len());
        let rows: Vec<f32> = if stepwise {
            let mut rows = session.eval(&prompt, Logits::Last)?;
            for &t in &cont[..cont.len() - 1] {
                rows.extend(session.eval(&[t], Logits::Last)?);
            }
            rows
        } else {
            let mut all = prompt.clone();
            all.extend(&cont[..cont.len() - 1]);
            let logits = session.eval(&all, Logits::All)?;
            logits[(prompt.len() - 1) * nv..].to_vec()
        };
        let bytes: Vec<u8> = rows.chunks_exact(nv).flat_map(log_softmax).flat_map(f32::to_le_bytes).collect();
        std::fs::write(out.join(format!("{id}.bin")), bytes)?;
    }
    Ok(())
}
