//! Tiny Hugging Face checkpoints of every family ternlm imports, generated from a seed:
//! `config.json`, safetensors (optionally sharded with an index), `tokenizer.json`,
//! `tokenizer_config.json` and `generation_config.json`, laid out as the real repositories
//! are. Tests use them because no real ternary checkpoint can be downloaded here.

use std::path::Path;

use half::{bf16, f16};
use safetensors::tensor::TensorView;
use serde_json::json;

use crate::dummy::Rng;
use crate::error::{ModelError, Result};

/// Which real checkpoint a tiny one imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TinyKind {
    /// microsoft/bitnet-b1.58-2B-4T: packed uint8 + bf16 `weight_scale`, autobitlinear,
    /// squared ReLU, LLaMA-3 byte-level BPE.
    BitNetPacked,
    /// microsoft/bitnet-b1.58-2B-4T-bf16: the same model as bf16 master weights.
    BitNetMaster,
    /// 1bitLLM/bitnet_b1_58-large: fp16 latent weights, SiLU, `inner_attn_ln` /
    /// `ffn_layernorm`, SentencePiece-style BPE with byte fallback.
    Bitnet1bitLlm,
    /// tiiuae/Falcon3-1B-Instruct-1.58bit: LLaMA with packed weights, bitlinear scales.
    LlamaTernary,
    /// A plain bf16 LLaMA (SmolLM2-style tokenizer with split digits).
    LlamaFloat,
}

impl TinyKind {
    pub const ALL: [TinyKind; 5] = [Self::BitNetPacked, Self::BitNetMaster, Self::Bitnet1bitLlm, Self::LlamaTernary, Self::LlamaFloat];

    pub fn name(self) -> &'static str {
        match self {
            Self::BitNetPacked => "bitnet-b1.58-packed",
            Self::BitNetMaster => "bitnet-b1.58-bf16",
            Self::Bitnet1bitLlm => "1bitllm-bitnet",
            Self::LlamaTernary => "llama-1.58bit",
            Self::LlamaFloat => "llama-bf16",
        }
    }

    fn byte_level(self) -> bool {
        self != Self::Bitnet1bitLlm
    }
}

/// The dimensions of a generated checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TinyShape {
    pub hidden: usize,
    pub ff: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// Embedding rows at least (real checkpoints pad the vocabulary past the tokenizer).
    pub min_vocab: usize,
}

impl TinyShape {
    /// Small enough for tests, with rows that fit every block type (multiples of 256).
    pub const TINY: TinyShape = TinyShape { hidden: 256, ff: 512, layers: 2, heads: 4, kv_heads: 2, min_vocab: 0 };
    /// microsoft/bitnet-b1.58-2B-4T's dimensions, for timing real-sized loads.
    pub const B2B4T: TinyShape = TinyShape { hidden: 2560, ff: 6912, layers: 30, heads: 20, kv_heads: 5, min_vocab: 128_256 };
}

/// GPT-2's byte-to-character map used by byte-level BPE vocabularies.
pub fn byte_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    if printable(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).unwrap_or('?')
}

/// An owned tensor to serialize.
struct Owned {
    name: String,
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn floats(name: String, shape: Vec<usize>, v: &[f32], dtype: safetensors::Dtype) -> Owned {
    let data = match dtype {
        safetensors::Dtype::F16 => v.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes()).collect(),
        safetensors::Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        _ => v.iter().flat_map(|x| bf16::from_f32(*x).to_le_bytes()).collect(),
    };
    Owned { name, dtype, shape, data }
}

/// transformers' packing: row `i * rows/4 + p` goes to 2-bit field `i` of packed row `p`.
pub fn pack_rows(trits: &[i8], rows: usize, cols: usize) -> Vec<u8> {
    let q = rows / 4;
    let mut out = vec![0u8; q * cols];
    for r in 0..rows {
        let (i, p) = (r / q, r % q);
        for c in 0..cols {
            out[p * cols + c] |= ((trits[r * cols + c] + 1) as u8) << (2 * i);
        }
    }
    out
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ModelError + '_ {
    move |e| ModelError::Checkpoint { path: path.to_path_buf(), reason: e.to_string() }
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap_or_default()).map_err(io(path))
}

/// The tokenizer files: (tokenizer.json, vocabulary size, bos text, eos text).
fn tokenizer_json(kind: TinyKind) -> (serde_json::Value, usize, &'static str, &'static str) {
    let words = ["the", "and", "of", "to", "in", "is", "it", "that", "was", "for", "on", "are", "with", "as", "his", "they"];
    let mut vocab = serde_json::Map::new();
    let mut merges: Vec<serde_json::Value> = Vec::new();
    let add = |vocab: &mut serde_json::Map<String, serde_json::Value>, t: String| {
        if !vocab.contains_key(&t) {
            let id = vocab.len();
            vocab.insert(t, json!(id));
        }
    };
    if kind.byte_level() {
        for b in 0..=255u8 {
            add(&mut vocab, byte_char(b).to_string());
        }
        let space = byte_char(b' ');
        for w in words {
            // Merge left to right: t+h, th+e, then the space marker in front.
            let chars: Vec<String> = w.chars().map(String::from).collect();
            let mut acc = chars[0].clone();
            for c in &chars[1..] {
                merges.push(json!([acc.clone(), c.clone()]));
                acc.push_str(c);
                add(&mut vocab, acc.clone());
            }
            merges.push(json!([space.to_string(), acc.clone()]));
            add(&mut vocab, format!("{space}{acc}"));
        }
        let specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"];
        let base = vocab.len();
        let added: Vec<serde_json::Value> =
            specials.iter().enumerate().map(|(i, s)| json!({"id": base + i, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true})).collect();
        let pre = if kind == TinyKind::LlamaFloat {
            json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]})
        } else {
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]})
        };
        let n = base + specials.len();
        let tok = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre,
            "post_processor": if kind == TinyKind::LlamaFloat {
                json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true})
            } else {
                // LLaMA-3's: BOS in front of every sequence.
                json!({"type": "Sequence", "processors": [
                    {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
                    {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                     "pair": [{"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [base], "tokens": ["<|begin_of_text|>"]}}}]})
            },
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": kind != TinyKind::LlamaFloat, "vocab": vocab, "merges": merges}
        });
        (tok, n, "<|begin_of_text|>", "<|eot_id|>")
    } else {
        for t in ["<unk>", "<s>", "</s>"] {
            add(&mut vocab, t.into());
        }
        for b in 0..=255u8 {
            add(&mut vocab, format!("<0x{b:02X}>"));
        }
        for c in "abcdefghijklmnopqrstuvwxyz".chars() {
            add(&mut vocab, c.to_string());
        }
        add(&mut vocab, "\u{2581}".into());
        for w in words {
            for end in 2..=w.len() {
                add(&mut vocab, w[..end].to_string());
            }
            add(&mut vocab, format!("\u{2581}{w}"));
        }
        // As transformers' SentencePiece conversion does: a merge for every split of every
        // piece into two pieces, in the order of the merged piece's rank, so that BPE merging
        // reproduces SentencePiece's score-driven merging.
        let pieces: Vec<(String, u64)> = vocab.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect();
        let mut ranked: Vec<(u64, String, String)> = Vec::new();
        for (piece, id) in &pieces {
            let chars: Vec<(usize, char)> = piece.char_indices().collect();
            for &(at, _) in chars.iter().skip(1) {
                let (a, b) = piece.split_at(at);
                if vocab.contains_key(a) && vocab.contains_key(b) {
                    ranked.push((*id, a.to_string(), b.to_string()));
                }
            }
        }
        ranked.sort();
        merges.extend(ranked.into_iter().map(|(_, a, b)| json!(format!("{a} {b}"))));
        let n = vocab.len();
        let added: Vec<serde_json::Value> = ["<unk>", "<s>", "</s>"]
            .iter()
            .enumerate()
            .map(|(i, s)| json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
            .collect();
        let tok = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u{2581}"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]},
            "pre_tokenizer": null,
            "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                               "pair": [{"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
            "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
            "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": true, "byte_fallback": true, "ignore_merges": false, "vocab": vocab, "merges": merges}
        });
        (tok, n, "<s>", "</s>")
    }
}

/// Writes a tiny checkpoint of `kind` into `dir` (created if needed); `shards` splits the
/// weights over two files with a `model.safetensors.index.json`.
pub fn write_tiny(dir: &Path, kind: TinyKind, seed: u64, shards: bool) -> Result<()> {
    write_shaped(dir, kind, seed, shards, TinyShape::TINY)
}

/// [`write_tiny`] at any shape.
pub fn write_shaped(dir: &Path, kind: TinyKind, seed: u64, shards: bool, shape: TinyShape) -> Result<()> {
    use safetensors::Dtype;
    let TinyShape { hidden: d, ff, layers, heads, kv_heads, min_vocab } = shape;
    if d % heads != 0 || heads % kv_heads != 0 || (d / heads) % 2 != 0 {
        return Err(ModelError::Invalid(format!("{shape:?} does not split into heads")));
    }
    let head_dim = d / heads;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (tok, n_tok, bos, eos) = tokenizer_json(kind);
    // Real checkpoints pad the embedding past the tokenizer; so does this one.
    let vocab = n_tok.div_ceil(64).max(min_vocab.div_ceil(64)) * 64;
    let mut rng = Rng::seeded(seed);
    let float_dtype = match kind {
        TinyKind::Bitnet1bitLlm => Dtype::F16,
        _ => Dtype::BF16,
    };
    let mut tensors: Vec<Owned> = Vec::new();
    let embd = rng.uniform(vocab * d, 1.0);
    tensors.push(floats("model.embed_tokens.weight".into(), vec![vocab, d], &embd, float_dtype));
    let norm = |rng: &mut Rng, n: usize| -> Vec<f32> { rng.uniform(n, 0.2).iter().map(|v| 1.0 + v).collect() };
    let (attn_sub, ffn_sub) = match kind {
        TinyKind::BitNetPacked | TinyKind::BitNetMaster => (Some("self_attn.attn_sub_norm"), Some("mlp.ffn_sub_norm")),
        TinyKind::Bitnet1bitLlm => (Some("self_attn.inner_attn_ln"), Some("mlp.ffn_layernorm")),
        _ => (None, None),
    };
    for l in 0..layers {
        let p = |s: &str| format!("model.layers.{l}.{s}.weight");
        tensors.push(floats(p("input_layernorm"), vec![d], &norm(&mut rng, d), float_dtype));
        tensors.push(floats(p("post_attention_layernorm"), vec![d], &norm(&mut rng, d), float_dtype));
        if let (Some(a), Some(f)) = (attn_sub, ffn_sub) {
            tensors.push(floats(p(a), vec![d], &norm(&mut rng, d), float_dtype));
            tensors.push(floats(p(f), vec![ff], &norm(&mut rng, ff), float_dtype));
        }
        for (name, rows, cols) in [
            ("self_attn.q_proj", heads * head_dim, d),
            ("self_attn.k_proj", kv_heads * head_dim, d),
            ("self_attn.v_proj", kv_heads * head_dim, d),
            ("self_attn.o_proj", d, heads * head_dim),
            ("mlp.gate_proj", ff, d),
            ("mlp.up_proj", ff, d),
            ("mlp.down_proj", d, ff),
        ] {
            let amp = 1.0 / (cols as f32).sqrt();
            match kind {
                TinyKind::BitNetPacked | TinyKind::LlamaTernary => {
                    let trits = rng.trits(rows * cols);
                    let beta = amp * (1.0 + (rng.next() % 100) as f32 / 100.0);
                    // autobitlinear multiplies by weight_scale, bitlinear divides by it.
                    let stored = if kind == TinyKind::BitNetPacked { beta } else { 1.0 / beta };
                    tensors.push(Owned { name: p(name), dtype: Dtype::U8, shape: vec![rows / 4, cols], data: pack_rows(&trits, rows, cols) });
                    tensors.push(floats(format!("{}_scale", p(name)), vec![1], &[stored], Dtype::BF16));
                }
                _ => tensors.push(floats(p(name), vec![rows, cols], &rng.uniform(rows * cols, amp * 1.7), float_dtype)),
            }
        }
    }
    tensors.push(floats("model.norm.weight".into(), vec![d], &norm(&mut rng, d), float_dtype));
    let tied = kind != TinyKind::Bitnet1bitLlm && kind != TinyKind::LlamaTernary;
    if !tied {
        tensors.push(floats("lm_head.weight".into(), vec![vocab, d], &rng.uniform(vocab * d, 0.5), float_dtype));
    }

    let groups: Vec<(String, Vec<&Owned>)> = if shards {
        let half = tensors.len() / 2;
        vec![("model-00001-of-00002.safetensors".into(), tensors[..half].iter().collect()), ("model-00002-of-00002.safetensors".into(), tensors[half..].iter().collect())]
    } else {
        vec![("model.safetensors".into(), tensors.iter().collect())]
    };
    let mut weight_map = serde_json::Map::new();
    for (file, group) in &groups {
        let views = group
            .iter()
            .map(|t| TensorView::new(t.dtype, t.shape.clone(), &t.data).map(|v| (t.name.clone(), v)))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| ModelError::Invalid(format!("building a safetensors view: {e}")))?;
        let bytes = safetensors::serialize(views, None).map_err(|e| ModelError::Invalid(format!("serializing {file}: {e}")))?;
        let path = dir.join(file);
        std::fs::write(&path, bytes).map_err(io(&path))?;
        for t in group {
            weight_map.insert(t.name.clone(), json!(file));
        }
    }
    if shards {
        write_json(&dir.join("model.safetensors.index.json"), &json!({"metadata": {"total_size": 0}, "weight_map": weight_map}))?;
    }

    let (arch, act, quant) = match kind {
        TinyKind::BitNetPacked => ("BitNetForCausalLM", "relu2", json!({"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline"})),
        TinyKind::BitNetMaster => ("BitNetForCausalLM", "relu2", serde_json::Value::Null),
        TinyKind::Bitnet1bitLlm => ("BitnetForCausalLM", "silu", serde_json::Value::Null),
        TinyKind::LlamaTernary => ("LlamaForCausalLM", "silu", json!({"quant_method": "bitnet"})),
        TinyKind::LlamaFloat => ("LlamaForCausalLM", "silu", serde_json::Value::Null),
    };
    let tok_map = tok["model"]["vocab"].as_object().cloned().unwrap_or_default();
    let added = tok["added_tokens"].as_array().cloned().unwrap_or_default();
    let find = |t: &str| tok_map.get(t).and_then(|v| v.as_u64()).or_else(|| added.iter().find(|a| a["content"] == t).and_then(|a| a["id"].as_u64()));
    let id_of = |t: &str| find(t).unwrap_or(0);
    let mut config = json!({
        "architectures": [arch],
        "model_type": if arch == "LlamaForCausalLM" { "llama" } else { "bitnet" },
        "hidden_act": act,
        "hidden_size": d,
        "intermediate_size": ff,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5,
        "rope_theta": if kind == TinyKind::Bitnet1bitLlm { 10000.0 } else { 500000.0 },
        "tie_word_embeddings": tied,
        "vocab_size": vocab,
        "bos_token_id": id_of(bos),
        "eos_token_id": id_of(eos),
        "torch_dtype": if float_dtype == Dtype::F16 { "float16" } else { "bfloat16" },
    });
    if !quant.is_null() {
        config["quantization_config"] = quant;
    }
    write_json(&dir.join("config.json"), &config)?;
    write_json(&dir.join("tokenizer.json"), &tok)?;
    let template = if kind.byte_level() {
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    } else {
        "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
    };
    let mut tc = json!({"bos_token": bos, "eos_token": eos, "chat_template": template, "model_max_length": 512});
    if kind == TinyKind::LlamaFloat {
        tc["add_bos_token"] = json!(false);
    }
    write_json(&dir.join("tokenizer_config.json"), &tc)?;
    let eos_ids: Vec<u64> = [Some(id_of(eos)), find("<|end_of_text|>")].into_iter().flatten().collect();
    write_json(&dir.join("generation_config.json"), &json!({"bos_token_id": id_of(bos), "eos_token_id": eos_ids}))?;
    Ok(())
}
