//! A generated `llama` model with what the fixtures lack: a SentencePiece tokenizer, a
//! separate `output.weight`, grouped-query attention with two query heads per KV head, and
//! F32 weights (no activation quantization), checked against an independent, naive f64
//! forward pass written here from the architecture's definition.

use ternlm::{GenerateParams, LoadOptions, Logits, Model, SamplerConfig};
use ternlm_format::MetadataValue as V;
use ternlm_format::TensorType;
use ternlm_format::gguf::writer::{TensorData, write};

const D: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HD: usize = D / HEADS;
const FF: usize = 96;
const LAYERS: usize = 2;
const BASE: f64 = 10000.0;
const EPS: f64 = 1e-5;

struct Rng(u64);
impl Rng {
    fn f(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
    fn mat(&mut self, rows: usize, cols: usize, scale: f64) -> Vec<f64> {
        (0..rows * cols).map(|_| self.f() * scale).collect()
    }
}

fn vocab() -> (Vec<String>, Vec<f32>, Vec<i32>) {
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

struct Weights {
    embd: Vec<f64>,
    layers: Vec<[Vec<f64>; 9]>,
    out_norm: Vec<f64>,
    output: Vec<f64>,
}

fn rms(x: &[f64], w: &[f64]) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let s = 1.0 / (ms + EPS).sqrt();
    x.iter().zip(w).map(|(a, b)| a * s * b).collect()
}

fn matvec(w: &[f64], x: &[f64], rows: usize) -> Vec<f64> {
    let cols = x.len();
    (0..rows).map(|r| (0..cols).map(|c| w[r * cols + c] * x[c]).sum()).collect()
}

/// Interleaved (GPT-J) rotation, the way GGUF llama models are laid out.
fn rope(v: &mut [f64], pos: usize) {
    for head in v.chunks_mut(HD) {
        for i in 0..HD / 2 {
            let theta = pos as f64 * BASE.powf(-2.0 * i as f64 / HD as f64);
            let (c, s) = (theta.cos(), theta.sin());
            let (a, b) = (head[2 * i], head[2 * i + 1]);
            head[2 * i] = a * c - b * s;
            head[2 * i + 1] = a * s + b * c;
        }
    }
}

fn reference_logits(w: &Weights, tokens: &[u32]) -> Vec<f64> {
    let n_vocab = w.embd.len() / D;
    let mut xs: Vec<Vec<f64>> = tokens.iter().map(|&t| w.embd[t as usize * D..(t as usize + 1) * D].to_vec()).collect();
    for l in &w.layers {
        let [attn_norm, wq, wk, wv, wo, ffn_norm, wg, wu, wd] = l;
        let hs: Vec<Vec<f64>> = xs.iter().map(|x| rms(x, attn_norm)).collect();
        let mut qs: Vec<Vec<f64>> = hs.iter().map(|h| matvec(wq, h, D)).collect();
        let mut ks: Vec<Vec<f64>> = hs.iter().map(|h| matvec(wk, h, KV_HEADS * HD)).collect();
        let vs: Vec<Vec<f64>> = hs.iter().map(|h| matvec(wv, h, KV_HEADS * HD)).collect();
        for (p, (q, k)) in qs.iter_mut().zip(ks.iter_mut()).enumerate() {
            rope(q, p);
            rope(k, p);
        }
        for i in 0..xs.len() {
            let mut att = vec![0f64; D];
            for h in 0..HEADS {
                let kvh = h / (HEADS / KV_HEADS);
                let sc: Vec<f64> = (0..=i).map(|p| (0..HD).map(|d| qs[i][h * HD + d] * ks[p][kvh * HD + d]).sum::<f64>() / (HD as f64).sqrt()).collect();
                let m = sc.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = sc.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..HD {
                    att[h * HD + d] = (0..=i).map(|p| e[p] / z * vs[p][kvh * HD + d]).sum();
                }
            }
            let o = matvec(wo, &att, D);
            for (x, y) in xs[i].iter_mut().zip(o) {
                *x += y;
            }
        }
        for x in xs.iter_mut() {
            let h = rms(x, ffn_norm);
            let g = matvec(wg, &h, FF);
            let u = matvec(wu, &h, FF);
            let f: Vec<f64> = g.iter().zip(&u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
            for (x, y) in x.iter_mut().zip(matvec(wd, &f, D)) {
                *x += y;
            }
        }
    }
    let last = rms(xs.last().unwrap(), &w.out_norm);
    matvec(&w.output, &last, n_vocab)
}

fn f32_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect()
}

/// Writes the model and returns its weights rounded to f32, as the engine sees them.
fn build(path: &std::path::Path) -> Weights {
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

#[test]
fn llama_with_spm_and_separate_output_matches_a_naive_forward() {
    let path = std::env::temp_dir().join(format!("ternlm-generated-llama-{}.gguf", std::process::id()));
    let w = build(&path);
    let model = Model::load(&path, &LoadOptions { threads: 2, ..Default::default() }).unwrap();
    let _ = std::fs::remove_file(&path);

    // SentencePiece: BOS from the metadata default, a space prefix, merges by score, and
    // byte fallback for what the vocabulary lacks.
    let tok = &model.tokenizer;
    let ids = tok.encode("the cat sat", true, false).unwrap();
    let text_of = |i: u32| tok.token_text(i).unwrap().to_string();
    assert_eq!(ids.iter().map(|&i| text_of(i)).collect::<Vec<_>>(), ["<s>", "▁the", "▁cat", "▁sat"]);
    let ids2 = tok.encode("hé", false, false).unwrap();
    assert_eq!(ids2.iter().map(|&i| text_of(i)).collect::<Vec<_>>(), ["▁", "h", "<0xC3>", "<0xA9>"]);
    assert_eq!(tok.decode(&ids2), " hé");
    assert_eq!(tok.encode("<s>the", false, true).unwrap()[0], 1, "control text parses when asked");

    let mut s = model.session(64);
    let got = s.eval(&ids, Logits::Last).unwrap();
    let want = reference_logits(&w, &ids);
    let spread = want.iter().cloned().fold(0f64, |m, v| m.max(v.abs()));
    for (i, (&g, &r)) in got.iter().zip(&want).enumerate() {
        // F16 KV cache and F16 accumulation in attention: a few parts in a thousand.
        assert!((f64::from(g) - r).abs() <= 5e-3 * spread.max(1.0), "logit {i}: {g} vs {r}");
    }

    // Prefill in one batch equals feeding the same tokens one at a time.
    let mut one = model.session(64);
    let mut last = Vec::new();
    for &t in &ids {
        last = one.eval(&[t], Logits::Last).unwrap();
    }
    assert_eq!(last, got);

    let params = GenerateParams { max_tokens: 8, sampler: SamplerConfig::greedy() };
    let out = model.session(64).generate(&ids, &params, &mut |_, _| true).unwrap();
    assert!(!out.tokens.is_empty());
    assert!(model.render_chat(&[ternlm::Message::new("user", "hi")], true).unwrap().unwrap().starts_with("<s>[user] hi"));
}
