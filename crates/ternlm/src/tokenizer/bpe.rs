//! Byte-level BPE (GGUF `gpt2` tokenizer model) on the `tokenizers` crate: the vocabulary and
//! merges from GGUF, the pre-tokenizer regexes that llama.cpp applies for each
//! `tokenizer.ggml.pre`, and GPT-2's byte-to-character mapping.

use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use super::text_index;
use crate::error::{ModelError, Result};

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The regexes (applied in turn, each splitting the pieces of the last) and whether words
/// found whole in the vocabulary skip merging, for a `tokenizer.ggml.pre` value.
fn pre_tokenizer(pre: Option<&str>) -> Result<(Vec<&'static str>, bool)> {
    Ok(match pre.unwrap_or("default") {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" => (vec![LLAMA3], true),
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => (vec![r"\p{N}", GPT2], false),
        "gpt-2" | "gpt2" | "mpt" | "olmo" | "jais" => (vec![GPT2], false),
        "qwen2" | "stablelm2" => (vec![QWEN2], false),
        "falcon" => (vec![r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"], false),
        "default" => (vec![r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"], false),
        other => return Err(ModelError::Tokenizer(format!("pre-tokenizer {other:?} is not supported"))),
    })
}

pub(super) struct BpeEncoder {
    tokenizer: Tokenizer,
}

impl BpeEncoder {
    pub(super) fn new(texts: &[String], merges: &[String], pre: Option<&str>) -> Result<Self> {
        let (regexes, ignore_merges) = pre_tokenizer(pre)?;
        let vocab: Vocab = text_index(texts).into_iter().collect();
        let merges = merges
            .iter()
            .enumerate()
            .map(|(i, m)| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).ok_or_else(|| ModelError::Tokenizer(format!("merge {i} {m:?} is not two tokens"))))
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).ignore_merges(ignore_merges).build().map_err(|e| ModelError::Tokenizer(format!("building BPE: {e}")))?;
        let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
        for r in regexes {
            let split = Split::new(SplitPattern::Regex(r.to_string()), SplitDelimiterBehavior::Isolated, false).map_err(|e| ModelError::Tokenizer(format!("pre-tokenizer regex: {e}")))?;
            steps.push(split.into());
        }
        steps.push(ByteLevel::new(false, false, false).into());
        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer.with_pre_tokenizer(Some(Sequence::new(steps)));
        Ok(Self { tokenizer })
    }

    pub(super) fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let enc = self.tokenizer.encode(text, false).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        out.extend_from_slice(enc.get_ids());
        Ok(())
    }
}

/// GPT-2's reversible map from bytes to printable characters, inverted: the byte a
/// character of a token's text stands for.
fn char_to_byte(c: char) -> Option<u8> {
    let c = c as u32;
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    if c < 256 && printable(c) {
        return Some(c as u8);
    }
    // The 68 non-printable bytes map, in order, to 256, 257, ...
    let k = c.checked_sub(256)?;
    (0u32..256).filter(|&b| !printable(b)).nth(k as usize).map(|b| b as u8)
}

/// The raw bytes of a byte-level BPE token's text. Characters outside the map (never in a
/// well-formed vocabulary) keep their own UTF-8 bytes.
pub(super) fn decode_byte_level(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GPT-2's byte-to-character map, forwards, to build test vocabularies.
    fn byte_char(b: u8) -> char {
        let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        if printable(u32::from(b)) {
            return char::from(b);
        }
        let k = (0u32..256).filter(|&x| !printable(x)).position(|x| x == u32::from(b)).unwrap() as u32;
        char::from_u32(256 + k).unwrap()
    }

    fn encoder(pre: &str, words: &[&str]) -> (BpeEncoder, Vec<String>) {
        let mut texts: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
        texts.extend(words.iter().map(|w| w.replace(' ', "Ġ")));
        (BpeEncoder::new(&texts, &[], Some(pre)).unwrap(), texts)
    }

    fn pieces(e: &BpeEncoder, texts: &[String], s: &str) -> Vec<String> {
        let mut out = Vec::new();
        e.encode(s, &mut out).unwrap();
        out.iter().map(|&i| texts[i as usize].replace('Ġ', " ")).collect()
    }

    #[test]
    fn llama3_splits_digits_by_three_and_keeps_whole_words() {
        // With no merges, only the pre-tokenizer and llama3's "whole word in the vocabulary
        // wins" rule can produce multi-character tokens.
        let (e, t) = encoder("llama-bpe", &["Hello", "'s", "123", " world", "!!"]);
        assert_eq!(pieces(&e, &t, "Hello's 1234 world!!"), ["Hello", "'s", " ", "123", "4", " world", "!!"]);
    }

    #[test]
    fn smollm_isolates_every_digit_before_merging() {
        let mut texts: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
        texts.push("12".into());
        let merges = vec!["1 2".to_string()];
        let gpt2 = BpeEncoder::new(&texts, &merges, Some("gpt2")).unwrap();
        let smollm = BpeEncoder::new(&texts, &merges, Some("smollm")).unwrap();
        assert_eq!(pieces(&gpt2, &texts, "12"), ["12"]);
        assert_eq!(pieces(&smollm, &texts, "12"), ["1", "2"]);
    }

    #[test]
    fn every_named_pre_tokenizer_builds_and_unknown_ones_are_refused() {
        for pre in ["llama3", "llama-bpe", "falcon3", "smollm", "gpt2", "qwen2", "falcon", "default"] {
            encoder(pre, &[]);
        }
        let texts: Vec<String> = vec!["a".into()];
        assert!(BpeEncoder::new(&texts, &[], Some("no-such-pre")).is_err());
    }

    #[test]
    fn byte_level_map_inverts_gpt2() {
        assert_eq!(decode_byte_level("Ġhello"), b" hello");
        assert_eq!(decode_byte_level("Ċ"), b"\n");
        assert_eq!(decode_byte_level("ĉ"), b"\t");
        assert_eq!(decode_byte_level("Ā"), [0u8]);
        assert_eq!(decode_byte_level("Ń"), [0xADu8]);
    }
}
