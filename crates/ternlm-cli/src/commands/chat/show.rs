//! `/show`: the model, its template, the system message and the options, on stdout (what
//! was asked for, like `ternlm info`'s output).

use anyhow::Result;
use ternlm::Model;

use super::commands::Show;
use super::conversation::Conversation;
use super::options::Options;
use crate::out::outln;

/// What one chat shows about itself.
pub struct View<'a> {
    pub model: &'a Model,
    pub conversation: &'a Conversation,
    pub options: &'a Options,
    pub n_ctx: usize,
}

/// How the conversation is rendered, in a few words.
pub fn template_kind(model: &Model) -> &'static str {
    if model.chat_template_is_fallback() { "ChatML fallback (the model has no chat template)" } else { "the model's own" }
}

pub fn show(v: &View<'_>, what: Show) -> Result<()> {
    match what {
        Show::Summary => {
            outln!("model         {}", v.model.name())?;
            outln!("template      {}", template_kind(v.model))?;
            outln!("system        {}", v.conversation.system.as_deref().unwrap_or("(none)"))?;
            outln!("messages      {} (context {} tokens)", v.conversation.messages.len(), v.n_ctx)?;
            outln!("parameters    {}", v.options.describe().iter().map(|(n, x)| format!("{n} {x}")).collect::<Vec<_>>().join(", "))
        }
        Show::Info => {
            let (m, c) = (v.model, &v.model.config);
            outln!("name          {}", m.name())?;
            outln!("file          {}", m.path().display())?;
            outln!("architecture  {}", c.arch.name)?;
            outln!("parameters    {:.1} M", m.param_count() as f64 / 1e6)?;
            outln!("layers        {}", c.n_layer)?;
            outln!("width         {}", c.n_embd)?;
            outln!("vocabulary    {}", c.n_vocab)?;
            outln!("context       {} tokens (trained on {})", v.n_ctx, c.n_ctx_train)?;
            outln!("threads       {} ({})", m.threads(), ternlm::machine::active_isa_name())
        }
        Show::Template => match v.model.chat_template_source() {
            Some(source) => outln!("{source}"),
            None => {
                outln!("# {}", template_kind(v.model))?;
                outln!("{}", ternlm::chat::CHATML_TEMPLATE)
            }
        },
        Show::System => outln!("{}", v.conversation.system.as_deref().unwrap_or("(no system message)")),
        Show::Parameters => {
            for (name, value) in v.options.describe() {
                outln!("{name:<16}{value}")?;
            }
            Ok(())
        }
    }
}
