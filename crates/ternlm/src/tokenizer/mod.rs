//! Tokenizers built from GGUF metadata (`tokenizer.ggml.*`): byte-level BPE (`gpt2`, with the
//! pre-tokenizer regexes each `pre` names) and SentencePiece (`llama`). Special tokens are
//! split out of the text first (control tokens only when asked, and never inside the byte
//! ranges a caller marks literal, such as chat message content; user-defined tokens always,
//! as llama.cpp does); each plain-text fragment goes to the model's encoder.
//!
//! Decoding maps every id to the raw bytes of its piece once, at load; [`StreamDecoder`]
//! turns a stream of pieces into text without ever emitting half a UTF-8 character.

mod bpe;
mod spm;
mod stream;

use std::collections::HashMap;
use std::ops::Range;

use ternlm_format::Metadata;

pub use stream::StreamDecoder;

use crate::error::{ModelError, Result};

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenType {
    fn from_i64(v: i64) -> Self {
        match v {
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Normal,
        }
    }
}

enum Encoder {
    Bpe(Box<bpe::BpeEncoder>),
    Spm(Box<spm::SpmEncoder>),
}

/// Texts that llama.cpp also treats as end of generation when they are control tokens.
const EOG_TEXTS: &[&str] = &["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>", "<|eom_id|>"];

pub struct Tokenizer {
    model: String,
    pre: Option<String>,
    encoder: Encoder,
    texts: Vec<String>,
    types: Vec<TokenType>,
    /// Raw bytes each id decodes to (control tokens decode to nothing).
    pieces: Vec<Vec<u8>>,
    /// Tokens matched in text before encoding, longest first: (text, id, is_control).
    specials: Vec<(String, u32, bool)>,
    /// Which bytes can start a special token, to skip the search elsewhere.
    special_first: [bool; 256],
    /// See [`Tokenizer::max_piece_len`].
    max_piece_len: usize,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    eog: Vec<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
}

fn bad(msg: impl Into<String>) -> ModelError {
    ModelError::Tokenizer(msg.into())
}

fn strings(md: &impl Metadata, key: &str) -> Result<Vec<String>> {
    let arr = md.array_of(key)?.ok_or_else(|| bad(format!("the model file has no {key}")))?;
    arr.iter().enumerate().map(|(i, v)| v.as_str().map(str::to_string).ok_or_else(|| bad(format!("{key}[{i}] is not a string")))).collect()
}

impl Tokenizer {
    pub fn from_metadata(md: &impl Metadata) -> Result<Self> {
        let model = md.str_of("tokenizer.ggml.model")?.ok_or_else(|| bad("the model file has no tokenizer.ggml.model"))?.to_string();
        let pre = md.str_of("tokenizer.ggml.pre")?.map(str::to_string);
        let texts = strings(md, "tokenizer.ggml.tokens")?;
        let n = texts.len();
        if n == 0 {
            return Err(bad("tokenizer.ggml.tokens is empty"));
        }
        let types: Vec<TokenType> = match md.array_of("tokenizer.ggml.token_type")? {
            Some(a) if a.len() == n => a.iter().map(|v| TokenType::from_i64(v.as_i64().unwrap_or(1))).collect(),
            Some(a) => return Err(bad(format!("token_type has {} entries for {n} tokens", a.len()))),
            None => vec![TokenType::Normal; n],
        };
        let id_key = |key: &str| -> Result<Option<u32>> {
            match md.u64_of(key)? {
                Some(v) if (v as usize) < n => Ok(Some(v as u32)),
                Some(v) => Err(bad(format!("{key} = {v} is outside the vocabulary of {n}"))),
                None => Ok(None),
            }
        };
        let bos = id_key("tokenizer.ggml.bos_token_id")?;
        let eos = id_key("tokenizer.ggml.eos_token_id")?;
        let mut eog: Vec<u32> = [eos, id_key("tokenizer.ggml.eot_token_id")?, id_key("tokenizer.ggml.eom_token_id")?].into_iter().flatten().collect();
        for (i, t) in texts.iter().enumerate() {
            if types[i] == TokenType::Control && EOG_TEXTS.contains(&t.as_str()) && !eog.contains(&(i as u32)) {
                eog.push(i as u32);
            }
        }

        let (encoder, add_bos_default) = match model.as_str() {
            "gpt2" => {
                let merges = strings(md, "tokenizer.ggml.merges")?;
                (Encoder::Bpe(Box::new(bpe::BpeEncoder::new(&texts, &merges, pre.as_deref())?)), false)
            }
            "llama" => {
                let scores: Vec<f32> = match md.array_of("tokenizer.ggml.scores")? {
                    Some(a) if a.len() == n => a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect(),
                    Some(a) => return Err(bad(format!("scores has {} entries for {n} tokens", a.len()))),
                    None => vec![0.0; n],
                };
                let add_space_prefix = md.bool_of("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
                (Encoder::Spm(Box::new(spm::SpmEncoder::new(&texts, &types, scores, add_space_prefix))), true)
            }
            other => return Err(bad(format!("tokenizer model {other:?} is not supported (gpt2 and llama are)"))),
        };
        let add_bos = md.bool_of("tokenizer.ggml.add_bos_token")?.unwrap_or(add_bos_default);
        let add_eos = md.bool_of("tokenizer.ggml.add_eos_token")?.unwrap_or(false);

        let pieces: Vec<Vec<u8>> = texts
            .iter()
            .zip(&types)
            .map(|(t, ty)| match (&encoder, ty) {
                (_, TokenType::Control | TokenType::Unused) => Vec::new(),
                (_, TokenType::UserDefined) => t.as_bytes().to_vec(),
                (Encoder::Bpe(_), _) => bpe::decode_byte_level(t),
                (Encoder::Spm(_), ty) => spm::piece_bytes(t, *ty),
            })
            .collect();
        let mut specials: Vec<(String, u32, bool)> = texts
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (t, ty))| !t.is_empty() && matches!(ty, TokenType::Control | TokenType::UserDefined))
            .map(|(i, (t, ty))| (t.clone(), i as u32, *ty == TokenType::Control))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let mut special_first = [false; 256];
        for (s, _, _) in &specials {
            special_first[s.as_bytes()[0] as usize] = true;
        }

        // A token can cover more input than its piece: a control token parsed from text decodes
        // to nothing, and SentencePiece matches a literal `▁` in the input (3 bytes) where its
        // piece has a space. Its text bounds what it covers in both cases.
        let max_piece_len = texts
            .iter()
            .zip(&types)
            .zip(&pieces)
            .map(|((t, ty), p)| {
                let whole_text = matches!(encoder, Encoder::Spm(_)) || matches!(ty, TokenType::Control | TokenType::UserDefined | TokenType::Unused);
                if whole_text { p.len().max(t.len()) } else { p.len() }
            })
            .max()
            .unwrap_or(0)
            .max(1);

        Ok(Self { model, pre, encoder, texts, types, pieces, specials, special_first, max_piece_len, bos, eos, eog, add_bos, add_eos })
    }

    pub fn n_vocab(&self) -> usize {
        self.texts.len()
    }

    /// `gpt2` or `llama`, as the file names it.
    pub fn model_name(&self) -> &str {
        &self.model
    }

    pub fn pre_name(&self) -> Option<&str> {
        self.pre.as_deref()
    }

    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize).map(String::as_str)
    }

    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    /// The most bytes of text one token can stand for, at least 1: the longest piece any token
    /// decodes to, or the longest text of a token that can stand for more input than its
    /// piece (a control token parsed from text decodes to nothing; SentencePiece matches a
    /// literal `▁` where its piece has a space). Computed once, at load.
    ///
    /// It bounds a prompt's token count from its byte length without tokenizing it: text of
    /// `N` bytes encodes to at least `ceil(N / max_piece_len())` tokens. That holds whenever
    /// `decode(encode(text))` reproduces the text (each token then stands for exactly its
    /// piece), which byte-level BPE and SentencePiece with byte fallback do, and in the two
    /// cases above where it does not.
    pub fn max_piece_len(&self) -> usize {
        self.max_piece_len
    }

    /// Token ids for `text`. `add_special` adds BOS/EOS as the model's metadata asks;
    /// `parse_special` lets control-token text (e.g. `<|im_start|>`) become those tokens.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        self.encode_parts(text, add_special, parse_special, &[])
    }

    /// Token ids for `text` with control-token text parsed into control tokens everywhere
    /// but in the `literal` byte ranges: a control token matches only where its whole text
    /// lies outside every range, so text inside them tokenizes as with special-token parsing
    /// off (user-defined tokens still match, as they always do). Tokenizing the whole text at
    /// once, instead of the pieces apart, keeps every other token as [`encode`](Self::encode)
    /// with `parse_special` gives it.
    pub fn encode_with_literal_spans(&self, text: &str, add_special: bool, literal: &[Range<usize>]) -> Result<Vec<u32>> {
        self.encode_parts(text, add_special, true, literal)
    }

    /// The id of the control or user-defined token whose text is exactly `text`: what
    /// special-token parsing turns that text into. `None` means the text is tokenized as
    /// plain text.
    pub fn special_token_id(&self, text: &str) -> Option<u32> {
        self.specials.iter().find(|(s, _, _)| s == text).map(|&(_, id, _)| id)
    }

    /// Byte ranges of `text` holding control-token text (overlapping or adjacent occurrences
    /// merged, in order): what parsing special tokens could turn into control tokens.
    pub fn control_text_spans(&self, text: &str) -> Vec<Range<usize>> {
        let bytes = text.as_bytes();
        let mut spans: Vec<Range<usize>> = Vec::new();
        for i in 0..bytes.len() {
            if !self.special_first[bytes[i] as usize] {
                continue;
            }
            // Longest first, so the first control text found is the longest here.
            let Some((s, _, _)) = self.specials.iter().find(|(s, _, control)| *control && bytes[i..].starts_with(s.as_bytes())) else {
                continue;
            };
            let end = i + s.len();
            match spans.last_mut() {
                Some(last) if last.end >= i => last.end = last.end.max(end),
                _ => spans.push(i..end),
            }
        }
        spans
    }

    fn encode_parts(&self, text: &str, add_special: bool, parse_special: bool, literal: &[Range<usize>]) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        let mut prev_special = true;
        for frag in self.split_specials(text, parse_special, literal) {
            match frag {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(t) => {
                    match &self.encoder {
                        Encoder::Bpe(e) => e.encode(t, &mut out)?,
                        Encoder::Spm(e) => e.encode(t, prev_special, &mut out),
                    }
                    prev_special = false;
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        Ok(out)
    }

    fn split_specials<'t>(&self, text: &'t str, parse_control: bool, literal: &[Range<usize>]) -> Vec<Fragment<'t>> {
        let in_literal = |at: Range<usize>| literal.iter().any(|r| r.start.max(at.start) < r.end.min(at.end));
        let mut frags = Vec::new();
        let mut start = 0;
        let mut i = 0;
        let bytes = text.as_bytes();
        'outer: while i < bytes.len() {
            if self.special_first[bytes[i] as usize] {
                for (s, id, control) in &self.specials {
                    if (parse_control || !control) && text[i..].starts_with(s.as_str()) && !(*control && in_literal(i..i + s.len())) {
                        if start < i {
                            frags.push(Fragment::Text(&text[start..i]));
                        }
                        frags.push(Fragment::Token(*id));
                        i += s.len();
                        start = i;
                        continue 'outer;
                    }
                }
            }
            i += 1;
            while i < bytes.len() && !text.is_char_boundary(i) {
                i += 1;
            }
        }
        if start < text.len() {
            frags.push(Fragment::Text(&text[start..]));
        }
        frags
    }

    /// The raw bytes token `id` stands for (empty for control tokens).
    pub fn piece(&self, id: u32) -> &[u8] {
        self.pieces.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// Decodes ids to text, replacing invalid UTF-8 (which a well-formed sequence never has).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.piece(id).iter().copied()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&id| id as usize >= self.texts.len()) {
            Some(&id) => Err(ModelError::BadToken { id, n_vocab: self.texts.len() }),
            None => Ok(()),
        }
    }
}

enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

/// The `tokenizer.chat_template` string, if the file has one.
pub fn chat_template(md: &impl Metadata) -> Result<Option<String>> {
    Ok(md.str_of("tokenizer.chat_template")?.map(str::to_string))
}

/// Maps token texts to ids (later duplicates win, as in llama.cpp).
fn text_index(texts: &[String]) -> HashMap<String, u32> {
    texts.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect()
}
