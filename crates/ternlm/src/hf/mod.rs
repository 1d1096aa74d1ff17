//! Hugging Face checkpoints without Python: a directory with `config.json`, `*.safetensors`
//! and `tokenizer.json` becomes a GGUF image, either written to disk (`ternlm convert`) or
//! held in memory and loaded like any GGUF file (`ternlm run -m ./dir`). Both paths share this
//! one conversion, so a directory and the file converted from it run the same weights.
//!
//! Families: `BitNetForCausalLM` (bitnet-b1.58-2B-4T, packed or bf16 master),
//! `BitnetForCausalLM` (1bitLLM, fp16 latent), `LlamaForCausalLM` with BitNet quantization
//! (Falcon3-1.58bit, Llama3-8B-1.58) or plain bf16/f16.

pub mod config;
pub mod tensors;
#[cfg(feature = "test-support")]
pub mod tiny;
pub mod tokenizer;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use ternlm_format::gguf::writer::{ALIGN, TensorSpec, header};
use ternlm_format::safetensors::Checkpoint;
use ternlm_format::{GgufFile, MetadataValue as V, TensorType};

pub use config::{Family, HfConfig, LinearClass};
use tensors::{Planned, Source, check_float, check_ternary, produce_into};

use crate::error::{ModelError, Result};
use crate::weight_type::WeightType;

pub(crate) fn hf_err(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::Checkpoint { path: path.to_path_buf(), reason: reason.into() }
}

/// Whether `path` is a checkpoint directory (it has a `config.json`).
pub fn is_checkpoint_dir(path: &Path) -> bool {
    path.is_dir() && path.join("config.json").is_file()
}

/// Tensor types to convert into; `None` keeps what is natural for the source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConvertOptions {
    /// Linear layers. Default: I2_S for ternary checkpoints (lossless, one f32 scale), the
    /// checkpoint's own float type otherwise.
    pub linear_type: Option<WeightType>,
    /// Token embedding and output head. Default: the checkpoint's own float type.
    pub head_type: Option<WeightType>,
    /// Store BF16 tensors (float linears, embedding, head) as F16 unless a type is given:
    /// the F16 kernels are the fast ones, and F16 holds every bf16 value of normal size
    /// exactly.
    pub bf16_as_f16: bool,
}

impl ConvertOptions {
    /// What loading a checkpoint folder uses: lossless ternary (I2_S), F16 for bf16.
    pub fn for_loading() -> Self {
        Self { linear_type: None, head_type: None, bf16_as_f16: true }
    }

    fn keep(&self, src: TensorType) -> TensorType {
        if self.bf16_as_f16 && src == TensorType::BF16 { TensorType::F16 } else { src }
    }
}

/// A checkpoint planned for conversion: GGUF metadata and every tensor's name, shape, type
/// and source, all checked against the checkpoint.
pub struct Conversion {
    dir: PathBuf,
    ckpt: Checkpoint,
    pub config: HfConfig,
    pub metadata: Vec<(String, V)>,
    pub tensors: Vec<Planned>,
    /// Tensors stored in another type than asked, and why.
    pub notes: Vec<String>,
}

/// The type a float tensor of rows of `cols` is stored in: `want` when its blocks fit, else
/// Q8_0, else F16 (what llama.cpp's quantizer falls back to), noting the change.
fn fit(want: TensorType, cols: usize, name: &str, notes: &mut Vec<String>) -> TensorType {
    if want.row_bytes(cols).is_some() {
        return want;
    }
    let to = if TensorType::Q8_0.row_bytes(cols).is_some() { TensorType::Q8_0 } else { TensorType::F16 };
    notes.push(format!("{name}: rows of {cols} are not whole {want} blocks of {}, stored as {to}", want.block_len()));
    to
}

fn file_type(ty: TensorType) -> Option<u32> {
    Some(match ty {
        TensorType::F32 => 0,
        TensorType::F16 => 1,
        TensorType::Q8_0 => 7,
        TensorType::BF16 => 32,
        TensorType::TQ1_0 => 36,
        TensorType::TQ2_0 => 37,
        TensorType::I2S => 40,
        _ => return None,
    })
}

impl Conversion {
    pub fn plan(dir: &Path, opts: &ConvertOptions) -> Result<Self> {
        let cfg = HfConfig::read(dir)?;
        let ckpt = Checkpoint::open_dir(dir)?;
        let (d, ff, layers) = (cfg.hidden_size, cfg.intermediate_size, cfg.num_layers);
        let (q_dim, kv_dim) = (cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim);
        let (want_linear, want_head) = (opts.linear_type.map(TensorType::from), opts.head_type.map(TensorType::from));
        let mut notes = Vec::new();
        let mut planned = Vec::new();

        let embed = ckpt.require("model.embed_tokens.weight")?;
        let embed_ty = check_float(&embed, &[cfg.vocab_size, d])?;
        if want_head.is_some_and(TensorType::is_ternary) {
            return Err(ModelError::Invalid("the output head cannot be ternary: choose f16, q6_k or q8_0".into()));
        }
        let head_ty = |src_ty: TensorType, name: &str, notes: &mut Vec<String>| match want_head {
            None => opts.keep(src_ty),
            Some(t) => fit(t, d, name, notes),
        };
        let ty = head_ty(embed_ty, "token_embd.weight", &mut notes);
        planned.push(Planned { name: "token_embd.weight".into(), dims: vec![d as u64, cfg.vocab_size as u64], ty, source: Source::Float { src: embed.name.to_string(), permute_heads: None } });

        let linear_ty = |cols: usize, name: &str, src_ty: Option<TensorType>, notes: &mut Vec<String>| -> Result<TensorType> {
            let want = match (want_linear, cfg.ternary) {
                (None, true) => TensorType::I2S,
                (None, false) => opts.keep(src_ty.unwrap_or(TensorType::F16)),
                (Some(t), false) if t.is_ternary() => {
                    return Err(ModelError::Invalid(format!("--type {t} needs a ternary checkpoint; {} in {} is a plain float model (use f16 or q8_0)", cfg.architecture, dir.display())));
                }
                (Some(t), _) => t,
            };
            if want.row_bytes(cols).is_none() {
                if want_linear.is_none() && want == TensorType::I2S {
                    // 1bitLLM's 3B has an FFN of 8640: its down projection cannot be I2_S.
                    // Q8_0 holds `scale · trit` exactly; the layer then runs as a float layer.
                    return Ok(fit(want, cols, name, notes));
                }
                return Err(ModelError::Invalid(format!("{name}: rows of {cols} are not whole {want} blocks of {} (choose another --type)", want.block_len())));
            }
            Ok(want)
        };
        let vector = |planned: &mut Vec<Planned>, name: String, src: String, n: usize| -> Result<()> {
            check_float(&ckpt.require(&src)?, &[n])?;
            planned.push(Planned { name, dims: vec![n as u64], ty: TensorType::F32, source: Source::Vector(src) });
            Ok(())
        };
        for l in 0..layers {
            let hf = |s: &str| format!("model.layers.{l}.{s}.weight");
            let gg = |s: &str| format!("blk.{l}.{s}.weight");
            vector(&mut planned, gg("attn_norm"), hf("input_layernorm"), d)?;
            for (g, h, rows, cols, perm) in [
                ("attn_q", "self_attn.q_proj", q_dim, d, Some(cfg.num_heads)),
                ("attn_k", "self_attn.k_proj", kv_dim, d, Some(cfg.num_kv_heads)),
                ("attn_v", "self_attn.v_proj", kv_dim, d, None),
                ("attn_output", "self_attn.o_proj", d, q_dim, None),
                ("ffn_gate", "mlp.gate_proj", ff, d, None),
                ("ffn_up", "mlp.up_proj", ff, d, None),
                ("ffn_down", "mlp.down_proj", d, ff, None),
            ] {
                let t = ckpt.require(&hf(h))?;
                let permute_heads = perm.filter(|_| cfg.permute_qk());
                let (ty, source) = if cfg.ternary {
                    check_ternary(&ckpt, &t, rows, cols)?;
                    (linear_ty(cols, &gg(g), None, &mut notes)?, Source::Ternary { src: hf(h), permute_heads })
                } else {
                    let src_ty = check_float(&t, &[rows, cols])?;
                    (linear_ty(cols, &gg(g), Some(src_ty), &mut notes)?, Source::Float { src: hf(h), permute_heads })
                };
                planned.push(Planned { name: gg(g), dims: vec![cols as u64, rows as u64], ty, source });
            }
            if let Some((attn_sub, ffn_sub)) = cfg.sub_norm_names() {
                vector(&mut planned, gg("attn_sub_norm"), hf(attn_sub), d)?;
                vector(&mut planned, gg("ffn_sub_norm"), hf(ffn_sub), ff)?;
            }
            vector(&mut planned, gg("ffn_norm"), hf("post_attention_layernorm"), d)?;
        }
        vector(&mut planned, "output_norm.weight".into(), "model.norm.weight".into(), d)?;
        match ckpt.tensor("lm_head.weight") {
            Some(head) if !cfg.tie_word_embeddings => {
                let src_ty = check_float(&head, &[cfg.vocab_size, d])?;
                let ty = head_ty(src_ty, "output.weight", &mut notes);
                planned.push(Planned { name: "output.weight".into(), dims: vec![d as u64, cfg.vocab_size as u64], ty, source: Source::Float { src: head.name.to_string(), permute_heads: None } });
            }
            None if !cfg.tie_word_embeddings => notes.push("config.json does not tie the embeddings but there is no lm_head.weight: using the embedding as the output head".into()),
            _ => {}
        }
        if let Some(freqs) = cfg.rope_freqs() {
            planned.push(Planned { name: "rope_freqs.weight".into(), dims: vec![freqs.len() as u64], ty: TensorType::F32, source: Source::Values(freqs) });
        }
        for p in &planned {
            if p.ty.data_size(p.dims[0], p.dims.iter().product()).is_none() {
                return Err(ModelError::Invalid(format!("{}: shape {:?} does not fit type {}", p.name, p.dims, p.ty)));
            }
        }

        let metadata = Self::metadata(dir, &cfg, &planned)?;
        Ok(Self { dir: dir.to_path_buf(), ckpt, config: cfg, metadata, tensors: planned, notes })
    }

    fn metadata(dir: &Path, cfg: &HfConfig, planned: &[Planned]) -> Result<Vec<(String, V)>> {
        let arch = cfg.gguf_arch;
        let name = dir.canonicalize().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_else(|| "model".into());
        let linear = planned.iter().find(|p| p.name == "blk.0.attn_q.weight").map(|p| p.ty);
        let mut md: Vec<(String, V)> = vec![("general.architecture".into(), V::String(arch.into())), ("general.name".into(), V::String(name)), ("general.quantization_version".into(), V::U32(2))];
        if let Some(ft) = linear.and_then(file_type) {
            md.push(("general.file_type".into(), V::U32(ft)));
        }
        let hp = crate::Config {
            arch: crate::arch::ArchSpec::for_name(arch)?,
            n_vocab: cfg.vocab_size,
            n_embd: cfg.hidden_size,
            n_layer: cfg.num_layers,
            n_ff: cfg.intermediate_size,
            n_head: cfg.num_heads,
            n_head_kv: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            rope_dims: cfg.head_dim,
            rope_base: cfg.rope_theta,
            rms_eps: cfg.rms_norm_eps,
            n_ctx_train: cfg.max_position_embeddings,
        };
        md.extend(hp.to_metadata());
        md.extend(tokenizer::tokenizer_metadata(dir, cfg)?);
        Ok(md)
    }

    fn specs(&self) -> Vec<TensorSpec> {
        self.tensors.iter().map(|p| TensorSpec { name: p.name.clone(), dims: p.dims.clone(), ty: p.ty, size: p.size() }).collect()
    }

    /// The whole GGUF image in memory, tensors produced on `threads` threads.
    pub fn to_bytes(&self, threads: usize) -> Result<Vec<u8>> {
        let specs = self.specs();
        let mut out = header(&self.metadata, &specs)?;
        let start = out.len();
        let padded: Vec<usize> = specs.iter().map(|s| (s.size as usize).div_ceil(ALIGN) * ALIGN).collect();
        out.resize(start + padded.iter().sum::<usize>(), 0);
        let mut slots: Vec<Mutex<Option<&mut [u8]>>> = Vec::with_capacity(specs.len());
        let mut rest = &mut out[start..];
        for &n in &padded {
            let (head, tail) = rest.split_at_mut(n);
            slots.push(Mutex::new(Some(head)));
            rest = tail;
        }
        let next = AtomicUsize::new(0);
        let first_error: Mutex<Option<ModelError>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..threads.clamp(1, 64) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= self.tensors.len() {
                            break;
                        }
                        let Some(slot) = slots[i].lock().unwrap_or_else(|e| e.into_inner()).take() else { continue };
                        let size = self.tensors[i].size() as usize;
                        match produce_into(&self.ckpt, &self.config, &self.tensors[i], &mut slot[..size]) {
                            Ok(()) => {}
                            Err(e) => {
                                first_error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                                break;
                            }
                        }
                    }
                });
            }
        });
        drop(slots);
        match first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// The type the tensor `name` (GGUF naming, `blk.0.attn_q.weight`) is converted to, or
    /// `None` when the conversion writes no such tensor.
    pub fn tensor_type(&self, name: &str) -> Option<WeightType> {
        self.tensors.iter().find(|t| t.name == name).map(|t| t.ty.into())
    }

    /// Elements of all tensors the conversion writes.
    pub fn param_count(&self) -> u64 {
        self.tensors.iter().map(|t| t.dims.iter().product::<u64>()).sum()
    }

    /// The converted model as a loadable in-memory GGUF file named after the directory.
    pub fn to_gguf(&self, threads: usize) -> Result<GgufFile> {
        Ok(GgufFile::from_bytes(&self.dir, self.to_bytes(threads)?)?)
    }

    /// Writes the GGUF file to `path` (through a temporary file beside it, so a failed
    /// conversion leaves nothing behind); returns the bytes written.
    pub fn write(&self, path: &Path, threads: usize) -> Result<u64> {
        let bytes = self.to_bytes(threads)?;
        let tmp = path.with_extension("gguf.part");
        let io = |e: std::io::Error| ModelError::Format(ternlm_format::FormatError::Io { path: path.to_path_buf(), source: e });
        std::fs::write(&tmp, &bytes).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(bytes.len() as u64)
    }
}
