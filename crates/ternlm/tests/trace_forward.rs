//! `Model::trace_forward`, the layer-by-layer dump used to compare ternlm with llama.cpp:
//! every point of every layer arrives once, in graph order, with one row per token, and the
//! last tensor is the logits the call returns, equal to an ordinary evaluation's.

mod common;

use common::generated_llama::{D, FF, HD, HEADS, KV_HEADS, LAYERS, build};
use ternlm::{LoadOptions, Logits, Model};

#[test]
fn every_layer_point_arrives_once_in_order_and_the_logits_are_an_evals() {
    let path = std::env::temp_dir().join(format!("ternlm-trace-{}.gguf", std::process::id()));
    build(&path);
    let model = Model::load(&path, &LoadOptions { threads: 2, ..Default::default() }).unwrap();
    let _ = std::fs::remove_file(&path);
    let tokens = model.tokenizer.encode("the cat sat", true, false).unwrap();
    let n = tokens.len();
    let mut seen: Vec<(String, usize)> = Vec::new();
    let mut last = Vec::new();
    let logits = model
        .trace_forward(&tokens, &mut |name, data| {
            seen.push((name.to_string(), data.len()));
            last = data.to_vec();
        })
        .unwrap();

    let mut want = vec![("inp_embd".to_string(), n * D)];
    for l in 0..LAYERS {
        for (name, width) in [
            ("attn_norm", D),
            ("Qcur", HEADS * HD),
            ("Kcur", KV_HEADS * HD),
            ("Vcur", KV_HEADS * HD),
            ("kqv_out", HEADS * HD),
            ("attn_out", D),
            ("ffn_inp", D),
            ("ffn_norm", D),
            ("ffn_gate_par", FF),
            ("ffn_down", D),
            ("l_out", D),
        ] {
            want.push((format!("{name}-{l}"), n * width));
        }
    }
    want.push(("result_norm".to_string(), n * D));
    want.push(("result_output".to_string(), n * model.config.n_vocab));
    assert_eq!(seen, want);
    assert_eq!(last, logits);
    assert_eq!(logits, model.session(n).eval(&tokens, Logits::All).unwrap());
    assert!(model.trace_forward(&[], &mut |_, _| {}).is_err(), "an empty batch is refused");
    assert!(model.trace_forward(&[u32::MAX], &mut |_, _| {}).is_err(), "an unknown token is refused");
}
