//! `ternlm tokenize`: token ids of a text, optionally with pieces as JSON. Only the
//! tokenizer is built; weights are never loaded. The text comes from -p/--text, a file or
//! stdin, exactly as given (no trimming: the tokens of every byte are the point).

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::json;
use ternlm::ModelFileInfo;

use super::read_stdin;
use crate::cli::TokenizeArgs;
use crate::load::{model_path, naming_path};
use crate::out::outln;

pub fn tokenize(args: TokenizeArgs) -> Result<ExitCode> {
    let path = model_path(args.model.as_deref())?;
    let info = naming_path(ModelFileInfo::open(&path, ternlm::default_threads()), "reading", &path)?;
    let tok = info.tokenizer()?;
    let text = match (&args.text, &args.file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?,
        (None, None) => {
            if std::io::stdin().is_terminal() {
                anyhow::bail!("no text: pass -p TEXT, -f FILE or pipe the text on stdin");
            }
            read_stdin("the text")?
        }
    };
    let mut ids = tok.encode(&text, false, !args.no_parse_special)?;
    let add_bos = if args.bos {
        true
    } else if args.no_bos {
        false
    } else {
        tok.add_bos
    };
    if add_bos {
        let bos = tok.bos.context("the model has no BOS token")?;
        ids.insert(0, bos);
    }
    if args.json {
        let pieces: Vec<String> = ids.iter().map(|&id| String::from_utf8_lossy(tok.piece(id)).into_owned()).collect();
        outln!("{}", json!({ "ids": ids, "pieces": pieces }))?;
    } else {
        let s: Vec<String> = ids.iter().map(u32::to_string).collect();
        outln!("{}", s.join(" "))?;
    }
    Ok(ExitCode::SUCCESS)
}
