//! A generated `llama` model with what the fixtures lack: a SentencePiece tokenizer, a
//! separate `output.weight`, grouped-query attention with two query heads per KV head, and
//! F32 weights (no activation quantization), checked against an independent, naive f64
//! forward pass written here from the architecture's definition.

mod common;

use common::generated_llama::{BASE, D, EPS, FF, HD, HEADS, KV_HEADS, Weights, build};
use ternlm::{GenerateParams, LoadOptions, Logits, Model, SamplerConfig};

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

    let params = GenerateParams { max_tokens: 8, sampler: SamplerConfig::greedy(), ..Default::default() };
    let out = model.session(64).generate(&ids, &params, &mut |_, _| true).unwrap();
    assert!(!out.tokens.is_empty());
    assert!(model.render_chat(&[ternlm::Message::new("user", "hi")], true).unwrap().unwrap().starts_with("<s>[user] hi"));
}
