//! `ternlm run`: one prompt in, generated text streamed to stdout (or one JSON object).

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::json;
use ternlm::{GenerateParams, Message};

use super::{max_tokens, sampler_config};
use crate::cli::RunArgs;
use crate::load::{ctx_size, load_model};
use crate::out::{note, outln, write_flush};

fn read_prompt(args: &RunArgs) -> Result<String> {
    if let Some(p) = &args.prompt {
        return Ok(p.clone());
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        anyhow::bail!("no prompt: pass -p TEXT or pipe the prompt on stdin");
    }
    let mut s = String::new();
    stdin.lock().read_to_string(&mut s).context("reading the prompt from stdin")?;
    Ok(s)
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let prompt_text = read_prompt(&args)?;
    let sampler = sampler_config(&args.sampling)?;
    let model = load_model(&args.model)?;
    let n_ctx = ctx_size(&args.model, &model)?;

    let templated = if args.raw {
        None
    } else {
        let mut msgs = Vec::new();
        if let Some(sys) = &args.system {
            msgs.push(Message::new("system", sys.clone()));
        }
        msgs.push(Message::new("user", prompt_text.clone()));
        model.render_chat_literal(&msgs, true)?
    };
    if args.system.is_some() && templated.is_none() {
        note!("ternlm: note: --system is ignored without a chat template");
    }
    // The prompt is text: control-token strings in it stay plain text.
    let prompt = match &templated {
        Some(chat) => model.encode_chat_rendered(chat)?,
        None => model.tokenizer.encode(&prompt_text, true, false)?,
    };
    if prompt.is_empty() {
        anyhow::bail!("the prompt is empty");
    }

    let params = GenerateParams { max_tokens: max_tokens(&args.sampling), sampler };
    let mut session = model.session(n_ctx);
    let stream = !args.json;
    let mut write_err = None;
    let outcome = session.generate(&prompt, &params, &mut |text, _| {
        if stream
            && !text.is_empty()
            && let Err(e) = write_flush(text)
        {
            write_err = Some(e);
            return false;
        }
        true
    })?;
    if let Some(e) = write_err {
        return Err(e);
    }

    let timings = json!({
        "load_ms": model.load_time().as_secs_f64() * 1e3,
        "prompt_n": outcome.prompt_evaluated,
        "prompt_ms": outcome.prompt_time.as_secs_f64() * 1e3,
        "prompt_per_second": outcome.prompt_tokens_per_s(),
        "prompt_tokens_per_s": outcome.prompt_tokens_per_s(),
        "predicted_n": outcome.tokens.len(),
        "predicted_ms": outcome.gen_time.as_secs_f64() * 1e3,
        "predicted_per_second": outcome.gen_tokens_per_s(),
        "generation_tokens_per_s": outcome.gen_tokens_per_s(),
    });
    if args.json {
        let obj = json!({
            "model": model.path().display().to_string(),
            "prompt": templated.as_ref().map_or(prompt_text.as_str(), |c| c.text()),
            "prompt_tokens": prompt,
            "tokens": outcome.tokens,
            "text": outcome.text,
            "stop_type": outcome.stop.as_str(),
            "isa": ternlm::isa::active().name(),
            "threads": model.pool().n_threads(),
            "timings": timings,
        });
        outln!("{obj}")?;
    } else if std::io::stdout().is_terminal() {
        outln!()?;
    }
    if args.verbose {
        note!(
            "ternlm: load {:.0} ms | prompt {} tokens, {:.1} tokens/s | generation {} tokens, {:.1} tokens/s | threads {} | isa {} | stop: {}",
            model.load_time().as_secs_f64() * 1e3,
            outcome.prompt_evaluated,
            outcome.prompt_tokens_per_s(),
            outcome.tokens.len(),
            outcome.gen_tokens_per_s(),
            model.pool().n_threads(),
            ternlm::isa::active().name(),
            outcome.stop.as_str()
        );
    }
    Ok(ExitCode::SUCCESS)
}
