//! Writes a generated Hugging Face checkpoint folder of one family, for trying `ternlm
//! convert` / `ternlm run -m DIR` (and other engines' converters) without a download:
//!
//! ```text
//! cargo run --release -p ternlm --example hf_checkpoint -- KIND DIR [tiny|2b4t] [--shards]
//! ```
//! KIND: bitnet-b1.58-packed, bitnet-b1.58-bf16, 1bitllm-bitnet, llama-1.58bit, llama-bf16.

use std::path::PathBuf;

use ternlm::hf::tiny::{TinyKind, TinyShape, write_shaped};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: hf_checkpoint KIND DIR [tiny|2b4t] [--shards]";
    let kind_name = args.first().ok_or(usage)?;
    let kind = TinyKind::ALL.into_iter().find(|k| k.name() == kind_name).ok_or_else(|| format!("unknown KIND {kind_name:?}; {usage}"))?;
    let dir = PathBuf::from(args.get(1).ok_or(usage)?);
    let shape = match args.get(2).map(String::as_str) {
        None | Some("tiny") | Some("--shards") => TinyShape::TINY,
        Some("2b4t") => TinyShape::B2B4T,
        Some(other) => return Err(format!("unknown shape {other:?}; {usage}").into()),
    };
    write_shaped(&dir, kind, 1, args.iter().any(|a| a == "--shards"), shape)?;
    eprintln!("wrote {} ({}, {shape:?})", dir.display(), kind.name());
    Ok(())
}
