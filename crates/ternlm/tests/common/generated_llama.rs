//! A generated `llama` model: a SentencePiece tokenizer, a separate `output.weight`,
//! grouped-query attention with two query heads per KV head, F32 weights. Small enough that
//! a step takes microseconds, with logits spread enough that sampling has real choices.

#![allow(dead_code)]

use ternlm_format::MetadataValue as V;
use ternlm_format::TensorType;
use ternlm_format::gguf::writer::{TensorData, write};

pub const D: usize = 64;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 2;
pub const HD: usize = D / HEADS;
pub const FF: usize = 96;
pub const LAYERS: usize = 2;
pub const BASE: f64 = 10000.0;
pub const EPS: f64 = 1e-5;

pub struct Rng(pub u64);
impl Rng {
    pub fn f(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
    pub fn mat(&mut self, rows: usize, cols: usize, scale: f64) -> Vec<f64> {
        (0..rows * cols).map(|_| self.f() * scale).collect()
    }
}

pub fn vocab() -> (Vec<String>, Vec<f32>, Vec<i32>) {
    let mut t = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut ty = vec![2, 3, 3];
    for b in 0..256 {
        t.push(format!("<0x{b:02X}>"));
        ty.push(6);
    }
    for w in ["▁", "▁the", "▁cat", "▁sat", "t", "h", "e", "c", "a", "s", "▁t", "th", "▁th", "at", "▁c", "▁s"] {
        t.push(w.into());
        ty.push(1);
    }
    let scores = (0..t.len()).map(|i| -(i as f32) / 10.0).collect();
    (t, scores, ty)
}

pub struct Weights {
    pub embd: Vec<f64>,
    pub layers: Vec<[Vec<f64>; 9]>,
    pub out_norm: Vec<f64>,
    pub output: Vec<f64>,
}

pub fn f32_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect()
}

/// Writes the model and returns its weights rounded to f32, as the engine sees them.
pub fn build(path: &std::path::Path) -> Weights {
    let (tokens, scores, types) = vocab();
    let nv = tokens.len();
    let mut rng = Rng(0x5eed_1234);
    let r32 = |v: Vec<f64>| v.into_iter().map(|x| f64::from(x as f32)).collect::<Vec<_>>();
    let norm = |rng: &mut Rng, n: usize| r32((0..n).map(|_| 1.0 + 0.3 * rng.f()).collect());
    let w = Weights {
        embd: r32(rng.mat(nv, D, 1.0)),
        layers: (0..LAYERS)
            .map(|_| {
                let s = 1.0 / (D as f64).sqrt();
                [
                    norm(&mut rng, D),
                    r32(rng.mat(D, D, s)),
                    r32(rng.mat(KV_HEADS * HD, D, s)),
                    r32(rng.mat(KV_HEADS * HD, D, s)),
                    r32(rng.mat(D, D, s)),
                    norm(&mut rng, D),
                    r32(rng.mat(FF, D, s)),
                    r32(rng.mat(FF, D, s)),
                    r32(rng.mat(D, FF, 1.0 / (FF as f64).sqrt())),
                ]
            })
            .collect(),
        out_norm: norm(&mut rng, D),
        output: r32(rng.mat(nv, D, 2.0 / (D as f64).sqrt())),
    };
    let md: Vec<(String, V)> = vec![
        ("general.architecture".into(), V::String("llama".into())),
        ("llama.context_length".into(), V::U32(256)),
        ("llama.embedding_length".into(), V::U32(D as u32)),
        ("llama.block_count".into(), V::U32(LAYERS as u32)),
        ("llama.feed_forward_length".into(), V::U32(FF as u32)),
        ("llama.attention.head_count".into(), V::U32(HEADS as u32)),
        ("llama.attention.head_count_kv".into(), V::U32(KV_HEADS as u32)),
        ("llama.rope.freq_base".into(), V::F32(BASE as f32)),
        ("llama.attention.layer_norm_rms_epsilon".into(), V::F32(EPS as f32)),
        ("tokenizer.ggml.model".into(), V::String("llama".into())),
        ("tokenizer.ggml.tokens".into(), V::Array(tokens.into_iter().map(V::String).collect())),
        ("tokenizer.ggml.scores".into(), V::Array(scores.into_iter().map(V::F32).collect())),
        ("tokenizer.ggml.token_type".into(), V::Array(types.into_iter().map(V::I32).collect())),
        ("tokenizer.ggml.bos_token_id".into(), V::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), V::U32(2)),
        ("tokenizer.chat_template".into(), V::String("{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}".into())),
    ];
    let mut owned: Vec<(String, Vec<u64>, Vec<u8>)> = vec![
        ("token_embd.weight".into(), vec![D as u64, nv as u64], f32_bytes(&w.embd)),
        ("output_norm.weight".into(), vec![D as u64], f32_bytes(&w.out_norm)),
        ("output.weight".into(), vec![D as u64, nv as u64], f32_bytes(&w.output)),
    ];
    let names = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"];
    let dims = |n: &str| -> Vec<u64> {
        match n {
            "attn_norm" | "ffn_norm" => vec![D as u64],
            "attn_q" | "attn_output" => vec![D as u64, D as u64],
            "attn_k" | "attn_v" => vec![D as u64, (KV_HEADS * HD) as u64],
            "ffn_gate" | "ffn_up" => vec![D as u64, FF as u64],
            _ => vec![FF as u64, D as u64],
        }
    };
    for (i, l) in w.layers.iter().enumerate() {
        for (n, t) in names.iter().zip(l.iter()) {
            owned.push((format!("blk.{i}.{n}.weight"), dims(n), f32_bytes(t)));
        }
    }
    let tensors: Vec<TensorData<'_>> = owned.iter().map(|(n, d, b)| TensorData { name: n.clone(), dims: d.clone(), ty: TensorType::F32, data: b }).collect();
    write(path, &md, &tensors).unwrap();
    w
}
