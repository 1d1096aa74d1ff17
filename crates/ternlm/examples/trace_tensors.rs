//! Dumps every intermediate tensor of one prompt batch, for comparing ternlm with another
//! engine layer by layer (the README's "Numerics" section says how it was used):
//!
//! ```text
//! cargo run --release -p ternlm --example trace_tensors -- MODEL.gguf IDS OUT_DIR [THREADS]
//! ```
//! IDS is a comma-separated list of token ids. OUT_DIR gets `NNNN.bin` (little-endian f32,
//! one row per token) per tensor and `index.tsv` (`NNNN`, name, row width, rows).

use std::io::Write;
use std::path::PathBuf;

use ternlm::{LoadOptions, Model};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: trace_tensors MODEL.gguf IDS OUT_DIR [THREADS]";
    let model_path = PathBuf::from(args.first().ok_or(usage)?);
    let ids = args.get(1).ok_or(usage)?.split(',').filter(|s| !s.is_empty()).map(str::parse).collect::<Result<Vec<u32>, _>>()?;
    let out = PathBuf::from(args.get(2).ok_or(usage)?);
    let threads = args.get(3).map(|t| t.parse()).transpose()?.unwrap_or(1);
    let model = Model::load(&model_path, &LoadOptions { threads, ..Default::default() })?;
    std::fs::create_dir_all(&out)?;
    let mut index = std::fs::File::create(out.join("index.tsv"))?;
    let mut seq = 0usize;
    let mut failed: Option<std::io::Error> = None;
    let n = ids.len();
    model.trace_forward(&ids, &mut |name, data| {
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let res = std::fs::write(out.join(format!("{seq:04}.bin")), bytes).and_then(|()| writeln!(index, "{seq:04}\t{name}\t{}\t{}", data.len() / n.max(1), n));
        if let Err(e) = res {
            failed.get_or_insert(e);
        }
        seq += 1;
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    eprintln!("wrote {seq} tensors to {}", out.display());
    Ok(())
}
