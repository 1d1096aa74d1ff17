//! `ternlm chat`: an interactive conversation, with the conventions of Ollama's and
//! llama.cpp's chat prompts: line editing at a terminal, `"""` for several lines, slash
//! commands that never reach the model. Each turn re-renders the whole conversation with
//! the model's template (ChatML when it has none); the session keeps the KV cache of the
//! shared prefix, so only the new turn is evaluated. Ctrl-C stops a reply without leaving;
//! Ctrl-D or /bye leaves.

mod block;
mod commands;
mod conversation;
mod input;
mod options;
mod show;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use ternlm::{Message, Model, Session, StopReason};

use self::block::Entry;
use self::commands::{Command, HELP, ParseError};
use self::conversation::{Conversation, user_path};
use self::input::Input;
use self::options::Options;
use self::show::{View, show};
use crate::cli::ChatArgs;
use crate::load::{ctx_size, load_model_speculating};
use crate::out::{note, outln};

/// Room kept for a reply when old turns are dropped to fit a new one.
const REPLY_ROOM: usize = 16;

pub fn chat(args: ChatArgs) -> Result<ExitCode> {
    let options = Options::new(&args.sampling, args.verbose)?;
    let (model, speculate) = load_model_speculating(&args.model, &args.speculate)?;
    let model = model.with_chat_template_fallback()?;
    let n_ctx = ctx_size(&args.model, &model)?;
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = Arc::clone(&interrupted);
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).context("installing the Ctrl-C handler")?;
    }
    let mut input = Input::open();
    if model.chat_template_is_fallback() {
        let plain = if model.chatml_markers_are_tokens() { "" } else { " (its vocabulary lacks <|im_start|> and <|im_end|>, so they are plain text)" };
        note!("ternlm: note: {} has no chat template; using ChatML{plain}", model.name());
    }
    if input.is_interactive() {
        note!("ternlm chat: {} — /? for help, /bye or Ctrl-D to leave, Ctrl-C stops a reply", model.name());
    }
    // `--system` is taken as it is, as `run` takes it.
    let mut chat = Chat { model: &model, session: model.session(n_ctx), conversation: Conversation { system: args.system.clone(), messages: Vec::new() }, options, speculate, interrupted };
    super::show_prompt_progress(&mut chat.session);
    while let Some(entry) = input.next_entry()? {
        match entry {
            Entry::Message(text) => chat.reply(text)?,
            Entry::Command(line) => match commands::parse(&line) {
                Ok(Command::Bye) => break,
                Ok(cmd) => chat.run(cmd)?,
                Err(e @ ParseError::Unknown(_)) => note!("ternlm: {e}\n{HELP}"),
                Err(e) => note!("ternlm: {e}"),
            },
        }
    }
    Ok(ExitCode::SUCCESS)
}

struct Chat<'m> {
    model: &'m Model,
    session: Session<'m>,
    conversation: Conversation,
    options: Options,
    speculate: ternlm::Speculation,
    /// Set by Ctrl-C while a reply is being generated.
    interrupted: Arc<AtomicBool>,
}

impl Chat<'_> {
    /// Runs a command other than `/bye`. Only a failure to write stdout is an error: a
    /// mistake in a command is reported and the session goes on.
    fn run(&mut self, cmd: Command) -> Result<()> {
        match cmd {
            Command::Help => outln!("{HELP}")?,
            // The input loop leaves before it gets here.
            Command::Bye => {}
            Command::Clear => {
                self.conversation.messages.clear();
                self.session.reset();
                note!("(conversation cleared)");
            }
            Command::SetSystem(text) => {
                note!("{}", if text.is_some() { "(system message set)" } else { "(system message removed)" });
                self.conversation.system = text;
            }
            Command::Set(param, value) => match self.options.set(param, &value) {
                Ok(()) => note!("(set {} to {value})", param.name()),
                Err(e) => note!("ternlm: {e}"),
            },
            Command::SetVerbose(on) => self.options.verbose = on,
            Command::Show(what) => show(&View { model: self.model, conversation: &self.conversation, options: &self.options, n_ctx: self.session.n_ctx() }, what)?,
            Command::Save(file) => match self.conversation.save(&user_path(&file), &self.model.name(), self.options.saved()) {
                Ok(()) => note!("(saved {} messages to {file})", self.conversation.messages.len()),
                Err(e) => note!("ternlm: {e:#}"),
            },
            Command::Load(file) => match Conversation::load(&user_path(&file)).and_then(|(c, o)| self.options.apply(&o).map(|()| c).map_err(|e| anyhow::anyhow!("{file}: {e}"))) {
                Ok(c) => {
                    self.conversation = c;
                    self.session.reset();
                    note!("(loaded {} messages from {file})", self.conversation.messages.len());
                }
                Err(e) => note!("ternlm: {e:#}"),
            },
        }
        Ok(())
    }

    /// Sends `text` and streams the reply to stdout. A message that cannot be rendered or
    /// does not fit is reported and left out of the conversation.
    fn reply(&mut self, text: String) -> Result<()> {
        let mut next = self.conversation.clone();
        next.messages.push(Message::new("user", text));
        let Some(prompt) = self.fit(&mut next) else { return Ok(()) };
        let params = ternlm::GenerateParams { speculate: self.speculate, ..self.options.next_reply()? };
        // A Ctrl-C pressed while the prompt was waiting must not stop this reply.
        self.interrupted.store(false, Ordering::SeqCst);
        let interrupted = &self.interrupted;
        let reply = super::generate_to_stdout(&mut self.session, &prompt, &params, true, &|| !interrupted.load(Ordering::SeqCst))?;
        outln!()?;
        match reply.stop {
            StopReason::Cancelled => note!("(stopped)"),
            StopReason::ContextFull => note!("(the context of {} tokens is full: the reply was cut short)", self.session.n_ctx()),
            StopReason::Eos | StopReason::Length => {}
        }
        if self.options.verbose {
            note!(
                "ternlm: prompt {} tokens, {:.1} tokens/s | reply {} tokens, {:.1} tokens/s{}",
                reply.prompt_evaluated,
                reply.prompt_tokens_per_s(),
                reply.tokens.len(),
                reply.gen_tokens_per_s(),
                super::run::drafted(&reply)
            );
        }
        next.messages.push(Message::new("assistant", reply.text));
        self.conversation = next;
        Ok(())
    }

    /// The tokens of `conv`, ready for the reply, after forgetting its oldest turns until
    /// they fit with room for a reply; `None` (after saying why) when they cannot.
    fn fit(&self, conv: &mut Conversation) -> Option<Vec<u32>> {
        let n_ctx = self.session.n_ctx();
        let mut dropped = 0;
        loop {
            // Typed text is text: control-token strings in it stay plain text.
            let prompt = match self.model.encode_chat(&conv.prompt_messages(), true) {
                Ok(Some(p)) => p,
                Ok(None) => {
                    note!("ternlm: the model has no chat template");
                    return None;
                }
                Err(e) => {
                    note!("ternlm: {e}");
                    return None;
                }
            };
            if prompt.len() + REPLY_ROOM <= n_ctx || !conv.drop_oldest_turn() {
                if prompt.len() > n_ctx {
                    note!("ternlm: {}", ternlm::ModelError::PromptTooLong { prompt: prompt.len(), ctx: n_ctx });
                    return None;
                }
                if dropped > 0 {
                    note!("(context full: dropped the {} oldest turn{})", dropped, if dropped == 1 { "" } else { "s" });
                }
                return Some(prompt);
            }
            dropped += 1;
        }
    }
}
