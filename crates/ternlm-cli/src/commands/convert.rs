//! `ternlm convert`: a Hugging Face checkpoint to a GGUF file, with the same conversion that
//! loads checkpoint folders directly.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, bail};
use ternlm::WeightType;
use ternlm::hf::{Conversion, ConvertOptions, is_checkpoint_dir};

use super::{check_writable, parse_type};
use crate::cli::ConvertArgs;
use crate::load::{model_path, naming_path, threads};
use crate::out::note;

pub fn convert(a: ConvertArgs) -> Result<ExitCode> {
    use WeightType as W;
    let linear_type = a.ty.as_deref().map(|t| parse_type(t, &[W::I2S, W::TQ2_0, W::TQ1_0, W::Q8_0, W::F16, W::BF16], "--type")).transpose()?;
    let head_type = a.head.as_deref().map(|t| parse_type(t, &[W::F16, W::Q6K, W::Q8_0, W::BF16], "--head")).transpose()?;
    let threads = threads(a.threads)?;
    check_writable(&a.output)?;
    let src = model_path(Some(&a.src))?;
    if !is_checkpoint_dir(&src) {
        bail!("{} is not a Hugging Face checkpoint folder (it needs config.json and *.safetensors)", src.display());
    }
    let start = Instant::now();
    let conv = Conversion::plan(&src, &ConvertOptions { linear_type, head_type, bf16_as_f16: false }).map_err(anyhow::Error::from);
    let conv = naming_path(conv, "reading", &src)?;
    for n in &conv.notes {
        note!("note: {n}");
    }
    let bytes = naming_path(conv.write(&a.output, threads), "writing", &a.output)?;
    let linear = conv.tensor_type("blk.0.attn_q.weight").map_or("?", WeightType::name);
    let head = conv.tensor_type("token_embd.weight").map_or("?", WeightType::name);
    let params = conv.param_count();
    note!(
        "wrote {}: {} ({}), {} linears, {} embedding, {:.2} G parameters, {:.1} MB in {:.1} s",
        a.output.display(),
        conv.config.architecture,
        conv.config.gguf_arch,
        linear,
        head,
        params as f64 / 1e9,
        bytes as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
