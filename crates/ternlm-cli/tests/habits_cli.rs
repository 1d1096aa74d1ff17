//! The CLI as people use it: closed pipes, piped input with a prompt, Ollama's positional
//! MODEL PROMPT, llama.cpp's flag spellings, negative and repeated values, --offline
//! everywhere, --version, messages that name the real problem, output kept apart from
//! notes, help that matches behaviour, and limits said out loud.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{clean_failure, run_ternlm, scratch, text};

fn fixtures() -> PathBuf {
    std::env::var_os("TERNLM_FIXTURES").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"))
}

fn tiny() -> String {
    fixtures().join("tiny-bitnet-b158/tiny-bitnet-b158-i2_s.gguf").to_str().unwrap().to_string()
}

fn ternlm(args: &[&str], stdin: Option<&str>) -> Output {
    run_ternlm(args, stdin, &[])
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", text(&o.stderr));
    serde_json::from_str(text(&o.stdout).trim()).unwrap_or_else(|e| panic!("{e}: {}", text(&o.stdout)))
}

/// Runs `ternlm args` with stdout a pipe whose reader is already gone, as in `ternlm ... |
/// true` once `true` has exited.
fn with_closed_stdout(args: &[&str], home: Option<&Path>) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ternlm"));
    cmd.args(args).stdin(Stdio::null()).stdout(writer).stderr(Stdio::piped());
    if let Some(h) = home {
        cmd.env("TERNLM_HOME", h);
    }
    cmd.output().unwrap()
}

#[test]
fn a_closed_stdout_ends_every_command_quietly_with_sigpipe_status() {
    let t = tiny();
    let text_file = scratch("ppl.txt");
    std::fs::write(&text_file, "The quick brown fox jumps over the lazy dog. ".repeat(40)).unwrap();
    let home = scratch("home");
    let cases: Vec<Vec<&str>> = vec![
        vec!["info", &t],
        vec!["info", "--json", &t],
        vec!["list"],
        vec!["list", "--json", "--catalog"],
        vec!["tokenize", "-m", &t, "--text", "hi", "--json"],
        vec!["bench", "-m", &t, "-p", "0", "-n", "2", "-r", "1", "--no-probe", "--json"],
        vec!["bench", "-m", &t, "-p", "0", "-n", "2", "-r", "1", "--no-probe"],
        vec!["perplexity", "-m", &t, "-f", text_file.to_str().unwrap(), "-c", "64", "--chunks", "1", "--json"],
        vec!["run", "-m", &t, "-p", "hello", "-n", "3", "--raw", "--json"],
        vec!["run", "-m", &t, "-p", "hello", "-n", "3", "--raw", "--temperature", "0"],
        vec!["--help"],
    ];
    for args in cases {
        let home_arg = (args[0] == "list").then_some(home.as_path());
        let o = with_closed_stdout(&args, home_arg);
        let err = text(&o.stderr);
        // Generation may stop before writing anything (the tiny model can end at once), but
        // a write must never panic or print an error.
        assert!(matches!(o.status.code(), Some(0 | 141)), "{args:?}: status {:?}, stderr {err}", o.status);
        assert!(!err.contains("internal error") && !err.contains("Broken pipe") && !err.contains("panicked"), "{args:?}: {err}");
    }
    let o = with_closed_stdout(&["info", &t], None);
    assert_eq!(o.status.code(), Some(141), "info always writes");
}

#[test]
fn piped_stdin_comes_before_the_prompt_and_trailing_newlines_do_not_count() {
    let t = tiny();
    let base = ["run", "-m", &t, "-n", "1", "--temperature", "0", "--raw", "--json"];
    let with = |extra: &[&str], stdin: Option<&str>| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        json(&ternlm(&a, stdin))
    };
    let joined = with(&["-p", "What is the secret word?"], Some("The secret word is banana.\n"));
    assert_eq!(joined["prompt"], "The secret word is banana.\n\nWhat is the secret word?");
    let no_newline = with(&["-p", "What is the secret word?"], Some("The secret word is banana."));
    assert_eq!(joined["prompt_tokens"], no_newline["prompt_tokens"]);
    // echo's newline on a prompt given only on stdin changes nothing either.
    assert_eq!(with(&[], Some("Once upon a time\n"))["prompt_tokens"], with(&["-p", "Once upon a time"], None)["prompt_tokens"]);
    // A file comes first, then stdin, then the prompt.
    let f = scratch("doc.txt");
    std::fs::write(&f, "From the file.\n").unwrap();
    let all = with(&["-f", f.to_str().unwrap(), "-p", "Question?"], Some("From stdin.\n"));
    assert_eq!(all["prompt"], "From the file.\n\nFrom stdin.\n\nQuestion?");
    // Nothing at all is an error, not a generation from an empty prompt.
    assert!(clean_failure(&ternlm(&["run", "-m", &t, "-n", "1"], Some("\n"))).contains("empty"));
}

#[test]
fn chat_template_prompts_are_the_same_from_stdin_and_from_p() {
    // The default model has a chat template; `run` trims typed input as `chat` does.
    let args = ["run", "-n", "1", "--temperature", "0", "--json", "--offline"];
    let mut piped = args.to_vec();
    piped.push("--verbose");
    let a = json(&ternlm(&piped, Some("  What is the capital of France?\n\n")));
    let mut given = args.to_vec();
    given.extend_from_slice(&["-p", "What is the capital of France?"]);
    let b = json(&ternlm(&given, None));
    assert_eq!(a["prompt_tokens"], b["prompt_tokens"]);
}

#[test]
fn model_and_prompt_can_be_given_as_words() {
    let t = tiny();
    let v = json(&ternlm(&["run", &t, "Hello", "there", "-n", "1", "--raw", "--json"], None));
    assert_eq!(v["prompt"], "Hello there");
    assert!(v["model"].as_str().unwrap().ends_with("tiny-bitnet-b158-i2_s.gguf"));
    // With -m every word is the prompt.
    let v = json(&ternlm(&["run", "-m", &t, "Hello", "-n", "1", "--raw", "--json"], None));
    assert_eq!(v["prompt"], "Hello");
    // A prompt in the model's place is pointed out.
    let err = clean_failure(&ternlm(&["run", "What is the capital of France?"], None));
    assert!(err.contains("-p") && err.contains("MODEL PROMPT"), "{err}");
    let err = clean_failure(&ternlm(&["run", "-m", &t, "-p", "a", "b"], None));
    assert!(err.contains("twice"), "{err}");
    // `chat MODEL` names the model the same way (a missing one fails naming it).
    let err = clean_failure(&ternlm(&["chat", "/nonexistent/m.gguf"], Some("/bye\n")));
    assert!(err.contains("/nonexistent/m.gguf"), "{err}");
}

#[test]
fn llama_cpp_spellings_negative_values_and_repeated_flags() {
    let t = tiny();
    let o = ternlm(
        &["run", "-m", &t, "-p", "Hello", "--temp", "0", "--n-predict", "9", "-n", "3", "-s", "5", "-c", "64", "--top-k", "40", "--repeat-penalty", "1.1", "-ngl", "99", "--raw", "--json"],
        None,
    );
    let v = json(&o);
    assert!(v["tokens"].as_array().unwrap().len() <= 3, "the last -n wins");
    assert!(text(&o.stderr).contains("ignored"), "-ngl is noted: {}", text(&o.stderr));
    let o = ternlm(&["bench", "-m", &t, "-ngl", "99", "-p", "0", "-n", "1", "-r", "1", "--no-probe", "--json"], None);
    assert!(o.status.success() && text(&o.stderr).contains("ignored"), "llama-bench's -ngl: {}", text(&o.stderr));
    // The last of a repeated flag wins, as shell aliases expect.
    let a = json(&ternlm(&["run", "-m", &t, "-p", "Hello", "-n", "4", "--temperature", "1", "--seed", "3", "--temperature", "0", "--raw", "--json"], None));
    let b = json(&ternlm(&["run", "-m", &t, "-p", "Hello", "-n", "4", "--temperature", "0", "--raw", "--json"], None));
    assert_eq!(a["tokens"], b["tokens"]);
    // -1 is llama.cpp's random seed.
    assert!(ternlm(&["run", "-m", &t, "-p", "Hello", "-n", "1", "--seed", "-1", "--raw"], None).status.success());
    for (args, needle) in [(vec!["--temperature", "-1"], "--temperature"), (vec!["-n", "-2"], "--max-tokens"), (vec!["--seed", "-5"], "--seed"), (vec!["--top-p", "-0.5"], "--top-p")] {
        let mut a = vec!["run", "-m", &t, "-p", "Hello", "--raw"];
        a.extend(args);
        let err = clean_failure(&ternlm(&a, None));
        assert!(err.contains(needle) && !err.contains("unexpected argument"), "{err}");
    }
}

#[test]
fn offline_is_accepted_by_every_command_that_may_download() {
    let home = scratch("offline-home");
    for args in [
        vec!["run", "--offline", "-m", "smollm2-135m", "-p", "x"],
        vec!["chat", "--offline", "smollm2-135m"],
        vec!["info", "--offline", "smollm2-135m"],
        vec!["tokenize", "--offline", "-m", "smollm2-135m", "-p", "x"],
        vec!["bench", "--offline", "-m", "smollm2-135m"],
        vec!["perplexity", "--offline", "-m", "smollm2-135m", "-f", "/dev/null"],
        vec!["convert", "--offline", "smollm2-135m-hf", "-o", "/tmp/x.gguf"],
        vec!["serve", "--offline", "-m", "smollm2-135m", "--port", "0"],
        vec!["pull", "--offline", "smollm2-135m"],
    ] {
        let o = run_ternlm(&args, None, &[("TERNLM_HOME", home.as_path())]);
        let err = clean_failure(&o);
        assert!(err.contains("offline"), "{args:?}: {err}");
    }
}

#[test]
fn tokenize_reads_p_a_file_or_stdin() {
    let t = tiny();
    let f = scratch("tok.txt");
    std::fs::write(&f, "Hello world").unwrap();
    let from_p = ternlm(&["tokenize", "-m", &t, "-p", "Hello world"], None);
    let from_text = ternlm(&["tokenize", "-m", &t, "--text", "Hello world"], None);
    let from_file = ternlm(&["tokenize", "-m", &t, "-f", f.to_str().unwrap()], None);
    let from_stdin = ternlm(&["tokenize", "-m", &t], Some("Hello world"));
    assert_eq!(text(&from_p.stdout).trim(), "1 19556 905");
    for o in [&from_text, &from_file, &from_stdin] {
        assert_eq!(text(&o.stdout), text(&from_p.stdout));
    }
}

#[test]
fn version_names_the_commit_the_build_date_and_the_kernel_level() {
    let o = ternlm(&["--version"], None);
    assert!(o.status.success());
    let v = text(&o.stdout);
    assert!(v.starts_with(&format!("ternlm {}", env!("CARGO_PKG_VERSION"))), "{v}");
    for want in ["commit: ", "built: 20", "cpu kernels: ", "gpu backend: "] {
        assert!(v.contains(want), "--version lacks {want:?}: {v}");
    }
    assert!(["scalar", "avx2", "avx512", "amx"].iter().any(|l| v.contains(&format!("cpu kernels: {l}"))), "{v}");
    let forced = run_ternlm(&["--version"], None, &[("TERNLM_ISA", Path::new("scalar"))]);
    assert!(text(&forced.stdout).contains("cpu kernels: scalar"));
}

#[test]
fn messages_point_at_the_real_problem() {
    let t = tiny();
    let err = clean_failure(&ternlm(&["perplexity", "-m", &t, "-f", "/dev/null", "--chunks", "0"], None));
    assert!(err.contains("--chunks"), "{err}");
    // The output path is checked before seconds of building.
    let start = std::time::Instant::now();
    let err = clean_failure(&ternlm(&["dummy", "--shape", "2b4t", "-o", "/nonexistent/dir/x.gguf"], None));
    assert!(err.contains("cannot write") && err.contains("does not exist"), "{err}");
    assert!(start.elapsed().as_secs() < 3, "checked first");
    let dir = scratch("folder");
    std::fs::create_dir_all(&dir).unwrap();
    let err = clean_failure(&ternlm(&["info", dir.to_str().unwrap()], None));
    assert!(err.contains("config.json") && err.contains("Hugging Face") && !err.contains("not a GGUF"), "{err}");
    let bad = scratch("bad.gguf");
    std::fs::write(&bad, "hello, I am text").unwrap();
    let err = clean_failure(&ternlm(&["run", "-m", bad.to_str().unwrap(), "-p", "x"], None));
    assert!(err.contains("\"hell\"") && !err.contains("[104"), "{err}");
    assert_eq!(err.matches(bad.to_str().unwrap()).count(), 1, "the path once: {err}");
    let missing = "/nonexistent/model.gguf";
    let err = clean_failure(&ternlm(&["run", "-m", missing, "-p", "x"], None));
    assert_eq!(err.matches(missing).count(), 1, "the path once: {err}");
}

#[test]
fn generated_text_and_notes_stay_apart() {
    let t = tiny();
    // --verbose with stdout redirected: the text's line ends before the timings.
    let o = ternlm(&["run", "-m", &t, "-p", "Hello", "-n", "5", "--temperature", "0", "--raw", "--verbose"], None);
    assert!(o.status.success());
    let out = text(&o.stdout);
    assert!(out.is_empty() || out.ends_with('\n'), "{out:?}");
    // Perplexity's progress is for terminals only.
    let f = scratch("ppl2.txt");
    std::fs::write(&f, "The quick brown fox jumps over the lazy dog. ".repeat(40)).unwrap();
    let o = ternlm(&["perplexity", "-m", &t, "-f", f.to_str().unwrap(), "-c", "64", "--chunks", "2"], None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains('\r') && !text(&o.stdout).contains('\r'));
    // Two thread counts: one table, then the bandwidth lines.
    let o = ternlm(&["bench", "-m", &t, "-t", "1,2", "-p", "0", "-n", "2", "-r", "1"], None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    let rows: Vec<usize> = lines.iter().enumerate().filter(|(_, l)| l.starts_with('|')).map(|(i, _)| i).collect();
    assert_eq!(rows.len(), 4, "{out}");
    assert_eq!(rows.last().unwrap() - rows[0], 3, "the table is not split: {out}");
    let probe_lines: Vec<usize> = lines.iter().enumerate().filter(|(_, l)| l.contains("bandwidth ceiling")).map(|(i, _)| i).collect();
    assert_eq!(probe_lines.len(), 2, "{out}");
    assert!(probe_lines[0] > *rows.last().unwrap(), "{out}");
}

#[test]
fn help_matches_behaviour() {
    let help = |args: &[&str]| text(&ternlm(args, None).stdout);
    // Help is wrapped to the terminal's width: compare words, not lines.
    let words = |s: String| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words(help(&["perplexity", "--help"])).contains("default: 512"));
    assert!(words(help(&["convert", "--help"])).contains("bf16"));
    let top = help(&["--help"]);
    for var in ["TERNLM_HOME", "TERNLM_OFFLINE", "HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE", "TERNLM_ISA", "TERNLM_API_KEY"] {
        assert!(top.contains(var), "--help lacks {var}");
    }
    for cmd in ["run", "chat", "info", "tokenize", "bench", "perplexity", "serve"] {
        let h = help(&[cmd, "--help"]);
        // The words of -m's help, however the lines were wrapped.
        let m = h.lines().skip_while(|l| !l.contains("--model")).flat_map(str::split_whitespace).take(40).collect::<Vec<_>>().join(" ");
        assert!(m.contains("default: smollm2-135m"), "{cmd} --help: -m does not name the default model: {m}");
    }
}

#[test]
fn limits_are_said_out_loud() {
    let t = tiny();
    // The tiny model was trained with 2048 positions.
    let o = ternlm(&["run", "-m", &t, "-p", "Hello", "-n", "1", "-c", "4096", "--raw"], None);
    assert!(o.status.success());
    assert!(text(&o.stderr).contains("trained with (2048)"), "{}", text(&o.stderr));
    // A full context is reported without --verbose: the tiny model, greedy, never ends this
    // prompt by itself within 10 positions.
    let args = ["run", "-m", &t, "-p", "Hello world, this is", "-n", "-1", "-c", "10", "--temperature", "0", "--raw"];
    let o = ternlm(&args, None);
    assert!(o.status.success());
    assert!(text(&o.stdout).ends_with('\n'), "the text's line ends before the note");
    assert!(text(&o.stderr).contains("context of 10 tokens is full"), "{}", text(&o.stderr));
    let mut with_json = args.to_vec();
    with_json.push("--json");
    assert_eq!(json(&ternlm(&with_json, None))["stop_type"], "context");
    let o = ternlm(&["run", "--offline", "-p", "Hello", "-n", "1", "--ternary-layout", "1.6"], None);
    assert!(text(&o.stderr).contains("no effect"), "{}", text(&o.stderr));
    let err = clean_failure(&ternlm(&["bench", "-m", &t, "-p", "5000", "-n", "0"], None));
    assert!(err.contains("context"), "{err}");
    let o = ternlm(&["run", "-m", &t, "-p", "Hello", "-n", "1", "-t", "64", "--raw"], None);
    assert!(text(&o.stderr).contains("more than the"), "{}", text(&o.stderr));
}

/// The words of a shell command line, with double-quoted parts kept whole.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

#[test]
fn the_readme_first_command_answers_correctly_every_time() {
    let readme = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let line = readme.lines().find(|l| l.starts_with("cargo run --release -p ternlm-cli -- run")).expect("the quick start's first command");
    let words = shell_words(line.split_once(" -- ").unwrap().1);
    let args: Vec<&str> = words.iter().map(String::as_str).collect();
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let o = ternlm(&args, None);
        assert!(o.status.success(), "{}", text(&o.stderr));
        outputs.push(text(&o.stdout));
    }
    assert_eq!(outputs[0], outputs[1], "the same answer every time");
    assert!(outputs[0].contains("Berlin"), "{}", outputs[0]);
    assert!(readme.contains(&format!("prints \"{}\"", outputs[0].trim())), "the README shows what it prints: {}", outputs[0]);
}

#[test]
fn run_on_a_terminal_without_a_prompt_starts_chat() {
    // `script` (util-linux) gives ternlm a terminal; what it reads comes from our pipe.
    let cmd = format!("{} run -m {}", env!("CARGO_BIN_EXE_ternlm"), tiny());
    let mut child = Command::new("script").args(["-qec", &cmd, "/dev/null"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("script (util-linux) runs");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"/bye\n").unwrap();
    let o = child.wait_with_output().unwrap();
    let all = text(&o.stdout);
    assert!(o.status.success(), "{all}");
    assert!(all.contains("starting `ternlm chat`") && all.contains("ternlm chat: ternlm-tiny-bitnet-b158"), "{all}");
}
