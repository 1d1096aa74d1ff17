//! `ternlm chat`: an interactive conversation. Each turn re-renders the whole conversation
//! with the model's template; the session keeps the KV cache of the shared prefix, so only
//! the new turn is evaluated. Ctrl-C stops a reply without leaving; Ctrl-D or /exit leaves.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use ternlm::{GenerateParams, Message, Model, ModelError, StopReason};

use super::{max_tokens, sampler_config};
use crate::cli::ChatArgs;
use crate::load::{ctx_size, load_model};
use crate::out::{note, note_raw};

/// Tokens of the rendered conversation, ready to generate the assistant's reply (what was
/// typed is text: control-token strings in it stay plain text).
fn conversation_tokens(model: &Model, msgs: &[Message]) -> Result<Vec<u32>> {
    model.encode_chat(msgs, true)?.context("the model has no chat template; use `ternlm run --raw`")
}

pub fn chat(args: ChatArgs) -> Result<ExitCode> {
    let sampler = sampler_config(&args.sampling)?;
    let model = load_model(&args.model)?;
    if !model.has_chat_template() {
        anyhow::bail!("{} has no chat template; use `ternlm run --raw`", model.path().display());
    }
    let n_ctx = ctx_size(&args.model, &model)?;
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = Arc::clone(&interrupted);
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).context("installing the Ctrl-C handler")?;
    }
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        note!("ternlm chat: {} — /reset clears, /exit or Ctrl-D quits, Ctrl-C stops a reply", model.path().display());
    }

    let base: Vec<Message> = args.system.iter().map(|s| Message::new("system", s.clone())).collect();
    let mut history = base.clone();
    let mut session = model.session(n_ctx);
    let mut seed = sampler.seed;
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            note_raw!("> ");
            let _ = std::io::stderr().flush();
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("reading stdin")?;
        let input = super::user_text(&line);
        match input {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history = base.clone();
                session.reset();
                note!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        history.push(Message::new("user", input.to_string()));
        let mut prompt = conversation_tokens(&model, &history)?;
        // Forget the oldest turns (keeping any system message) until the prompt fits with
        // room for a reply.
        while prompt.len() + 16 > n_ctx && history.len() > base.len() + 1 {
            history.remove(base.len());
            prompt = conversation_tokens(&model, &history)?;
        }
        let params = GenerateParams { max_tokens: max_tokens(&args.sampling), sampler: ternlm::SamplerConfig { seed, ..sampler.clone() } };
        seed = seed.wrapping_add(1);
        // A Ctrl-C pressed while the prompt was waiting must not stop this reply.
        interrupted.store(false, Ordering::SeqCst);
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let result = session.generate(&prompt, &params, &mut |text, _| {
            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
            !interrupted.load(Ordering::SeqCst)
        });
        let reply = match result {
            Ok(g) => g,
            Err(e @ ModelError::PromptTooLong { .. }) => {
                note!("ternlm: {e}");
                history.pop();
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        writeln!(out)?;
        if reply.stop == StopReason::Cancelled {
            note!("(stopped)");
        }
        if args.verbose {
            note!("ternlm: prompt {} tokens, {:.1} tokens/s | reply {} tokens, {:.1} tokens/s", reply.prompt_evaluated, reply.prompt_tokens_per_s(), reply.tokens.len(), reply.gen_tokens_per_s());
        }
        history.push(Message::new("assistant", reply.text));
    }
    Ok(ExitCode::SUCCESS)
}
