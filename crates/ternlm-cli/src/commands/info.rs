//! `ternlm info`: what a model file holds, read from its header and tokenizer only (weights
//! are not loaded, so this is fast even for large files); `ternlm info --devices`: the GPU
//! devices ternlm can see.

use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;
use ternlm::ModelFileInfo;

use super::human_bytes;
use crate::cli::InfoArgs;
use crate::load::{model_path, naming_path};
use crate::out::outln;

pub fn info(args: InfoArgs) -> Result<ExitCode> {
    if args.devices {
        return devices(args.json);
    }
    let arg = args.model.as_deref().or(args.model_flag.as_deref());
    let path = model_path(arg)?;
    // A checkpoint folder is described as the GGUF it loads as (which converts it).
    let file = naming_path(ModelFileInfo::open(&path, ternlm::default_threads()), "reading", &path)?;
    let tok = file.tokenizer()?;
    let cfg = file.config(Some(tok.n_vocab()))?;
    let types = file.tensor_types();
    let params = file.param_count();
    let template = file.chat_template()?.map(str::to_string);
    let name = file.name()?.unwrap_or("").to_string();
    let tok_text = |id: Option<u32>| id.map(|i| format!("{i} {:?}", tok.token_text(i).unwrap_or(""))).unwrap_or_else(|| "none".into());

    if args.json {
        let obj = json!({
            "path": path.display().to_string(),
            "name": name,
            "gguf_version": file.gguf_version(),
            "file_bytes": file.file_bytes(),
            "architecture": cfg.arch.name,
            "hyperparameters": {
                "n_vocab": cfg.n_vocab, "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_ff": cfg.n_ff,
                "n_head": cfg.n_head, "n_head_kv": cfg.n_head_kv, "head_dim": cfg.head_dim,
                "rope_dims": cfg.rope_dims, "rope_freq_base": cfg.rope_base, "rms_eps": cfg.rms_eps,
                "context_length": cfg.n_ctx_train,
            },
            "params": params,
            "tensors": file.tensor_count(),
            "tensor_types": types.iter().map(|t| (t.ty.name().to_string(), json!({"count": t.tensors, "bytes": t.bytes}))).collect::<serde_json::Map<_, _>>(),
            "tokenizer": {
                "model": tok.model_name(), "pre": tok.pre_name(), "n_tokens": tok.n_vocab(),
                "bos": tok.bos, "eos": tok.eos, "add_bos": tok.add_bos, "add_eos": tok.add_eos,
            },
            "chat_template": template,
        });
        outln!("{obj}")?;
        return Ok(ExitCode::SUCCESS);
    }

    outln!("file:          {} ({}, GGUF v{})", path.display(), human_bytes(file.file_bytes()), file.gguf_version())?;
    if !name.is_empty() {
        outln!("name:          {name}")?;
    }
    outln!("architecture:  {}", cfg.arch.name)?;
    outln!("parameters:    {:.1} M", params as f64 / 1e6)?;
    outln!("layers:        {}", cfg.n_layer)?;
    outln!("width:         {} (ffn {})", cfg.n_embd, cfg.n_ff)?;
    outln!("heads:         {} query, {} kv, head size {}", cfg.n_head, cfg.n_head_kv, cfg.head_dim)?;
    outln!("rope:          {:?}, {} dims, base {}", cfg.arch.rope, cfg.rope_dims, cfg.rope_base)?;
    outln!("rms eps:       {:e}", cfg.rms_eps)?;
    outln!("context:       {} (trained)", cfg.n_ctx_train)?;
    outln!("vocabulary:    {}", cfg.n_vocab)?;
    outln!("tensors:       {}", file.tensor_count())?;
    for t in &types {
        outln!("  {:<8} {:>5} tensors  {}", t.ty.name(), t.tensors, human_bytes(t.bytes))?;
    }
    outln!("tokenizer:     {} (pre {}), {} tokens, bos {}, eos {}, add_bos {}", tok.model_name(), tok.pre_name().unwrap_or("none"), tok.n_vocab(), tok_text(tok.bos), tok_text(tok.eos), tok.add_bos)?;
    match template {
        Some(t) => outln!("chat template: {} chars\n{t}", t.len())?,
        None => outln!("chat template: none")?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `ternlm info --devices`: one line per device, or a JSON list. No device is not an error:
/// the list is empty and the text says why that may be.
fn devices(json: bool) -> Result<ExitCode> {
    let devices = ternlm::devices();
    if json {
        outln!("{}", serde_json::to_string(&devices)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if devices.is_empty() {
        outln!("no GPU devices found (a Vulkan driver is needed on Linux and Windows; TERNLM_GPU=off or WGPU_BACKEND=none hide them)")?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!("{:<5} {:<40} {:<8} {:<7} {:<11} {:>10}  {:<8} {:<4} {}", "index", "name", "vendor", "backend", "type", "memory", "int8 dot", "f16", "software")?;
    let yes = |b: bool| if b { "yes" } else { "no" };
    for d in &devices {
        let memory = d.memory_bytes.map(human_bytes).unwrap_or_else(|| "?".into());
        outln!("{:<5} {:<40} {:<8} {:<7} {:<11} {:>10}  {:<8} {:<4} {}", d.index, d.name, d.vendor, d.backend, d.device_type, memory, yes(d.int8_dot), yes(d.f16), yes(d.software))?;
    }
    Ok(ExitCode::SUCCESS)
}
