//! Resolving `--model` and loading it: shared by every subcommand that needs a model, with
//! the warnings about settings that cannot do what they say (more threads than CPUs, a
//! context beyond training, a ternary layout on a model without ternary weights, -ngl).

use std::path::Path;

use anyhow::Result;
use ternlm::{LoadOptions, Model, SpeculateMode, Speculation};

use crate::cli::{LayoutArg, ModelArgs, SpeculateArgs, WeightArgs};
use crate::out::note;

/// The local path `--model` names, fetching the default or a catalog model when needed (bars
/// on a terminal, plain lines in a log).
pub fn model_path(arg: Option<&str>) -> Result<std::path::PathBuf> {
    Ok(ternlm_hub::resolve_model(arg, ternlm_hub::Progress::for_stderr())?)
}

/// `--threads`, or the default; more threads than the CPUs this process may use are allowed
/// (a user may know better) but said out loud, since they make every step wait for threads
/// the scheduler has to time-slice.
pub fn threads(arg: Option<usize>) -> Result<usize> {
    let usable = ternlm::usable_cpus();
    match arg {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(t) if t > usable => {
            note!("ternlm: warning: --threads {t} is more than the {usable} CPUs this process may use; expect it to be slower than -t {usable}");
            Ok(t)
        }
        Some(t) => Ok(t),
        None => Ok(ternlm::default_threads()),
    }
}

/// `r`'s error with "`doing` PATH" in front, unless the error already names the path (a
/// file that cannot be read says so itself; saying the path twice helps no one).
pub fn naming_path<T, E: Into<anyhow::Error>>(r: std::result::Result<T, E>, doing: &str, path: &Path) -> Result<T> {
    r.map_err(|e| {
        let e = e.into();
        let shown = path.display().to_string();
        if e.chain().any(|c| c.to_string().contains(&shown)) { e } else { e.context(format!("{doing} {shown}")) }
    })
}

/// llama.cpp's `-ngl N`, accepted so that habits work, and said to do nothing here.
pub fn ignore_gpu_layers(n: Option<i64>) {
    if let Some(n) = n {
        note!("ternlm: note: --n-gpu-layers {n} is ignored: ternlm runs a whole model on one device (--device cpu|gpu|gpu:N, default auto)");
    }
}

pub fn load_model(args: &ModelArgs) -> Result<Model> {
    ignore_gpu_layers(args.n_gpu_layers);
    let path = model_path(args.model.as_deref())?;
    let threads = threads(args.threads)?;
    let model = naming_path(Model::load(&path, &args.weights.load_options(threads)), "loading", &path)?;
    say_kernel_checks();
    say_device(&model, &args.weights);
    if matches!(args.weights.ternary_layout, LayoutArg::Bits1_6) && !model.has_ternary_tensors() {
        note!("ternlm: note: --ternary-layout 1.6 has no effect: the model has no ternary weights");
    }
    Ok(model)
}

/// Prints, once per process, each kernel level the self-check turned down on this CPU.
pub fn say_kernel_checks() {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        for w in ternlm::machine::kernel_check_warnings() {
            note!("ternlm: warning: {w}");
        }
    });
}

/// Says where a model runs when that is news: on a GPU, after `auto` passed over a GPU it
/// found (or failed to use), and when GPU-only flags do nothing. `auto` on a machine with no
/// GPU at all stays quiet.
pub fn say_device(model: &Model, weights: &WeightArgs) {
    let device = model.device();
    if model.backend_name() == "gpu" {
        note!("ternlm: device: {device}");
        if weights.int8_head || matches!(weights.ternary_layout, LayoutArg::Bits1_6) {
            note!("ternlm: note: --int8-head and --ternary-layout are CPU layouts; the GPU keeps the file's");
        }
    } else if let Some(why) = device.strip_prefix("cpu (auto: ").and_then(|w| w.strip_suffix(')'))
        && !why.starts_with("no GPU device node")
    {
        note!("ternlm: device: cpu (--device auto did not take a GPU: {why})");
    }
}

/// The device a loaded model runs on, as a choice that loads another model there too.
fn model_device(model: &Model) -> ternlm::DeviceChoice {
    if model.backend_name() == "gpu" {
        let index = model.device().strip_prefix("gpu:").and_then(|s| s.split(' ').next()).and_then(|i| i.parse().ok());
        ternlm::DeviceChoice::Gpu(index)
    } else {
        ternlm::DeviceChoice::Cpu
    }
}

/// Speculation when the user does not say: prompt lookup costs nothing when it finds no
/// match, pauses itself when its drafts are rejected, and is lossless (see the README's
/// measurements).
pub const DEFAULT_SPECULATE: SpeculateMode = SpeculateMode::Lookup;

/// The speculation the flags ask for.
pub fn speculation(args: &SpeculateArgs) -> Result<Speculation> {
    let mode = args.speculate.unwrap_or(if args.draft_model.is_some() { SpeculateMode::Draft } else { DEFAULT_SPECULATE });
    if mode == SpeculateMode::Draft && args.draft_model.is_none() {
        anyhow::bail!("--speculate draft needs --draft-model MODEL (a smaller model with the same vocabulary)");
    }
    if args.draft_min > args.draft_max {
        anyhow::bail!("--draft-min {} is more than --draft-max {}", args.draft_min, args.draft_max);
    }
    Ok(Speculation { mode, draft_max: args.draft_max, draft_min: args.draft_min })
}

/// [`load_model`], with the draft model attached when the flags ask for one (loaded with
/// the same threads and weight options, and checked to share the vocabulary).
pub fn load_model_speculating(args: &ModelArgs, spec: &SpeculateArgs) -> Result<(Model, Speculation)> {
    let speculation = speculation(spec)?;
    let model = load_model(args)?;
    let Some(draft) = spec.draft_model.as_deref() else { return Ok((model, speculation)) };
    if speculation.mode != SpeculateMode::Draft {
        note!("ternlm: note: --draft-model is not used with --speculate {}", speculation.mode.as_str());
        return Ok((model, speculation));
    }
    Ok((attach_draft(model, draft, &args.weights)?, speculation))
}

/// `model` with the draft model `arg` names attached, loaded with the same threads and
/// weight options, and checked to share the vocabulary.
pub fn attach_draft(model: Model, arg: &str, weights: &WeightArgs) -> Result<Model> {
    let path = model_path(Some(arg))?;
    let opts = LoadOptions { device: model_device(&model), ..weights.load_options(model.threads()) };
    let draft = naming_path(Model::load(&path, &opts), "loading the draft model", &path)?;
    naming_path(model.with_draft_model(draft), "using the draft model", &path)
}

/// The context size: `--ctx-size` or the model's default. A size beyond the training context
/// is allowed, as in llama.cpp, with its warning: positions the model never saw give worse
/// text.
pub fn ctx_size(args: &ModelArgs, model: &Model) -> Result<usize> {
    match args.ctx_size {
        Some(0) => anyhow::bail!("--ctx-size must be at least 1"),
        Some(c) => {
            warn_beyond_training(c, model);
            Ok(c)
        }
        None => Ok(model.default_ctx()),
    }
}

/// Warns when `n_ctx` is more than the model was trained on.
pub fn warn_beyond_training(n_ctx: usize, model: &Model) {
    let trained = model.config.n_ctx_train;
    if trained > 0 && n_ctx > trained {
        note!("ternlm: warning: the context size {n_ctx} is more than the model was trained with ({trained}); text past {trained} tokens may degrade");
    }
}
