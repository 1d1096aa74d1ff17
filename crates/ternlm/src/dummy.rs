//! Random ternary models at the shapes of real ones (`ternlm dummy`), so every engine can be
//! timed on the same bytes when the real weights cannot be downloaded. The files follow the
//! conventions the peers load: TQ1_0/TQ2_0 under llama.cpp's `bitnet` architecture and I2_S
//! under bitnet.cpp's `bitnet-25`; the output head is tied to `token_embd` (llama.cpp's
//! `bitnet` has no separate head), stored in the chosen head type.

use std::path::Path;

use ternlm_format::MetadataValue as V;
use ternlm_format::TensorType;
use ternlm_format::gguf::writer::{TensorData, write};
use ternlm_format::quant::{pack_ternary, quantize_rows};

use crate::error::{ModelError, Result};
use crate::weight_type::WeightType;

/// Hyperparameters of a model shape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    pub name: &'static str,
    pub about: &'static str,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_vocab: usize,
    pub n_ctx: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
}

pub const SHAPES: [Shape; 4] = [
    Shape { name: "2b4t", about: "microsoft/bitnet-b1.58-2B-4T", n_embd: 2560, n_ff: 6912, n_layer: 30, n_head: 20, n_head_kv: 5, n_vocab: 128256, n_ctx: 4096, rope_base: 500000.0, rms_eps: 1e-5 },
    Shape { name: "3b", about: "1bitLLM/bitnet_b1_58-3B", n_embd: 3200, n_ff: 8640, n_layer: 26, n_head: 32, n_head_kv: 32, n_vocab: 32002, n_ctx: 2048, rope_base: 10000.0, rms_eps: 1e-5 },
    Shape {
        name: "falcon3-1b",
        about: "tiiuae/Falcon3-1B-Instruct-1.58bit",
        n_embd: 2048,
        n_ff: 8192,
        n_layer: 18,
        n_head: 8,
        n_head_kv: 4,
        n_vocab: 131072,
        n_ctx: 8192,
        rope_base: 1000042.0,
        rms_eps: 1e-6,
    },
    Shape {
        name: "llama3-8b",
        about: "HF1BitLLM/Llama3-8B-1.58-100B-tokens",
        n_embd: 4096,
        n_ff: 14336,
        n_layer: 32,
        n_head: 32,
        n_head_kv: 8,
        n_vocab: 128256,
        n_ctx: 8192,
        rope_base: 500000.0,
        rms_eps: 1e-5,
    },
];

impl Shape {
    pub fn by_name(name: &str) -> Option<Shape> {
        SHAPES.iter().copied().find(|s| s.name.eq_ignore_ascii_case(name))
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct DummySpec {
    pub shape: Shape,
    /// TQ1_0, TQ2_0 or I2_S.
    pub linear_type: WeightType,
    /// F16, Q6_K or Q8_0 (the tied embedding and output head).
    pub head_type: WeightType,
    pub seed: u64,
    /// Architecture to declare instead of the type's default (`bitnet` for TQ types,
    /// `bitnet-25` for I2_S): older bitnet.cpp builds load I2_S only as `bitnet`.
    pub arch: Option<String>,
}

/// What was written, for the caller to report.
#[derive(Clone, Debug, Default)]
pub struct DummyReport {
    pub bytes: u64,
    pub parameters: u64,
    /// Tensors stored in another type than asked, with why.
    pub fallbacks: Vec<String>,
}

/// A fast deterministic generator (xorshift64*); quality is irrelevant, speed is not: a 2B
/// model has two billion weights to draw. Generated checkpoints (`hf::tiny`) use it too.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn seeded(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn trits(&mut self, n: usize) -> Vec<i8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            let r = self.next();
            out.extend((0..8).map(|i| ((((r >> (8 * i)) & 0xFF) * 3) >> 8) as i8 - 1));
        }
        out.truncate(n);
        out
    }

    pub(crate) fn uniform(&mut self, n: usize, amplitude: f32) -> Vec<f32> {
        (0..n).map(|_| ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amplitude).collect()
    }
}

/// Writes a random model of `spec` to `path`.
pub fn write_dummy(spec: &DummySpec, path: &Path) -> Result<DummyReport> {
    let s = spec.shape;
    let (linear_type, head_type) = (TensorType::from(spec.linear_type), TensorType::from(spec.head_type));
    if !linear_type.is_ternary() {
        return Err(ModelError::Invalid(format!("--type must be a ternary type (tq1_0, tq2_0, i2_s), not {linear_type}")));
    }
    if !matches!(head_type, TensorType::F16 | TensorType::Q6K | TensorType::Q8_0) {
        return Err(ModelError::Invalid(format!("--head must be f16, q6_k or q8_0, not {head_type}")));
    }
    let arch = match spec.arch.as_deref() {
        None => {
            if linear_type == TensorType::I2S {
                "bitnet-25"
            } else {
                "bitnet"
            }
        }
        Some(a @ ("bitnet" | "bitnet-25")) => a,
        Some(other) => return Err(ModelError::Invalid(format!("--arch must be bitnet or bitnet-25, not {other:?}"))),
    };
    let mut rng = Rng::seeded(spec.seed);
    let mut report = DummyReport::default();

    // (name, dims, type, bytes); built first so the writer can lay out offsets.
    let mut tensors = Vec::new();
    type Tensors = Vec<(String, Vec<u64>, TensorType, Vec<u8>)>;
    let float = |tensors: &mut Tensors, name: String, dims: Vec<u64>, ty: TensorType, values: Vec<f32>, report: &mut DummyReport| -> Result<()> {
        let row = dims[0] as usize;
        let ty = fit_type(ty, row, &name, report);
        let data = quantize_rows(ty, &values, row)?;
        report.parameters += values.len() as u64;
        tensors.push((name, dims, ty, data));
        Ok(())
    };

    let embd = rng.uniform(s.n_vocab * s.n_embd, 0.05);
    float(&mut tensors, "token_embd.weight".into(), vec![s.n_embd as u64, s.n_vocab as u64], head_type, embd, &mut report)?;
    float(&mut tensors, "output_norm.weight".into(), vec![s.n_embd as u64], TensorType::F32, vec![1.0; s.n_embd], &mut report)?;
    let kv = s.n_head_kv * s.head_dim();
    for l in 0..s.n_layer {
        for (name, len) in [("attn_norm", s.n_embd), ("attn_sub_norm", s.n_embd), ("ffn_norm", s.n_embd), ("ffn_sub_norm", s.n_ff)] {
            float(&mut tensors, format!("blk.{l}.{name}.weight"), vec![len as u64], TensorType::F32, vec![1.0; len], &mut report)?;
        }
        for (name, cols, rows) in [
            ("attn_q", s.n_embd, s.n_embd),
            ("attn_k", s.n_embd, kv),
            ("attn_v", s.n_embd, kv),
            ("attn_output", s.n_embd, s.n_embd),
            ("ffn_gate", s.n_embd, s.n_ff),
            ("ffn_up", s.n_embd, s.n_ff),
            ("ffn_down", s.n_ff, s.n_embd),
        ] {
            let name = format!("blk.{l}.{name}.weight");
            let trits = rng.trits(rows * cols);
            // Scales near 1/sqrt(cols) keep random activations in a sane range.
            let scale = (1.0 + (rng.next() % 1000) as f32 / 2000.0) / (cols as f32).sqrt();
            let ty = fit_type(linear_type, cols, &name, &mut report);
            let data = if ty.is_ternary() {
                pack_ternary(ty, &trits, cols, scale)?
            } else {
                let values: Vec<f32> = trits.iter().map(|&t| f32::from(t) * scale).collect();
                quantize_rows(ty, &values, cols)?
            };
            report.parameters += (rows * cols) as u64;
            tensors.push((name, vec![cols as u64, rows as u64], ty, data));
        }
    }

    let file_type = match linear_type {
        TensorType::TQ1_0 => 36u32,
        TensorType::TQ2_0 => 37,
        _ => 40, // bitnet.cpp's LLAMA_FTYPE_MOSTLY_I2_S
    };
    let mut md: Vec<(String, V)> = vec![
        ("general.architecture".into(), V::String(arch.into())),
        ("general.name".into(), V::String(format!("ternlm-dummy-{}-{}-{}", s.name, linear_type, head_type).to_lowercase())),
        ("general.file_type".into(), V::U32(file_type)),
        ("general.quantization_version".into(), V::U32(2)),
    ];
    let hp = crate::Config {
        arch: crate::arch::ArchSpec::for_name(arch)?,
        n_vocab: s.n_vocab,
        n_embd: s.n_embd,
        n_layer: s.n_layer,
        n_ff: s.n_ff,
        n_head: s.n_head,
        n_head_kv: s.n_head_kv,
        head_dim: s.head_dim(),
        rope_dims: s.head_dim(),
        rope_base: s.rope_base,
        rms_eps: s.rms_eps,
        n_ctx_train: s.n_ctx,
    };
    md.extend(hp.to_metadata());
    md.extend(tokenizer_metadata(s.n_vocab));

    let data: Vec<TensorData<'_>> = tensors.iter().map(|(name, dims, ty, bytes)| TensorData { name: name.clone(), dims: dims.clone(), ty: *ty, data: bytes }).collect();
    write(path, &md, &data)?;
    report.bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(report)
}

/// `want` if rows of `row_len` fit its blocks, else the fallback llama.cpp's quantizer would
/// take (Q8_0, which still holds ternary values exactly), noted in the report.
fn fit_type(want: TensorType, row_len: usize, name: &str, report: &mut DummyReport) -> TensorType {
    if want.row_bytes(row_len).is_some() {
        return want;
    }
    report.fallbacks.push(format!("{name}: rows of {row_len} are not whole {want} blocks of {}, stored as Q8_0", want.block_len()));
    TensorType::Q8_0
}

/// A SentencePiece-style vocabulary of `n` tokens: `<unk>`, `<s>`, `</s>`, the 256 byte
/// tokens, then made-up word pieces. Enough for every engine to load and tokenize.
fn tokenizer_metadata(n: usize) -> Vec<(String, V)> {
    let mut tokens = Vec::with_capacity(n);
    let mut scores = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    for (t, ty) in [("<unk>", 2), ("<s>", 3), ("</s>", 3)] {
        tokens.push(V::String(t.into()));
        scores.push(V::F32(0.0));
        types.push(V::I32(ty));
    }
    for b in 0..=255u8 {
        tokens.push(V::String(format!("<0x{b:02X}>")));
        scores.push(V::F32(0.0));
        types.push(V::I32(6));
    }
    let letters = b"etaoinshrdlucmfwypvbgkjqxz";
    for i in tokens.len()..n {
        // Distinct pieces built from letters, so text tokenizes into more than bytes.
        let mut word = String::from("\u{2581}");
        let mut v = i - 259;
        loop {
            word.push(letters[v % 26] as char);
            v /= 26;
            if v == 0 {
                break;
            }
        }
        tokens.push(V::String(word));
        scores.push(V::F32(-(i as f32)));
        types.push(V::I32(1));
    }
    vec![
        ("tokenizer.ggml.model".into(), V::String("llama".into())),
        ("tokenizer.ggml.tokens".into(), V::Array(tokens)),
        ("tokenizer.ggml.scores".into(), V::Array(scores)),
        ("tokenizer.ggml.token_type".into(), V::Array(types)),
        ("tokenizer.ggml.bos_token_id".into(), V::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), V::U32(2)),
        ("tokenizer.ggml.unknown_token_id".into(), V::U32(0)),
        ("tokenizer.ggml.add_bos_token".into(), V::Bool(true)),
    ]
}
