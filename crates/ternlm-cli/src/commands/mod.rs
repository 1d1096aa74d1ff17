//! One module per subcommand, plus the sampling options they share.

mod bench;
mod cache;
mod chat;
mod convert;
mod dummy;
mod fit;
mod info;
mod perplexity;
mod report;
mod run;
mod serve;
mod tokenize;

use std::process::ExitCode;

use anyhow::Result;
use ternlm::SamplerConfig;

use crate::cli::{Cli, Command, SamplingArgs};

pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    if cli.offline {
        ternlm_hub::cache::set_offline();
    }
    match cli.command {
        Command::Run(a) => run::run(a),
        Command::Chat(mut a) => {
            // `ternlm chat MODEL`, as `ollama run MODEL`.
            if let Some(m) = a.model_word.take() {
                a.model.model = Some(m);
            }
            chat::chat(a)
        }
        Command::Tokenize(a) => tokenize::tokenize(a),
        Command::Info(a) => info::info(a),
        Command::Bench(a) => bench::bench(a),
        Command::Fit(a) => fit::fit(a),
        Command::Dummy(a) => dummy::dummy(a),
        Command::Perplexity(a) => perplexity::perplexity(a),
        Command::Convert(a) => convert::convert(a),
        Command::Pull(a) => cache::pull(a),
        Command::List(a) => cache::list(a),
        Command::Rm(a) => cache::rm(a),
        Command::Serve(a) => serve::serve(a),
        Command::Report(a) => report::report(a),
    }
}

/// The tensor type named by `s` (case-insensitive, `-` or `_`), if it is one of `allowed`.
pub(crate) fn parse_type(s: &str, allowed: &[ternlm::WeightType], flag: &str) -> Result<ternlm::WeightType> {
    use anyhow::Context;
    ternlm::WeightType::by_name(s)
        .filter(|t| allowed.contains(t))
        .with_context(|| format!("{flag} {s:?} is not one of {}", allowed.iter().map(|t| t.name().to_ascii_lowercase()).collect::<Vec<_>>().join(", ")))
}

/// Bytes as MB or GB, for people.
pub(crate) fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 { format!("{:.2} GB", b / 1e9) } else { format!("{:.1} MB", b / 1e6) }
}

/// The sampler the flags describe; a missing seed is drawn from the clock.
pub(crate) fn sampler_config(s: &SamplingArgs) -> Result<SamplerConfig> {
    if !(s.temperature.is_finite() && s.temperature >= 0.0) {
        anyhow::bail!("--temperature must be a number >= 0 (0 is greedy), not {}", s.temperature);
    }
    if !(0.0..=1.0).contains(&s.top_p) {
        anyhow::bail!("--top-p must be between 0 and 1, not {}", s.top_p);
    }
    if !(0.0..=1.0).contains(&s.min_p) {
        anyhow::bail!("--min-p must be between 0 and 1, not {}", s.min_p);
    }
    if !(s.repeat_penalty.is_finite() && s.repeat_penalty > 0.0) {
        anyhow::bail!("--repeat-penalty must be a number > 0 (1 is off), not {}", s.repeat_penalty);
    }
    if s.max_tokens < -1 {
        anyhow::bail!("--max-tokens must be -1 (no limit) or a count >= 0, not {}", s.max_tokens);
    }
    let seed = match s.seed {
        // llama.cpp's convention: -1 asks for a random seed.
        None | Some(-1) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
        Some(n) if n < 0 => anyhow::bail!("--seed must be -1 (random) or a number >= 0, not {n}"),
        Some(n) => n as u64,
    };
    Ok(SamplerConfig {
        temperature: s.temperature,
        top_k: usize::try_from(s.top_k).unwrap_or(0),
        top_p: s.top_p,
        min_p: s.min_p,
        repeat_penalty: s.repeat_penalty,
        presence_penalty: 0.0,
        frequency_penalty: 0.0,
        logit_bias: Vec::new(),
        repeat_last_n: 64,
        seed,
    })
}

/// `--max-tokens` as a count; negative means "until the model stops or the context is full".
pub(crate) fn max_tokens(s: &SamplingArgs) -> usize {
    usize::try_from(s.max_tokens).unwrap_or(usize::MAX)
}

/// What a user typed, as the model sees it: surrounding whitespace (the newline `echo` adds,
/// a line's indentation) is not part of the message. `run` and `chat` both go through here,
/// so the same words get the same answer whichever way they arrive.
pub(crate) fn user_text(s: &str) -> &str {
    s.trim()
}

/// On a terminal, shows how far a long prompt has got; the line is cleared before the reply
/// starts.
pub(crate) fn show_prompt_progress(session: &mut ternlm::Session<'_>) {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        session.on_prompt_progress(|done, total| {
            if done < total {
                crate::out::note_raw!("\rprocessing the prompt: {done}/{total} tokens");
            } else {
                crate::out::note_raw!("\r\x1b[K");
            }
        });
    }
}

/// Generates from `prompt`, streaming the text to stdout as it comes when `stream`;
/// `keep_going()` is asked after each piece. A closed stdout stops generation and is the
/// error returned.
pub(crate) fn generate_to_stdout(session: &mut ternlm::Session<'_>, prompt: &[u32], params: &ternlm::GenerateParams, stream: bool, keep_going: &dyn Fn() -> bool) -> Result<ternlm::Generation> {
    let mut write_err = None;
    let generation = session.generate(prompt, params, &mut |text, _| {
        if stream
            && !text.is_empty()
            && let Err(e) = crate::out::write_flush(text)
        {
            write_err = Some(e);
            return false;
        }
        keep_going()
    })?;
    write_err.map_or(Ok(generation), Err)
}

/// Fails at once, before seconds of building, when `path` cannot be written: its folder is
/// missing, or the file cannot be created there.
pub(crate) fn check_writable(path: &std::path::Path) -> Result<()> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    if !parent.is_dir() {
        anyhow::bail!("cannot write {}: the folder {} does not exist", path.display(), parent.display());
    }
    if path.is_dir() {
        anyhow::bail!("cannot write {}: it is a folder", path.display());
    }
    let existed = path.exists();
    let probe = std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path);
    anyhow::Context::with_context(probe, || format!("cannot write {}", path.display()))?;
    if !existed {
        // Only a probe: a failed build must not leave an empty file behind.
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// All of stdin, as text; `what` names it in an error.
pub(crate) fn read_stdin(what: &str) -> Result<String> {
    let mut s = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut s).map_err(|e| anyhow::Error::new(e).context(format!("reading {what} from stdin")))?;
    Ok(s)
}
