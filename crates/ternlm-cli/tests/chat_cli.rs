//! `ternlm chat` driven through a pipe, as a script would: slash commands never reach the
//! model, `"""` blocks are one message, `/save` and `/load` round-trip, bad input lines are
//! skipped, a model without a template chats in ChatML, and a closed stdout ends quietly.
//! Replies are greedy and short (`--temperature 0 -n 8`) to keep this fast; `--verbose`
//! prints one timing line per reply, which is how the tests count what reached the model.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{scratch, text};

fn tiny() -> PathBuf {
    let fixtures = std::env::var_os("TERNLM_FIXTURES").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"));
    fixtures.join("tiny-bitnet-b158/tiny-bitnet-b158-i2_s.gguf")
}

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ternlm"));
    cmd.arg("chat").args(["--temperature", "0", "-n", "8", "--verbose"]).args(args).env("TERNLM_OFFLINE", "1");
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// `ternlm chat --temperature 0 -n 8 --verbose ARGS` (the default model unless ARGS name
/// one) with `input` on stdin.
fn chat(args: &[&str], input: &[u8]) -> Output {
    let mut child = command(args).spawn().expect("ternlm runs");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(!text(&o.stderr).contains("panicked"), "{}", text(&o.stderr));
    o
}

/// How many replies the model gave (one `--verbose` timing line each).
fn replies(o: &Output) -> usize {
    text(&o.stderr).lines().filter(|l| l.starts_with("ternlm: prompt ")).count()
}

fn saved(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn slash_commands_never_reach_the_model() {
    let o = chat(&[], b"/set temperature -1\n/set top_p 5\n/set top-k 7\n/set --min-p 0.1\n/set warmth 2\n/show\n/show parameters\n/foo\n/usr/bin\n/help\n/bye\nnot sent\n");
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert_eq!(replies(&o), 0, "{err}");
    assert!(err.contains("ternlm: --temperature must be a number >= 0") && err.contains("ternlm: --top-p must be between 0 and 1"), "{err}");
    assert!(err.contains("unknown option \"warmth\""), "{err}");
    assert!(err.contains("unknown command /foo; type /? for help") && err.contains("unknown command /usr/bin; type /? for help"), "{err}");
    // The unknown command brought help to stderr; /help brought it to stdout.
    assert!(err.contains("/set system TEXT") && out.contains("/set system TEXT"), "{out}");
    assert!(out.contains("template      the model's own"), "{out}");
    assert!(out.contains("temperature 0, top_k 7, top_p 0.95, min_p 0.1"), "refused values change nothing: {out}");
    assert!(out.lines().any(|l| l == "top_k           7"), "{out}");
}

#[test]
fn a_block_is_one_message_and_save_load_round_trip() {
    let file = scratch("chat.json");
    let f = file.to_str().unwrap();
    let input = format!("\"\"\"\nWhat is\n  2+2?\n\"\"\"\n/set system \"\"\"Be\nbrief.\"\"\"\n/set top_k 3\n/save {f}\n/bye\n");
    let o = chat(&[], input.as_bytes());
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(replies(&o), 1);
    let v = saved(&file);
    assert_eq!(v["messages"][0], serde_json::json!({"role": "user", "content": "What is\n  2+2?"}));
    assert_eq!(v["messages"][1]["role"], "assistant");
    assert_eq!(v["messages"][1]["content"].as_str().unwrap(), text(&o.stdout).trim_end_matches('\n'));
    assert_eq!((&v["system"], &v["options"]["top_k"], &v["options"]["temperature"]), (&serde_json::json!("Be\nbrief."), &serde_json::json!(3), &serde_json::json!(0.0)));

    // A new session takes the conversation and its options, replacing what it had.
    let o = chat(&["--top-k", "50"], format!("hi\n/load {f}\n/show\n/show system\n/load {f}.missing\n/exit\n").as_bytes());
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(out.contains("messages      2 ") && out.contains("top_k 3,") && out.contains("\nBe\nbrief.\n"), "{out}");
    assert!(text(&o.stderr).contains(".missing: No such file"), "{}", text(&o.stderr));
}

#[test]
fn a_line_that_is_not_utf8_is_skipped() {
    let o = chat(&[], b"\xff\xfe\n   \n/clear\n/quit\n");
    assert!(o.status.success());
    assert!(text(&o.stderr).contains("ternlm: line 1 is not valid UTF-8; skipped"), "{}", text(&o.stderr));
    assert_eq!(replies(&o), 0);
}

#[test]
fn a_model_without_a_template_chats_in_chatml() {
    let t = tiny();
    let o = chat(&["-m", t.to_str().unwrap(), "-c", "64"], b"hi\n/show template\none two three four five six seven\neight nine ten eleven twelve\nthirteen fourteen\n");
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("ternlm: note: ternlm-tiny-bitnet-b158 has no chat template; using ChatML\n"), "{err}");
    assert!(text(&o.stdout).contains("# ChatML fallback"));
    assert_eq!(replies(&o), 4, "{err}");
    // 64 tokens hold about two turns: the oldest give way, and the user is told.
    assert!(err.contains("(context full: dropped the "), "{err}");
}

#[test]
fn a_closed_stdout_ends_quietly_with_141() {
    let mut child = command(&[]).spawn().expect("ternlm runs");
    drop(child.stdout.take());
    child.stdin.take().unwrap().write_all(b"hi\n/bye\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(141), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("error"), "{}", text(&o.stderr));
}
