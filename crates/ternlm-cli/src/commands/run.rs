//! `ternlm run`: one prompt in, generated text streamed to stdout (or one JSON object).

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::json;
use ternlm::{GenerateParams, Message, StopReason};

use super::{generate_to_stdout, max_tokens, read_stdin, sampler_config, show_prompt_progress, user_text};
use crate::cli::{ChatArgs, RunArgs};
use crate::load::{ctx_size, load_model_speculating};
use crate::out::{note, outln};

/// Where the model comes from and what words of the command line are the prompt: with -m
/// every word is prompt; without it the first word names the model, as in `ollama run MODEL
/// PROMPT`.
fn split_words(args: &RunArgs) -> Result<(Option<String>, Option<String>)> {
    let (model, words) = match (&args.model.model, args.words.split_first()) {
        (Some(m), _) => (Some(m.clone()), &args.words[..]),
        (None, Some((first, rest))) => {
            if let Err(e) = ternlm_hub::ModelSpec::parse(Some(first)) {
                anyhow::bail!("{e}; to give a prompt, use -p TEXT or name the model first: ternlm run MODEL PROMPT");
            }
            (Some(first.clone()), rest)
        }
        (None, None) => (None, &args.words[..]),
    };
    let prompt = (!words.is_empty()).then(|| words.join(" "));
    if prompt.is_some() && args.prompt.is_some() {
        anyhow::bail!("the prompt was given twice: with -p and as words after the model; give one");
    }
    Ok((model, prompt.or_else(|| args.prompt.clone())))
}

/// The prompt: a file's text, then piped stdin, then the prompt words or -p, each without
/// its trailing newlines and separated by a blank line (Ollama puts piped input before the
/// prompt, so `cat notes.txt | ternlm run -p "Summarize this."` reads naturally). `None`
/// when nothing was given and stdin is a terminal.
fn gather_prompt(file: Option<&std::path::Path>, prompt: Option<String>) -> Result<Option<String>> {
    let mut parts = Vec::new();
    if let Some(f) = file {
        parts.push(std::fs::read_to_string(f).with_context(|| format!("cannot read the prompt file {}", f.display()))?);
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let s = read_stdin("the prompt")?;
        if !s.trim().is_empty() || parts.is_empty() && prompt.is_none() {
            parts.push(s);
        }
    }
    parts.extend(prompt);
    if parts.is_empty() {
        return Ok(None);
    }
    let parts: Vec<&str> = parts.iter().map(|p| p.trim_end_matches(['\n', '\r'])).collect();
    Ok(Some(parts.join("\n\n")))
}

pub fn run(mut args: RunArgs) -> Result<ExitCode> {
    let (model_name, prompt) = split_words(&args)?;
    args.model.model = model_name;
    let Some(prompt_text) = gather_prompt(args.file.as_deref(), prompt)? else {
        if args.raw || args.json {
            anyhow::bail!("no prompt: pass -p TEXT, -f FILE, words after the model, or pipe the prompt on stdin");
        }
        // A terminal and no prompt: the user wants to talk, as `ollama run MODEL` does.
        note!("ternlm: no prompt given; starting `ternlm chat` (/bye to leave)");
        return super::chat::chat(ChatArgs { model_word: None, model: args.model, sampling: args.sampling, speculate: args.speculate, system: args.system, verbose: args.verbose });
    };
    if user_text(&prompt_text).is_empty() {
        anyhow::bail!("the prompt is empty");
    }
    let sampler = sampler_config(&args.sampling)?;
    let (model, speculate) = load_model_speculating(&args.model, &args.speculate)?;
    let n_ctx = ctx_size(&args.model, &model)?;

    let templated = if args.raw {
        None
    } else {
        let mut msgs = Vec::new();
        if let Some(sys) = &args.system {
            msgs.push(Message::new("system", sys.clone()));
        }
        msgs.push(Message::new("user", user_text(&prompt_text).to_string()));
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

    let params = GenerateParams { max_tokens: max_tokens(&args.sampling), sampler, speculate, ..Default::default() };
    let mut session = model.session(n_ctx);
    show_prompt_progress(&mut session);
    let outcome = generate_to_stdout(&mut session, &prompt, &params, !args.json, &|| true)?;

    let context_full = outcome.stop == StopReason::ContextFull;
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
        "predicted_steps": outcome.gen_evals,
        "speculate": speculate.mode.as_str(),
        "draft_proposed": outcome.draft_proposed,
        "draft_accepted": outcome.draft_accepted,
    });
    if args.json {
        let obj = json!({
            "model": model.path().display().to_string(),
            "prompt": templated.as_ref().map_or(prompt_text.as_str(), |c| c.text()),
            "prompt_tokens": prompt,
            "tokens": outcome.tokens,
            "text": outcome.text,
            "stop_type": outcome.stop.as_str(),
            "isa": ternlm::machine::active_isa_name(),
            "threads": model.threads(),
            "timings": timings,
        });
        outln!("{obj}")?;
    } else if std::io::stdout().is_terminal() || (args.verbose || context_full) && !outcome.text.ends_with('\n') {
        // End the text's line before anything goes to stderr, so `> out 2>&1` keeps the
        // generated text and the notes apart.
        outln!()?;
    }
    if context_full {
        note!("ternlm: stopped: the context of {n_ctx} tokens is full (raise it with -c, up to the model's {})", model.config.n_ctx_train);
    }
    if args.verbose {
        note!(
            "ternlm: load {:.0} ms | prompt {} tokens, {:.1} tokens/s | generation {} tokens, {:.1} tokens/s{} | {} | stop: {}",
            model.load_time().as_secs_f64() * 1e3,
            outcome.prompt_evaluated,
            outcome.prompt_tokens_per_s(),
            outcome.tokens.len(),
            outcome.gen_tokens_per_s(),
            drafted(&outcome),
            where_it_ran(&model),
            outcome.stop.as_str()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// "threads N | isa L" on the CPU, "device gpu:0 NAME (backend)" on a GPU.
fn where_it_ran(model: &ternlm::Model) -> String {
    if model.backend_name() == "gpu" { format!("device {}", model.device()) } else { format!("threads {} | isa {}", model.threads(), ternlm::machine::active_isa_name()) }
}

/// ", drafts: A of P accepted" when speculation drafted anything.
pub(crate) fn drafted(g: &ternlm::Generation) -> String {
    if g.draft_proposed == 0 {
        return String::new();
    }
    format!(", drafts: {} of {} accepted", g.draft_accepted, g.draft_proposed)
}
