//! A loaded model: the mapped GGUF file, hyperparameters, weights in kernel layout, the
//! tokenizer, the chat template and the thread pool its kernels run on.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ternlm_format::{GgufFile, Metadata};
use ternlm_kernels::ThreadPool;

use crate::backend::{Backend, CpuBackend, GpuBackend};
use crate::chat::{ChatTemplate, Message};
use crate::config::Config;
use crate::devices::DeviceChoice;
use crate::error::{ModelError, Result};
use crate::sequence::Sequence;
use crate::session::Session;
use crate::speculate::StepCost;
use crate::tokenizer::{self, Tokenizer};
use crate::weights::Weights;

#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Threads for the kernels (the calling thread counts as one).
    pub threads: usize,
    /// How ternary weights are stored for the kernels (2-bit, or 1.6-bit to read fewer bytes
    /// per token at more arithmetic).
    pub ternary_layout: TernaryLayout,
    /// Repack the output head into int8 rows (one f32 scale per row): half the bytes of an
    /// F16 head, at a small perplexity cost (see the README).
    pub int8_head: bool,
    /// Where the arithmetic runs. On a GPU, ternary weights keep the 2-bit layout and the
    /// head stays as stored (`ternary_layout` and `int8_head` are CPU layouts).
    pub device: DeviceChoice,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { threads: default_threads(), ternary_layout: TernaryLayout::Bits2, int8_head: false, device: DeviceChoice::Cpu }
    }
}

/// How ternary weights are kept in memory once loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TernaryLayout {
    /// 2 bits per weight: the fastest to unpack.
    #[default]
    Bits2,
    /// 1.6 bits per weight (5 per byte): decode reads 20% fewer bytes and does about twice
    /// the unpacking work, so it pays only where memory bandwidth limits decode. Matrices with
    /// per-block scales stay 2-bit.
    Bits1_6,
}

impl From<TernaryLayout> for ternlm_kernels::ternary::TernaryLayout {
    fn from(l: TernaryLayout) -> Self {
        match l {
            TernaryLayout::Bits2 => Self::Bits2,
            TernaryLayout::Bits1_6 => Self::Bits1_6,
        }
    }
}

/// The number of threads to use when the user does not say: the physical cores (SMT
/// siblings share one core's execution units, and these kernels saturate them), never more
/// than [`usable_cpus`].
pub fn default_threads() -> usize {
    let usable = usable_cpus();
    physical_cores().map_or(usable, |p| p.clamp(1, usable))
}

/// The CPUs this process may run on at once: more threads than this can only take turns
/// (the thread pool keeps the extra ones parked). This is
/// [`std::thread::available_parallelism`], which on Linux already honours the affinity mask
/// (`sched_getaffinity`, as set by `taskset` or a cpuset) and a cgroup CPU quota
/// (`cpu.max` in cgroup v2, `cpu.cfs_quota_us` in v1, rounded down, at least 1); 1 where
/// it cannot tell.
pub fn usable_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Physical cores: distinct (package, core) pairs in /proc/cpuinfo, where that file exists.
pub fn physical_cores() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mut cores = std::collections::HashSet::new();
    let (mut package, mut core) = (None, None);
    for line in info.lines().chain(std::iter::once("")) {
        let mut kv = line.splitn(2, ':').map(str::trim);
        match (kv.next(), kv.next()) {
            (Some("physical id"), Some(v)) => package = Some(v.to_string()),
            (Some("core id"), Some(v)) => core = Some(v.to_string()),
            (Some(""), None) => {
                if let (Some(p), Some(c)) = (package.take(), core.take()) {
                    cores.insert((p, c));
                }
            }
            _ => {}
        }
    }
    (!cores.is_empty()).then_some(cores.len())
}

/// The GGUF view of a model path: the mapped file, or, for a Hugging Face checkpoint
/// folder, the GGUF image it converts to in memory (on `threads` threads), by the same code
/// as `ternlm convert`, ternary linears kept lossless (I2_S, one f32 scale per matrix). The
/// checkpoint's own pages are unmapped once the image is built.
pub(crate) fn open_model_file(path: &Path, threads: usize) -> Result<GgufFile> {
    if crate::hf::is_checkpoint_dir(path) {
        let conv = crate::hf::Conversion::plan(path, &crate::hf::ConvertOptions::for_loading())?;
        return conv.to_gguf(threads.max(1));
    }
    if path.is_dir() {
        let reason = "a folder without config.json is no model: give a GGUF file, or a Hugging Face checkpoint folder (config.json, *.safetensors and tokenizer.json)";
        return Err(ModelError::Checkpoint { path: path.to_path_buf(), reason: reason.into() });
    }
    Ok(GgufFile::open(path)?)
}

/// `source` compiled, with the tokenizer's BOS and EOS text that templates refer to.
fn compile_template(source: &str, tok: &Tokenizer) -> Result<ChatTemplate> {
    let text = |id: Option<u32>| id.and_then(|i| tok.token_text(i)).unwrap_or("").to_string();
    ChatTemplate::new(source, &text(tok.bos), &text(tok.eos))
}

pub struct Model {
    path: PathBuf,
    file: Arc<GgufFile>,
    pub config: Config,
    backend: Box<dyn Backend>,
    pub tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    /// The model's own template; `None` with a `template` is the ChatML fallback.
    template_source: Option<String>,
    pool: Arc<ThreadPool>,
    load_time: Duration,
    /// The model that drafts tokens for this one, when attached.
    draft: Option<Box<Model>>,
    /// What steps of several positions cost here, as measured.
    step_cost: StepCost,
    /// Where it runs and, for `auto`, why: "cpu", "gpu:0 NVIDIA ... (vulkan)",
    /// "cpu (auto: no discrete GPU ...)".
    device: String,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("path", &self.path).field("config", &self.config).finish_non_exhaustive()
    }
}

/// A conversation rendered by the chat template, with the byte ranges that came from message
/// content (tokenized without control tokens).
#[derive(Clone, Debug)]
pub struct RenderedChat {
    text: String,
    literal: Vec<Range<usize>>,
}

impl RenderedChat {
    /// The prompt text, as `render_chat` gives it.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn into_text(self) -> String {
        self.text
    }
}

impl Model {
    pub fn load(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        let start = Instant::now();
        let path = path.as_ref().to_path_buf();
        let file = Arc::new(open_model_file(&path, opts.threads)?);
        let tokenizer = Tokenizer::from_metadata(file.as_ref())?;
        let config = Config::from_metadata(file.as_ref(), Some(tokenizer.n_vocab()))?;
        if tokenizer.n_vocab() != config.n_vocab {
            return Err(ModelError::Tokenizer(format!("the tokenizer has {} tokens but the model's vocabulary is {}", tokenizer.n_vocab(), config.n_vocab)));
        }
        let pool = Arc::new(ThreadPool::new(opts.threads.max(1)));
        let (backend, device) = Self::backend_for(&file, &config, &pool, opts)?;
        let template_source = tokenizer::chat_template(file.as_ref())?;
        let template = template_source.as_deref().map(|src| compile_template(src, &tokenizer)).transpose()?;
        Ok(Self { path, file, config, backend, tokenizer, template, template_source, pool, load_time: start.elapsed(), draft: None, step_cost: StepCost::default(), device })
    }

    /// The backend for `opts.device`, with what to say about the choice.
    fn backend_for(file: &Arc<GgufFile>, config: &Config, pool: &Arc<ThreadPool>, opts: &LoadOptions) -> Result<(Box<dyn Backend>, String)> {
        let cpu = |why: Option<String>| -> Result<(Box<dyn Backend>, String)> {
            let weights = Weights::load(file, config, pool, opts)?;
            let note = why.map_or_else(|| "cpu".to_string(), |w| format!("cpu (auto: {w})"));
            Ok((Box::new(CpuBackend::new(config.clone(), weights, pool.clone())), note))
        };
        // The GPU takes the file's own layouts: 2-bit ternary rows, the head as stored.
        let gpu_opts = LoadOptions { ternary_layout: TernaryLayout::Bits2, int8_head: false, ..opts.clone() };
        let on_gpu = |index: Option<usize>, weights: Weights| -> Result<(Box<dyn Backend>, String)> {
            let gpu = ternlm_gpu::Gpu::open(index).map_err(|e| ModelError::Gpu(e.to_string()))?;
            let b = GpuBackend::new(config.clone(), weights, gpu)?;
            let a = b.adapter();
            let note = format!("gpu:{} {} ({}{})", a.index, a.name, a.backend.as_str(), if a.software { ", software" } else { "" });
            Ok((Box::new(b), note))
        };
        match opts.device {
            DeviceChoice::Cpu => cpu(None).map(|(b, _)| (b, "cpu".to_string())),
            DeviceChoice::Gpu(index) => on_gpu(index, Weights::load(file, config, pool, &gpu_opts)?),
            // The file's size stands for the weights' (the GPU keeps them as stored).
            DeviceChoice::Auto => match crate::devices::auto_pick(file.len() as usize) {
                Err(why) => cpu(Some(why)),
                Ok(dev) => match Weights::load(file, config, pool, &gpu_opts).and_then(|w| on_gpu(Some(dev.index), w)) {
                    Ok(b) => Ok(b),
                    Err(e) => cpu(Some(format!("{} failed: {e}", dev.name))),
                },
            },
        }
    }

    /// Where the model runs: "cpu", or the GPU adapter ("gpu:0 NAME (vulkan)"); after
    /// `--device auto` on the CPU, why no GPU was taken ("cpu (auto: ...)").
    pub fn device(&self) -> &str {
        &self.device
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What to call the model: its GGUF `general.name`, else its file name without the
    /// extension (a checkpoint folder's name).
    pub fn name(&self) -> String {
        match self.file.str_of("general.name") {
            Ok(Some(n)) if !n.trim().is_empty() => n.trim().to_string(),
            _ => self.path.file_stem().map_or_else(|| self.path.display().to_string(), |s| s.to_string_lossy().into_owned()),
        }
    }

    pub(crate) fn file(&self) -> &GgufFile {
        &self.file
    }

    pub(crate) fn pool(&self) -> &ThreadPool {
        &self.pool
    }

    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }

    /// The model's own chat template, as its file gives it (`None` when it has none, even
    /// after [`with_chat_template_fallback`](Self::with_chat_template_fallback)).
    pub fn chat_template_source(&self) -> Option<&str> {
        self.template_source.as_deref()
    }

    /// The model, rendering chats with ChatML ([`CHATML_TEMPLATE`](crate::chat::CHATML_TEMPLATE))
    /// when it has no template of its own, for a caller that would rather guess a format than
    /// refuse to chat. ChatML's markers become control tokens only where the vocabulary has
    /// them ([`chatml_markers_are_tokens`](Self::chatml_markers_are_tokens)); otherwise they
    /// are plain text, which a model never trained on them reads as such. Message content is
    /// still literal text either way.
    pub fn with_chat_template_fallback(mut self) -> Result<Self> {
        if self.template.is_none() {
            self.template = Some(compile_template(crate::chat::CHATML_TEMPLATE, &self.tokenizer)?);
        }
        Ok(self)
    }

    /// Whether chats render with the ChatML fallback instead of the model's own template.
    pub fn chat_template_is_fallback(&self) -> bool {
        self.template.is_some() && self.template_source.is_none()
    }

    /// Whether both ChatML markers (`<|im_start|>`, `<|im_end|>`) are special tokens of the
    /// vocabulary, so that ChatML's markup tokenizes as the model was trained to see it.
    pub fn chatml_markers_are_tokens(&self) -> bool {
        crate::chat::CHATML_MARKERS.iter().all(|m| self.tokenizer.special_token_id(m).is_some())
    }

    /// Renders a conversation with the model's template, or `None` when it has none.
    pub fn render_chat(&self, messages: &[Message], add_generation_prompt: bool) -> Result<Option<String>> {
        self.template.as_ref().map(|t| t.render(messages, add_generation_prompt)).transpose()
    }

    /// Tokens of a prompt rendered by the chat template: special-token text becomes those
    /// tokens, and BOS is added when the metadata asks for it unless the template already
    /// wrote it. All of the text is trusted: for a conversation from users, whose content
    /// must not become control tokens, use [`encode_chat`](Self::encode_chat).
    pub fn encode_rendered(&self, rendered: &str) -> Result<Vec<u32>> {
        self.encode_template_output(rendered, &[])
    }

    /// Renders and tokenizes a conversation, or `None` when the model has no chat template.
    /// Only the template's own markup becomes control tokens: control-token text inside a
    /// message's content (a user writing `<|im_end|>`) is tokenized as plain text. Content
    /// without such text gives exactly the tokens of
    /// `encode_rendered(render_chat(messages, ..))`. Fails with [`ModelError::ChatContent`]
    /// when a message's control-token text cannot be told from the template's markup (see
    /// [`ChatTemplate::render_with_literal_spans`]).
    pub fn encode_chat(&self, messages: &[Message], add_generation_prompt: bool) -> Result<Option<Vec<u32>>> {
        self.render_chat_literal(messages, add_generation_prompt)?.map(|chat| self.encode_chat_rendered(&chat)).transpose()
    }

    /// The first half of [`encode_chat`](Self::encode_chat): the rendered conversation with
    /// where its message content lies, for a caller that also needs the text (to check its
    /// length, to log it) without rendering twice.
    pub fn render_chat_literal(&self, messages: &[Message], add_generation_prompt: bool) -> Result<Option<RenderedChat>> {
        let Some(template) = &self.template else {
            return Ok(None);
        };
        let (text, literal) = template.render_with_literal_spans(messages, add_generation_prompt, |t| self.tokenizer.control_text_spans(t))?;
        Ok(Some(RenderedChat { text, literal }))
    }

    /// The second half of [`encode_chat`](Self::encode_chat): the tokens of a rendered
    /// conversation, control tokens matched only outside its message content.
    pub fn encode_chat_rendered(&self, chat: &RenderedChat) -> Result<Vec<u32>> {
        self.encode_template_output(&chat.text, &chat.literal)
    }

    fn encode_template_output(&self, rendered: &str, literal: &[Range<usize>]) -> Result<Vec<u32>> {
        let tok = &self.tokenizer;
        // BOS text that message content put first is no BOS.
        let bos_written = tok.bos.and_then(|b| tok.token_text(b)).is_some_and(|t| !t.is_empty() && rendered.starts_with(t) && literal.iter().all(|r| r.is_empty() || r.start >= t.len()));
        tok.encode_with_literal_spans(rendered, !bos_written, literal)
    }

    /// An empty sequence with room for `n_ctx` positions (clamped to at least 1), its KV
    /// store on this model's backend.
    pub fn new_sequence(&self, n_ctx: usize) -> Sequence {
        Sequence::new(self.backend.new_kv(n_ctx.max(1)))
    }

    pub(crate) fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Threads the forward pass runs on.
    pub fn threads(&self) -> usize {
        self.backend.threads()
    }

    /// Where the arithmetic runs ("cpu").
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Each kind of weights the model multiplies by (`q4_1`, `q8_0`, `ternary`, `int8`, ...)
    /// with the CPU kernel level its products run at (`avx512`, or `avx2` for kinds whose
    /// AVX-512 level runs AVX2 code); empty on a GPU.
    pub fn kernel_levels(&self) -> Vec<(&'static str, &'static str)> {
        self.backend.kernel_levels()
    }

    /// Bytes of weights one forward step reads, whatever its number of positions, in the
    /// layout the kernels use (which differs from the file's when ternary weights are
    /// repacked or the head is int8): the traffic decode speed is bound by.
    pub fn weight_bytes_per_step(&self) -> usize {
        self.backend.weight_bytes_per_step()
    }

    /// Attaches `draft` as the model that drafts tokens for this one
    /// ([`SpeculateMode::Draft`](crate::SpeculateMode::Draft)). Its vocabulary must be this
    /// model's, token for token: a drafted id must mean the same text to both.
    pub fn with_draft_model(mut self, draft: Model) -> Result<Self> {
        let (a, b) = (&self.tokenizer, &draft.tokenizer);
        if a.n_vocab() != b.n_vocab() {
            return Err(ModelError::DraftMismatch(format!("its vocabulary has {} tokens, the model's has {}", b.n_vocab(), a.n_vocab())));
        }
        if let Some(id) = (0..a.n_vocab() as u32).find(|&i| a.token_text(i) != b.token_text(i)) {
            return Err(ModelError::DraftMismatch(format!("token {id} is {:?} in the draft model but {:?} in the model", b.token_text(id).unwrap_or(""), a.token_text(id).unwrap_or(""))));
        }
        self.draft = Some(Box::new(draft));
        Ok(self)
    }

    /// The attached draft model.
    pub fn draft_model(&self) -> Option<&Model> {
        self.draft.as_deref()
    }

    /// `costs[p]` for `p` in `0..=max`: the time of a step that feeds `p` positions (the
    /// sampled token and `p - 1` drafted ones) relative to a plain one-token step, as
    /// measured; with a draft model, plus its own step per drafted token.
    pub(crate) fn draft_costs(&self, max: usize) -> Vec<f64> {
        let drafting = match (&self.draft, self.step_cost.one_step()) {
            (Some(d), Some(one)) if one > 0.0 => d.step_cost.one_step().map_or(0.0, |t| t / one),
            (Some(d), _) => d.weight_bytes_per_step() as f64 / self.weight_bytes_per_step().max(1) as f64,
            (None, _) => 0.0,
        };
        let mut costs = self.step_cost.relative(max);
        for (p, c) in costs.iter_mut().enumerate().skip(2) {
            *c += drafting * (p - 1) as f64;
        }
        costs
    }

    pub(crate) fn step_cost(&self) -> &StepCost {
        &self.step_cost
    }

    /// Runs `tokens` from position 0 as one batch and hands every intermediate tensor to
    /// `sink(name, values)`, one row per token, named as llama.cpp's graph names them
    /// (`inp_embd`, `attn_norm-0`, `Qcur-0` after rope, `kqv_out-0`, `ffn_inp-0`,
    /// `l_out-0`, ..., `result_norm`, `result_output`), so the two engines can be compared
    /// layer by layer. Returns every position's logits. CPU backend only.
    pub fn trace_forward(&self, tokens: &[u32], sink: &mut dyn FnMut(&str, &[f32])) -> Result<Vec<f32>> {
        crate::backend::check_segment(tokens, 0, usize::MAX, self.config.n_vocab)?;
        self.backend.forward_traced(tokens, sink)
    }

    /// A session with room for `n_ctx` positions (clamped to at least 1).
    pub fn session(&self, n_ctx: usize) -> Session<'_> {
        Session::new(self, n_ctx.max(1))
    }

    /// The context size to use when the user does not say: the training context, capped at
    /// 4096 like llama.cpp's default.
    pub fn default_ctx(&self) -> usize {
        self.config.n_ctx_train.min(4096)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_threads_never_exceed_usable_cpus() {
        let usable = usable_cpus();
        assert!(usable >= 1);
        assert!((1..=usable).contains(&default_threads()));
    }
}
