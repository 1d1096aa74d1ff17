//! Hugging Face checkpoints of every family (tiny ones generated here, shaped and named as
//! the real repositories are) must run straight from their directory, and give the same
//! logits once converted to GGUF:
//!
//! - against an independent reference: a plain f32 forward pass written from transformers'
//!   semantics (rotate-half rope on HF's row order, BitLinear activation quantization,
//!   `weight_scale` multiplied or divided by linear class, sub-norms), reading the
//!   safetensors directly. This catches a wrong packing order, scale direction, Q/K
//!   permutation or sub-norm name, which a directory-vs-file comparison alone cannot;
//! - directory vs converted file: bit-identical for I2_S (the directory's own layout),
//!   within the f16 rounding of one scale for TQ1_0/TQ2_0, and close for float types;
//! - the tokenizer built from the converted metadata against the `tokenizers` crate
//!   reading `tokenizer.json` itself.

use std::path::{Path, PathBuf};

use ternlm::hf::tiny::{TinyKind, write_tiny};
use ternlm::hf::{Conversion, ConvertOptions};
use ternlm::{LoadOptions, Logits, Model};
use ternlm_format::TensorType;
use ternlm_format::safetensors::{Checkpoint, Dtype};

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("hf-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A fresh tiny checkpoint in a directory of its own (`test` keeps parallel tests apart:
/// rewriting a file another test has mapped would fault).
fn tiny(kind: TinyKind, shards: bool, test: &str) -> PathBuf {
    let dir = tmp(&format!("{test}-{}{}", kind.name(), if shards { "-sharded" } else { "" }));
    write_tiny(&dir, kind, 7, shards).unwrap();
    dir
}

fn opts() -> LoadOptions {
    LoadOptions { threads: 2, ..Default::default() }
}

const PROMPT: &str = "the cat is on the mat and it was 1234 for his";

fn logits(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let mut s = model.session(128);
    s.eval(tokens, Logits::All).unwrap()
}

/// Largest absolute difference, relative to the largest magnitude in `want`.
fn rel_max_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

// ---------- the independent reference ----------

struct Reference {
    cfg: serde_json::Value,
    ckpt: Checkpoint,
}

fn rms(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let s = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, g)| v * s * g).collect()
}

impl Reference {
    fn new(dir: &Path) -> Self {
        let cfg = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        Self { cfg, ckpt: Checkpoint::open_dir(dir).unwrap() }
    }

    fn n(&self, k: &str) -> usize {
        self.cfg[k].as_u64().unwrap() as usize
    }

    fn floats(&self, name: &str) -> Vec<f32> {
        self.ckpt.require(name).unwrap().to_f32().unwrap()
    }

    fn ternary(&self) -> bool {
        self.cfg["architectures"][0] != "LlamaForCausalLM" || self.cfg["quantization_config"]["quant_method"] == "bitnet"
    }

    /// `W·x` for linear `name` (HF `[out, in]`), BitLinear when the model is ternary.
    fn linear(&self, name: &str, x: &[f32]) -> Vec<f32> {
        let t = self.ckpt.require(&format!("{name}.weight")).unwrap();
        let cols = x.len();
        if !self.ternary() {
            let w = t.to_f32().unwrap();
            return w.chunks_exact(cols).map(|r| r.iter().zip(x).map(|(a, b)| a * b).sum()).collect();
        }
        let (w, scale): (Vec<f32>, f32) = if t.dtype == Dtype::U8 {
            let rows = t.shape[0] * 4;
            let mut w = vec![0f32; rows * cols];
            for p in 0..t.shape[0] {
                for c in 0..cols {
                    let b = t.data[p * cols + c];
                    for i in 0..4 {
                        w[(i * t.shape[0] + p) * cols + c] = f32::from((b >> (2 * i)) & 3) - 1.0;
                    }
                }
            }
            let stored = self.floats(&format!("{name}.weight_scale"))[0];
            let auto = self.cfg["quantization_config"]["linear_class"] == "autobitlinear";
            (w, if auto { stored } else { 1.0 / stored })
        } else {
            let w = t.to_f32().unwrap();
            let s = 1.0 / (w.iter().map(|v| v.abs()).sum::<f32>() / w.len() as f32).max(1e-5);
            (w.iter().map(|v| (v * s).round_ties_even().clamp(-1.0, 1.0)).collect(), 1.0 / s)
        };
        let xs = 127.0 / x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-5);
        let xq: Vec<f32> = x.iter().map(|v| (v * xs).round_ties_even().clamp(-128.0, 127.0)).collect();
        w.chunks_exact(cols).map(|r| r.iter().zip(&xq).map(|(a, b)| a * b).sum::<f32>() / xs * scale).collect()
    }

    /// Logits of every position. `nudge` scales every query by `1 + nudge`, to measure how
    /// far rounding-sized changes move these random models' logits.
    fn forward(&self, tokens: &[u32], nudge: f32) -> Vec<f32> {
        let (d, heads, kv_heads) = (self.n("hidden_size"), self.n("num_attention_heads"), self.n("num_key_value_heads"));
        let hd = d / heads;
        let eps = self.cfg["rms_norm_eps"].as_f64().unwrap() as f32;
        let theta = self.cfg["rope_theta"].as_f64().unwrap() as f32;
        let arch = self.cfg["architectures"][0].as_str().unwrap();
        let (attn_sub, ffn_sub) = match arch {
            "BitNetForCausalLM" => (Some("self_attn.attn_sub_norm"), Some("mlp.ffn_sub_norm")),
            "BitnetForCausalLM" => (Some("self_attn.inner_attn_ln"), Some("mlp.ffn_layernorm")),
            _ => (None, None),
        };
        let relu2 = self.cfg["hidden_act"] == "relu2";
        let embed = self.floats("model.embed_tokens.weight");
        let mut xs: Vec<Vec<f32>> = tokens.iter().map(|&t| embed[t as usize * d..(t as usize + 1) * d].to_vec()).collect();
        let rope = |v: &mut [f32], pos: usize| {
            for h in v.chunks_exact_mut(hd) {
                for i in 0..hd / 2 {
                    let ang = pos as f32 * theta.powf(-2.0 * i as f32 / hd as f32);
                    let (c, s) = (ang.cos(), ang.sin());
                    let (a, b) = (h[i], h[i + hd / 2]);
                    h[i] = a * c - b * s;
                    h[i + hd / 2] = b * c + a * s;
                }
            }
        };
        for l in 0..self.n("num_hidden_layers") {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            let (mut ks, mut vs) = (Vec::new(), Vec::new());
            let mut outs = Vec::new();
            for (pos, x) in xs.iter().enumerate() {
                let h = rms(x, &self.floats(&p("input_layernorm.weight")), eps);
                let mut q = self.linear(&p("self_attn.q_proj"), &h);
                q.iter_mut().for_each(|v| *v *= 1.0 + nudge);
                let mut k = self.linear(&p("self_attn.k_proj"), &h);
                rope(&mut q, pos);
                rope(&mut k, pos);
                // The cache holds f16, as llama.cpp's and ternlm's do.
                let f16_round = |v: Vec<f32>| v.into_iter().map(|x| half::f16::from_f32(x).to_f32()).collect::<Vec<_>>();
                ks.push(f16_round(k));
                vs.push(f16_round(self.linear(&p("self_attn.v_proj"), &h)));
                let mut o = vec![0f32; heads * hd];
                for head in 0..heads {
                    let kvh = head / (heads / kv_heads);
                    let qh = &q[head * hd..(head + 1) * hd];
                    let scores: Vec<f32> = ks.iter().map(|k| qh.iter().zip(&k[kvh * hd..]).map(|(a, b)| a * b).sum::<f32>() / (hd as f32).sqrt()).collect();
                    let m = scores.iter().fold(f32::MIN, |a, &b| a.max(b));
                    let e: Vec<f32> = scores.iter().map(|s| (s - m).exp()).collect();
                    let z: f32 = e.iter().sum();
                    for (j, v) in vs.iter().enumerate() {
                        for c in 0..hd {
                            o[head * hd + c] += e[j] / z * v[kvh * hd + c];
                        }
                    }
                }
                if let Some(s) = attn_sub {
                    o = rms(&o, &self.floats(&p(&format!("{s}.weight"))), eps);
                }
                outs.push(self.linear(&p("self_attn.o_proj"), &o));
            }
            for (x, o) in xs.iter_mut().zip(outs) {
                x.iter_mut().zip(o).for_each(|(a, b)| *a += b);
                let h = rms(x, &self.floats(&p("post_attention_layernorm.weight")), eps);
                let g = self.linear(&p("mlp.gate_proj"), &h);
                let u = self.linear(&p("mlp.up_proj"), &h);
                let mut a: Vec<f32> = g.iter().zip(&u).map(|(g, u)| if relu2 { g.max(0.0).powi(2) * u } else { g / (1.0 + (-g).exp()) * u }).collect();
                if let Some(s) = ffn_sub {
                    a = rms(&a, &self.floats(&p(&format!("{s}.weight"))), eps);
                }
                x.iter_mut().zip(self.linear(&p("mlp.down_proj"), &a)).for_each(|(a, b)| *a += b);
            }
        }
        let head = if self.ckpt.contains("lm_head.weight") { self.floats("lm_head.weight") } else { embed };
        let norm = self.floats("model.norm.weight");
        xs.iter()
            .flat_map(|x| {
                let h = rms(x, &norm, eps);
                head.chunks_exact(d).map(|r| r.iter().zip(&h).map(|(a, b)| a * b).sum::<f32>()).collect::<Vec<_>>()
            })
            .collect()
    }
}

// ---------- the tests ----------

/// How close a converted file's logits must be to the directory's.
#[derive(Clone, Copy)]
enum Tol {
    /// Bit-identical.
    Exact,
    /// Within this multiple of the family's noise floor (plus 0.5% of the logit range).
    Noise(f32),
    /// Within this fraction of the logit range (quantizing float weights).
    Abs(f32),
}

/// Runs one family: directory vs reference, then each conversion vs the directory.
fn check_family(kind: TinyKind, shards: bool, conversions: &[(Option<TensorType>, Option<TensorType>, Tol)]) {
    let dir = tiny(kind, shards, "family");
    let model = Model::load(&dir, &opts()).unwrap_or_else(|e| panic!("{}: loading the directory: {e}", kind.name()));
    let tokens = model.tokenizer.encode(PROMPT, true, false).unwrap();
    assert!(tokens.len() > 8, "{}: {tokens:?}", kind.name());
    let got = logits(&model, &tokens);
    let reference = Reference::new(&dir);
    let want = reference.forward(&tokens, 0.0);
    let d = rel_max_diff(&got, &want);
    // Random ternary models are chaotic: activation quantization turns a rounding-sized
    // change into a flipped int8 step. The noise floor is how far a 1e-4 relative nudge to
    // the queries moves the reference itself (about 2.6% of the logit range for the ternary
    // families, 0.3% for the float one); summation order and ternlm's rope table move
    // logits by no more than that. A wrong rope order moves them by 10-60%, a wrong scale
    // direction or packing order by far more.
    let noise = rel_max_diff(&reference.forward(&tokens, 1e-4), &want);
    eprintln!("{}: directory vs reference {d:.2e} (noise floor {noise:.2e})", kind.name());
    assert!(d < 2.0 * noise + 0.005, "{}: directory vs reference: max diff {d} of the logit range, noise floor {noise}", kind.name());

    for &(linear_type, head_type, tol) in conversions {
        let out = dir.with_extension(format!("{}-{}.gguf", linear_type.map_or("auto", |t| t.name()), head_type.map_or("auto", |t| t.name())));
        // bf16 is stored as F16 unless a type is named, as when the folder itself loads.
        let conv = Conversion::plan(&dir, &ConvertOptions { linear_type: linear_type.map(Into::into), head_type: head_type.map(Into::into), bf16_as_f16: true }).unwrap();
        conv.write(&out, 2).unwrap();
        let file_model = Model::load(&out, &opts()).unwrap();
        assert_eq!(file_model.tokenizer.encode(PROMPT, true, false).unwrap(), tokens);
        let from_file = logits(&file_model, &tokens);
        let d = rel_max_diff(&from_file, &got);
        eprintln!("{} -> {:?}/{:?}: directory vs file {d:.2e}", kind.name(), linear_type, head_type);
        let limit = match tol {
            Tol::Exact => {
                assert_eq!(from_file, got, "{}: {linear_type:?} must be lossless", kind.name());
                continue;
            }
            Noise(k) => k * noise + 0.005,
            Abs(a) => a,
        };
        assert!(d <= limit, "{}: {linear_type:?}/{head_type:?}: directory vs file: {d} > {limit}", kind.name());
        let _ = std::fs::remove_file(&out);
    }
}

use TensorType::{F16, I2S, Q6K, Q8_0, TQ1_0, TQ2_0};
use Tol::{Abs, Exact, Noise};

#[test]
fn bitnet_b158_packed_autobitlinear() {
    // weight_scale is bf16, which f16 holds exactly: every ternary type is lossless here.
    check_family(
        TinyKind::BitNetPacked,
        false,
        &[(Some(I2S), None, Exact), (Some(TQ2_0), None, Exact), (Some(TQ1_0), None, Exact), (Some(TQ2_0), Some(Q6K), Noise(3.0)), (Some(Q8_0), Some(F16), Noise(4.0))],
    );
}

#[test]
fn bitnet_b158_bf16_master_ternarized_at_load() {
    check_family(TinyKind::BitNetMaster, true, &[(None, None, Exact), (Some(TQ2_0), None, Noise(2.0)), (Some(F16), None, Noise(4.0))]);
}

#[test]
fn bitnet_1bitllm_fp16_latent() {
    check_family(TinyKind::Bitnet1bitLlm, false, &[(Some(I2S), Some(F16), Exact), (Some(TQ1_0), None, Noise(2.0)), (Some(Q8_0), None, Noise(4.0))]);
}

#[test]
fn llama_with_bitnet_quantization() {
    // bitlinear divides by weight_scale: its inverse rounds in TQ2_0's f16 block scale.
    check_family(TinyKind::LlamaTernary, true, &[(Some(I2S), None, Exact), (Some(TQ2_0), Some(Q8_0), Noise(3.0))]);
}

#[test]
fn plain_bf16_llama() {
    check_family(TinyKind::LlamaFloat, false, &[(None, None, Exact), (Some(F16), Some(F16), Exact), (Some(TensorType::BF16), Some(TensorType::BF16), Noise(2.0)), (Some(Q8_0), Some(Q6K), Abs(0.03))]);
}

#[test]
fn tokenizers_match_the_tokenizers_crate() {
    for kind in [TinyKind::BitNetPacked, TinyKind::Bitnet1bitLlm, TinyKind::LlamaFloat] {
        let dir = tiny(kind, false, "tokenizers");
        let conv = Conversion::plan(&dir, &ConvertOptions::default()).unwrap();
        let file = conv.to_gguf(1).unwrap();
        let ours = ternlm::Tokenizer::from_metadata(&file).unwrap();
        let theirs = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        for text in [PROMPT, "the  quick brown fox, isn't it? 42 + 7 = 49", "it was\n\nthe end.  ", "unicode: caf\u{e9} \u{1F600} \u{4E2D}\u{6587}"] {
            let want: Vec<u32> = theirs.encode(text, false).unwrap().get_ids().to_vec();
            let got = ours.encode(text, false, false).unwrap();
            assert_eq!(got, want, "{}: {text:?}", kind.name());
        }
    }
}

#[test]
fn chat_template_and_special_tokens_come_from_tokenizer_config() {
    let dir = tiny(TinyKind::BitNetPacked, false, "chat");
    let m = Model::load(&dir, &opts()).unwrap();
    let r = m.render_chat(&[ternlm::Message::new("user", "hi")], true).unwrap().unwrap();
    assert_eq!(r, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
    let eot = m.tokenizer.encode("<|eot_id|>", false, true).unwrap();
    assert_eq!(eot.len(), 1);
    assert!(m.tokenizer.is_eog(eot[0]));
    assert_eq!(m.tokenizer.encode("the", true, false).unwrap()[0], m.tokenizer.bos.unwrap(), "LLaMA-3 style adds BOS");
}

#[test]
fn ragged_ternary_rows_fall_back_to_q8_0_with_a_note() {
    // 1bitLLM's 3B has an FFN of 8640, which no 2-bit layout can row-pack: the down
    // projection falls back to Q8_0 (holding scale * trit exactly) and says so.
    use ternlm::hf::tiny::{TinyShape, write_shaped};
    let dir = tmp("ragged");
    write_shaped(&dir, TinyKind::Bitnet1bitLlm, 5, false, TinyShape { ff: 320, ..TinyShape::TINY }).unwrap();
    let conv = Conversion::plan(&dir, &ConvertOptions::for_loading()).unwrap();
    assert_eq!(conv.notes.len(), 2, "{:?}", conv.notes);
    assert!(conv.notes[0].contains("blk.0.ffn_down.weight") && conv.notes[0].contains("Q8_0"), "{:?}", conv.notes);
    let e = Conversion::plan(&dir, &ConvertOptions { linear_type: Some(TQ2_0.into()), ..Default::default() }).err().unwrap().to_string();
    assert!(e.contains("ffn_gate") || e.contains("ffn_down"), "{e}");
    let model = Model::load(&dir, &opts()).unwrap();
    let tokens = model.tokenizer.encode(PROMPT, true, false).unwrap();
    let got = logits(&model, &tokens);
    let reference = Reference::new(&dir);
    let want = reference.forward(&tokens, 0.0);
    let noise = rel_max_diff(&reference.forward(&tokens, 1e-4), &want);
    let d = rel_max_diff(&got, &want);
    eprintln!("ragged: directory vs reference {d:.2e} (noise floor {noise:.2e})");
    // The Q8_0 layer skips activation quantization, a deviation of its own.
    assert!(d < 4.0 * noise + 0.01, "{d} vs noise {noise}");
}
