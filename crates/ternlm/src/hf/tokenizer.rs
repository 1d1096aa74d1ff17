//! A Hugging Face tokenizer (`tokenizer.json`, `tokenizer_config.json`,
//! `generation_config.json`) as GGUF tokenizer metadata, the same keys llama.cpp's converter
//! writes: byte-level BPE becomes `gpt2` (vocabulary, merges and the pre-tokenizer name
//! recognized from its regex), SentencePiece-style BPE with byte fallback becomes `llama`
//! (scores from merge ranks). The model then builds its tokenizer from this metadata, so a
//! checkpoint directory and its converted GGUF tokenize identically.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use ternlm_format::MetadataValue as V;

use super::config::HfConfig;
use super::hf_err;
use crate::error::Result;

/// GGUF token types.
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;
const BYTE: i32 = 6;

fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t).map(Some).map_err(|e| hf_err(path, format!("is not valid JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(hf_err(path, format!("cannot read: {e}"))),
    }
}

/// The text of a special-token entry: a plain string or `{"content": ...}`.
fn token_content(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
        _ => None,
    }
}

/// Which llama.cpp pre-tokenizer name matches this `pre_tokenizer` block.
fn pre_name(pre: &Value) -> Option<&'static str> {
    let kind = |v: &Value| v.get("type").and_then(|t| t.as_str()).unwrap_or("").to_string();
    let parts: Vec<&Value> = match kind(pre).as_str() {
        "Sequence" => pre.get("pretokenizers")?.as_array()?.iter().collect(),
        _ => vec![pre],
    };
    let regex = parts.iter().find_map(|p| p.get("pattern").and_then(|pt| pt.get("Regex")).and_then(|r| r.as_str()));
    let digits = parts.iter().any(|p| kind(p) == "Digits" && p.get("individual_digits").and_then(|b| b.as_bool()) == Some(true));
    let byte_level = parts.iter().any(|p| kind(p) == "ByteLevel");
    match regex {
        Some(r) if r.contains(r"\p{N}{1,3}") && r.contains(r"[^\r\n\p{L}\p{N}]?\p{L}+") => Some("llama-bpe"),
        Some(r) if r.contains(r"[^\r\n\p{L}\p{N}]?\p{L}+") && r.contains(r"\p{N}") => Some("qwen2"),
        Some(_) => None,
        None if digits && byte_level => Some("smollm"),
        None if byte_level => Some("gpt2"),
        None => None,
    }
}

/// GGUF tokenizer and chat-template metadata for the checkpoint in `dir`, padded to
/// `cfg.vocab_size` tokens (embedding rows past the tokenizer's last id get `[PAD<id>]`).
pub fn tokenizer_metadata(dir: &Path, cfg: &HfConfig) -> Result<Vec<(String, V)>> {
    let tok_path = dir.join("tokenizer.json");
    let tok = read_json(&tok_path)?.ok_or_else(|| hf_err(&tok_path, "is missing (ternlm reads tokenizers from tokenizer.json)"))?;
    let err = |reason: String| hf_err(&tok_path, reason);
    let model = tok.get("model").ok_or_else(|| err("has no \"model\"".into()))?;
    let model_type = model.get("type").and_then(|t| t.as_str()).unwrap_or("");
    if model_type != "BPE" {
        return Err(err(format!("tokenizer model {model_type:?} is not supported (BPE)")));
    }
    let vocab = model.get("vocab").and_then(|v| v.as_object()).ok_or_else(|| err("model.vocab is missing".into()))?;
    let byte_fallback = model.get("byte_fallback").and_then(|b| b.as_bool()).unwrap_or(false);

    // Ids to texts: the vocabulary, then added tokens (which may reuse or extend ids).
    let mut texts: Vec<Option<String>> = Vec::new();
    let put = |id: u64, text: &str, texts: &mut Vec<Option<String>>| -> Result<()> {
        if id >= (1 << 24) {
            return Err(hf_err(&tok_path, format!("token id {id} is implausibly large")));
        }
        let id = id as usize;
        if texts.len() <= id {
            texts.resize(id + 1, None);
        }
        texts[id] = Some(text.to_string());
        Ok(())
    };
    for (text, id) in vocab {
        let id = id.as_u64().ok_or_else(|| err(format!("vocab entry {text:?} has no integer id")))?;
        put(id, text, &mut texts)?;
    }
    let mut added: HashMap<usize, bool> = HashMap::new();
    for a in tok.get("added_tokens").and_then(|a| a.as_array()).into_iter().flatten() {
        let (Some(id), Some(content)) = (a.get("id").and_then(|i| i.as_u64()), a.get("content").and_then(|c| c.as_str())) else {
            return Err(err(format!("added token {a} lacks an id or content")));
        };
        put(id, content, &mut texts)?;
        added.insert(id as usize, a.get("special").and_then(|s| s.as_bool()).unwrap_or(false));
    }
    if texts.len() > cfg.vocab_size {
        return Err(err(format!("has {} tokens but config.json's vocab_size is {}", texts.len(), cfg.vocab_size)));
    }
    texts.resize(cfg.vocab_size, None);

    let spm = byte_fallback;
    let byte_token = |t: &str| t.len() == 6 && t.starts_with("<0x") && t.ends_with('>');
    let mut types = Vec::with_capacity(texts.len());
    let mut tokens = Vec::with_capacity(texts.len());
    for (i, t) in texts.iter().enumerate() {
        let (text, ty) = match (t, added.get(&i)) {
            (None, _) => (format!("[PAD{i}]"), UNUSED),
            (Some(t), Some(true)) => (t.clone(), CONTROL),
            (Some(t), Some(false)) => (t.clone(), USER_DEFINED),
            (Some(t), None) if spm && byte_token(t) => (t.clone(), BYTE),
            (Some(t), None) if spm && t == "<unk>" => (t.clone(), UNKNOWN),
            (Some(t), None) => (t.clone(), NORMAL),
        };
        tokens.push(text);
        types.push(ty);
    }
    let index: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();

    let merges: Vec<String> = model
        .get("merges")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
        .map(|m| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(p) if p.len() == 2 && p.iter().all(|x| x.is_string()) => Ok(format!("{} {}", p[0].as_str().unwrap_or(""), p[1].as_str().unwrap_or(""))),
            other => Err(err(format!("merge {other} is neither \"a b\" nor [\"a\", \"b\"]"))),
        })
        .collect::<Result<_>>()?;

    let mut md: Vec<(String, V)> = Vec::new();
    if spm {
        // SentencePiece merges the pair whose result scores highest; HF's merge list is in
        // priority order, so the score of a piece is minus the rank of the merge making it.
        let mut scores = vec![0f32; tokens.len()];
        for (rank, m) in merges.iter().enumerate() {
            if let Some((a, b)) = m.split_once(' ')
                && let Some(&id) = index.get(format!("{a}{b}").as_str())
                && scores[id] == 0.0
            {
                scores[id] = -(rank as f32) - 1.0;
            }
        }
        md.push(("tokenizer.ggml.model".into(), V::String("llama".into())));
        md.push(("tokenizer.ggml.scores".into(), V::Array(scores.into_iter().map(V::F32).collect())));
        let prefix = tok.get("normalizer").is_some_and(|n| n.to_string().contains("Prepend"))
            || tok.get("pre_tokenizer").and_then(|p| p.get("prepend_scheme")).and_then(|s| s.as_str()).is_some_and(|s| s != "never");
        md.push(("tokenizer.ggml.add_space_prefix".into(), V::Bool(prefix)));
    } else {
        let pre = tok.get("pre_tokenizer").ok_or_else(|| err("has no pre_tokenizer".into()))?;
        let name = pre_name(pre).ok_or_else(|| err(format!("pre-tokenizer {pre} is not one ternlm recognizes (llama-3, qwen2, smollm, gpt2)")))?;
        md.push(("tokenizer.ggml.model".into(), V::String("gpt2".into())));
        md.push(("tokenizer.ggml.pre".into(), V::String(name.into())));
        md.push(("tokenizer.ggml.merges".into(), V::Array(merges.into_iter().map(V::String).collect())));
    }
    md.push(("tokenizer.ggml.tokens".into(), V::Array(tokens.iter().cloned().map(V::String).collect())));
    md.push(("tokenizer.ggml.token_type".into(), V::Array(types.into_iter().map(V::I32).collect())));

    let tc_path = dir.join("tokenizer_config.json");
    let tc = read_json(&tc_path)?.unwrap_or(Value::Null);
    let generation = read_json(&dir.join("generation_config.json"))?.unwrap_or(Value::Null);
    let id_of = |text: Option<String>| text.and_then(|t| index.get(t.as_str()).map(|&i| i as u32));
    let gen_ids = |key: &str| -> Vec<u32> {
        match generation.get(key) {
            Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
            Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect(),
            _ => Vec::new(),
        }
    };
    let bos = id_of(token_content(tc.get("bos_token"))).or(gen_ids("bos_token_id").first().copied()).or(cfg.bos_token_id);
    let mut eos_all: Vec<u32> = id_of(token_content(tc.get("eos_token"))).into_iter().collect();
    for id in gen_ids("eos_token_id").into_iter().chain(cfg.eos_token_ids.iter().copied()) {
        if !eos_all.contains(&id) {
            eos_all.push(id);
        }
    }
    let n = tokens.len() as u32;
    let check = |what: &str, id: u32| if id < n { Ok(id) } else { Err(err(format!("{what} id {id} is outside the vocabulary of {n}"))) };
    if let Some(b) = bos {
        md.push(("tokenizer.ggml.bos_token_id".into(), V::U32(check("bos", b)?)));
    }
    if let Some(&e) = eos_all.first() {
        md.push(("tokenizer.ggml.eos_token_id".into(), V::U32(check("eos", e)?)));
    }
    if let Some(&e) = eos_all.get(1) {
        md.push(("tokenizer.ggml.eot_token_id".into(), V::U32(check("eot", e)?)));
    }
    if let Some(p) = id_of(token_content(tc.get("pad_token"))) {
        md.push(("tokenizer.ggml.padding_token_id".into(), V::U32(p)));
    }
    if spm && let Some(&u) = index.get("<unk>") {
        md.push(("tokenizer.ggml.unknown_token_id".into(), V::U32(u as u32)));
    }
    // Without an explicit flag, SentencePiece tokenizers add BOS and byte-level ones follow
    // the post-processor (LLaMA-3's TemplateProcessing prepends <|begin_of_text|>).
    let add_bos = tc
        .get("add_bos_token")
        .and_then(|b| b.as_bool())
        .unwrap_or_else(|| spm || tok.get("post_processor").is_some_and(|p| bos.and_then(|b| tokens.get(b as usize)).is_some_and(|t| p.to_string().contains(&format!("\"{t}\"")))));
    md.push(("tokenizer.ggml.add_bos_token".into(), V::Bool(add_bos)));
    md.push(("tokenizer.ggml.add_eos_token".into(), V::Bool(tc.get("add_eos_token").and_then(|b| b.as_bool()).unwrap_or(false))));

    let template = match tc.get("chat_template") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(list)) => {
            list.iter().find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default")).or_else(|| list.first()).and_then(|t| t.get("template")).and_then(|t| t.as_str()).map(str::to_string)
        }
        _ => None,
    };
    let template = match template {
        Some(t) => Some(t),
        // Newer checkpoints keep the template beside the tokenizer config.
        None => std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
    };
    if let Some(t) = template {
        md.push(("tokenizer.chat_template".into(), V::String(t)));
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_pre_tokenizers() {
        let llama3 = serde_json::json!({"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}},{"type":"ByteLevel"}]});
        assert_eq!(pre_name(&llama3), Some("llama-bpe"));
        let smol = serde_json::json!({"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":true},{"type":"ByteLevel"}]});
        assert_eq!(pre_name(&smol), Some("smollm"));
        assert_eq!(pre_name(&serde_json::json!({"type":"ByteLevel"})), Some("gpt2"));
        assert_eq!(pre_name(&serde_json::json!({"type":"Whitespace"})), None);
    }
}
