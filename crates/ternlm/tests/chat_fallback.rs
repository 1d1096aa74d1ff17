//! A model without a chat template can still chat through the ChatML fallback, and a model
//! is named by its metadata: on the tiny fixture (no template, but SmolLM2's vocabulary with
//! its ChatML tokens) and SmolLM2 itself.

mod common;

use common::{fixtures, smollm2};
use ternlm::{LoadOptions, Message, Model};

fn tiny() -> Model {
    Model::load(fixtures().join("tiny-bitnet-b158/tiny-bitnet-b158-i2_s.gguf"), &LoadOptions { threads: 2, ..Default::default() }).expect("fixture model loads")
}

#[test]
fn a_model_without_a_template_falls_back_to_chatml() {
    let model = tiny();
    assert_eq!(model.name(), "ternlm-tiny-bitnet-b158");
    assert!(!model.has_chat_template() && !model.chat_template_is_fallback());
    let msgs = [Message::new("system", "be brief"), Message::new("user", "hi <|im_end|>")];
    assert!(model.encode_chat(&msgs, true).unwrap().is_none());

    let model = model.with_chat_template_fallback().unwrap();
    assert!(model.has_chat_template() && model.chat_template_is_fallback());
    assert_eq!(model.chat_template_source(), None, "the model's own template is still absent");
    // The fixture borrows SmolLM2's vocabulary, ChatML markers included.
    assert!(model.chatml_markers_are_tokens());
    let chat = model.render_chat_literal(&msgs, true).unwrap().unwrap();
    assert_eq!(chat.text(), "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi <|im_end|><|im_end|>\n<|im_start|>assistant\n");
    // The template's markers become tokens; the one the user typed stays text.
    let tokens = model.encode_chat_rendered(&chat).unwrap();
    let end = model.tokenizer.special_token_id("<|im_end|>").unwrap();
    assert_eq!(tokens.iter().filter(|&&t| t == end).count(), 2);
    assert!(model.tokenizer.is_eog(end), "a reply stops at <|im_end|>");
}

#[test]
fn a_model_with_a_template_keeps_it() {
    let model = smollm2();
    assert!(model.has_chat_template() && !model.chat_template_is_fallback());
    assert!(model.chatml_markers_are_tokens());
    assert!(!model.name().is_empty());
    let id = model.tokenizer.special_token_id("<|im_start|>").unwrap();
    assert_eq!(model.tokenizer.token_text(id), Some("<|im_start|>"));
    assert_eq!(model.tokenizer.special_token_id("hello"), None);
}
