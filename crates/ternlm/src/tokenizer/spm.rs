//! SentencePiece-style tokenization (GGUF `llama` tokenizer model) as llama.cpp performs it:
//! spaces become `▁` (with one prefixed to text that starts the input or follows a special
//! token, when `add_space_prefix`), then adjacent symbols merge greedily by the score of the
//! merged piece (best score first, leftmost on ties); pieces outside the vocabulary fall back
//! to `<0xXX>` byte tokens.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::{TokenType, text_index};

pub(super) struct SpmEncoder {
    index: HashMap<String, u32>,
    scores: Vec<f32>,
    byte_ids: [Option<u32>; 256],
    unk: Option<u32>,
    add_space_prefix: bool,
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bigram {
    /// The heap pops the highest score first, then the leftmost pair.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score.total_cmp(&o.score).then(o.left.cmp(&self.left))
    }
}

/// `<0xAB>` → 0xAB.
fn byte_token_value(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// The raw bytes an SPM token stands for.
pub(super) fn piece_bytes(text: &str, ty: TokenType) -> Vec<u8> {
    match ty {
        TokenType::Byte => byte_token_value(text).map_or_else(|| text.as_bytes().to_vec(), |b| vec![b]),
        TokenType::Unknown => "\u{2585}".as_bytes().to_vec(),
        _ => text.replace('\u{2581}', " ").into_bytes(),
    }
}

impl SpmEncoder {
    pub(super) fn new(texts: &[String], types: &[TokenType], scores: Vec<f32>, add_space_prefix: bool) -> Self {
        let mut byte_ids = [None; 256];
        let mut unk = None;
        for (i, (t, ty)) in texts.iter().zip(types).enumerate() {
            match ty {
                TokenType::Byte => {
                    if let Some(b) = byte_token_value(t) {
                        byte_ids[b as usize] = Some(i as u32);
                    }
                }
                TokenType::Unknown if unk.is_none() => unk = Some(i as u32),
                _ => {}
            }
        }
        Self { index: text_index(texts), scores, byte_ids, unk, add_space_prefix }
    }

    pub(super) fn encode(&self, text: &str, prev_special: bool, out: &mut Vec<u32>) {
        let mut s = String::with_capacity(text.len() + 3);
        if self.add_space_prefix && prev_special {
            s.push(' ');
        }
        s.push_str(text);
        let s = s.replace(' ', "\u{2581}");
        if s.is_empty() {
            return;
        }

        let mut syms: Vec<Symbol> = Vec::new();
        for (start, c) in s.char_indices() {
            let i = syms.len();
            syms.push(Symbol { start, len: c.len_utf8(), prev: i.checked_sub(1), next: None });
            if i > 0 {
                syms[i - 1].next = Some(i);
            }
        }
        let mut heap = BinaryHeap::new();
        let add = |heap: &mut BinaryHeap<Bigram>, syms: &[Symbol], l: Option<usize>, r: Option<usize>| {
            let (Some(l), Some(r)) = (l, r) else { return };
            let text = &s[syms[l].start..syms[r].start + syms[r].len];
            if let Some(&id) = self.index.get(text) {
                heap.push(Bigram { score: self.scores[id as usize], left: l, right: r, size: text.len() });
            }
        };
        for i in 1..syms.len() {
            add(&mut heap, &syms, Some(i - 1), Some(i));
        }
        while let Some(b) = heap.pop() {
            let (l, r) = (b.left, b.right);
            if syms[l].len == 0 || syms[r].len == 0 || syms[l].len + syms[r].len != b.size {
                continue; // stale: one side has merged since
            }
            syms[l].len += syms[r].len;
            syms[r].len = 0;
            syms[l].next = syms[r].next;
            if let Some(n) = syms[r].next {
                syms[n].prev = Some(l);
            }
            add(&mut heap, &syms, syms[l].prev, Some(l));
            add(&mut heap, &syms, Some(l), syms[l].next);
        }

        let mut cur = Some(0);
        while let Some(i) = cur {
            let sym = syms[i];
            let piece = &s[sym.start..sym.start + sym.len];
            match self.index.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for &b in piece.as_bytes() {
                        out.extend(self.byte_ids[b as usize].or(self.unk));
                    }
                }
            }
            cur = sym.next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> (Vec<String>, Vec<TokenType>, Vec<f32>) {
        let mut texts = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
        let mut types = vec![TokenType::Unknown, TokenType::Control, TokenType::Control];
        let mut scores = vec![0.0, 0.0, 0.0];
        for b in 0..256 {
            texts.push(format!("<0x{b:02X}>"));
            types.push(TokenType::Byte);
            scores.push(0.0);
        }
        for (t, s) in [("▁", -1.0), ("h", -2.0), ("e", -2.0), ("l", -2.0), ("o", -2.0), ("he", -3.0), ("ll", -1.5), ("llo", -4.0), ("▁he", -5.0), ("hello", -6.0), ("▁hello", -0.5)] {
            texts.push(t.into());
            types.push(TokenType::Normal);
            scores.push(s);
        }
        (texts, types, scores)
    }

    fn id(texts: &[String], t: &str) -> u32 {
        texts.iter().position(|x| x == t).unwrap() as u32
    }

    #[test]
    fn merges_follow_scores_and_reach_the_whole_word() {
        let (texts, types, scores) = vocab();
        let enc = SpmEncoder::new(&texts, &types, scores, true);
        let mut out = Vec::new();
        enc.encode("hello", true, &mut out);
        assert_eq!(out, vec![id(&texts, "▁hello")]);
    }

    #[test]
    fn unknown_characters_fall_back_to_bytes() {
        let (texts, types, scores) = vocab();
        let enc = SpmEncoder::new(&texts, &types, scores, false);
        let mut out = Vec::new();
        enc.encode("hé", false, &mut out);
        assert_eq!(out, vec![id(&texts, "h"), id(&texts, "<0xC3>"), id(&texts, "<0xA9>")]);
    }

    #[test]
    fn pieces_decode_spaces_and_bytes() {
        assert_eq!(piece_bytes("▁hi", TokenType::Normal), b" hi");
        assert_eq!(piece_bytes("<0x0A>", TokenType::Byte), b"\n");
    }
}
