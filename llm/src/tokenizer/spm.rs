//! A SentencePiece vocabulary as llama.cpp stores it in a GGUF file (`tokenizer.ggml.model`
//! "llama": Llama 2, Mistral 7B): pieces with scores and token types, encoded as llama.cpp's
//! tokenizer encodes them. The text gets a leading space (when the file says so), spaces become
//! `▁`, the text is split into characters, and the adjacent pair whose concatenation is the
//! highest-scoring piece is merged (leftmost on ties) until no pair is a piece; a character that
//! is no piece becomes its UTF-8 bytes' `<0xNN>` pieces.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use kiln_runtime::{Error, Result};

/// llama.cpp's token types (`tokenizer.ggml.token_type`); user-defined (4) and unused (5) ones
/// are pieces like normal ones.
pub const NORMAL: i32 = 1;
pub const UNKNOWN: i32 = 2;
pub const CONTROL: i32 = 3;
pub const BYTE: i32 = 6;

const SPACE: char = '\u{2581}';

pub struct Spm {
    tokens: Vec<String>,
    types: Vec<i32>,
    scores: Vec<f32>,
    /// Every piece merging may produce (not control, unknown or byte tokens), by text.
    pieces: HashMap<String, u32>,
    /// The `<0xNN>` token of each byte.
    bytes: [Option<u32>; 256],
    unk: Option<u32>,
    add_space_prefix: bool,
}

impl Spm {
    /// `tokens`, `scores` and `types` have one entry per id.
    pub fn new(
        tokens: Vec<String>,
        scores: Vec<f32>,
        types: Vec<i32>,
        unk: Option<u32>,
        add_space_prefix: bool,
    ) -> std::result::Result<Spm, String> {
        if scores.len() != tokens.len() || types.len() != tokens.len() {
            return Err(format!(
                "{} tokens but {} scores and {} token types",
                tokens.len(),
                scores.len(),
                types.len()
            ));
        }
        let mut pieces = HashMap::with_capacity(tokens.len());
        let mut bytes = [None; 256];
        for (id, (text, &ty)) in tokens.iter().zip(&types).enumerate() {
            match ty {
                BYTE => match byte_piece(text) {
                    Some(b) => bytes[b as usize] = Some(id as u32),
                    None => return Err(format!("byte token {id} is `{text}`, not <0xNN>")),
                },
                CONTROL | UNKNOWN => {}
                _ => {
                    // The first id of a text wins, as llama.cpp's map keeps the last: no real
                    // vocabulary repeats a piece.
                    pieces.entry(text.clone()).or_insert(id as u32);
                }
            }
        }
        Ok(Spm {
            tokens,
            types,
            scores,
            pieces,
            bytes,
            unk,
            add_space_prefix,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    pub fn token_type(&self, id: u32) -> Option<i32> {
        self.types.get(id as usize).copied()
    }

    /// Plain text to ids, as llama.cpp tokenizes text with no special tokens parsed.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut s = String::with_capacity(text.len() + 3);
        if self.add_space_prefix {
            s.push(SPACE);
        }
        for c in text.chars() {
            s.push(if c == ' ' { SPACE } else { c });
        }
        // Symbols: byte ranges of `s`, chained; a merged-away symbol has length 0.
        let mut syms: Vec<Symbol> = Vec::new();
        for (i, (at, c)) in s.char_indices().enumerate() {
            syms.push(Symbol {
                start: at,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: None,
            });
            if i > 0 {
                syms[i - 1].next = Some(i);
            }
        }
        let mut queue = BinaryHeap::new();
        let push = |queue: &mut BinaryHeap<Bigram>, syms: &[Symbol], left: usize, right: usize| {
            let (l, r) = (&syms[left], &syms[right]);
            let text = &s[l.start..r.start + r.len];
            if let Some(&id) = self.pieces.get(text) {
                queue.push(Bigram {
                    score: self.scores[id as usize],
                    left,
                    right,
                    size: text.len(),
                });
            }
        };
        for i in 1..syms.len() {
            push(&mut queue, &syms, i - 1, i);
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (&syms[b.left], &syms[b.right]);
            // A pair one of whose symbols has merged since is stale.
            if l.len == 0 || r.len == 0 || l.len + r.len != b.size || l.next != Some(b.right) {
                continue;
            }
            let next = r.next;
            syms[b.left].len += syms[b.right].len;
            syms[b.right].len = 0;
            syms[b.left].next = next;
            if let Some(n) = next {
                syms[n].prev = Some(b.left);
            }
            if let Some(p) = syms[b.left].prev {
                push(&mut queue, &syms, p, b.left);
            }
            if let Some(n) = next {
                push(&mut queue, &syms, b.left, n);
            }
        }
        let mut ids = Vec::new();
        let mut at = Some(0);
        while let Some(i) = at {
            let sym = &syms[i];
            let text = &s[sym.start..sym.start + sym.len];
            match self.pieces.get(text) {
                Some(&id) => ids.push(id),
                None => {
                    for &b in text.as_bytes() {
                        let id = self.bytes[b as usize]
                            .or_else(|| {
                                std::str::from_utf8(&[b])
                                    .ok()
                                    .and_then(|c| self.pieces.get(c).copied())
                            })
                            .or(self.unk);
                        ids.extend(id);
                    }
                }
            }
            at = sym.next;
        }
        ids
    }

    /// The bytes an id stands for: `▁` as a space, `<0xNN>` as its byte; control and unknown
    /// tokens as their names.
    pub fn piece_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let text = self.tokens.get(id as usize)?;
        Some(match self.types[id as usize] {
            BYTE => vec![byte_piece(text)?],
            CONTROL | UNKNOWN => text.as_bytes().to_vec(),
            _ => text.replace(SPACE, " ").into_bytes(),
        })
    }

    /// Ids to text as Hugging Face's SentencePiece decoder gives it: pieces joined, the one space
    /// the encoder put in front of the text removed; control and unknown tokens skipped when
    /// `skip_special`. Incomplete UTF-8 comes out as U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let mut out = Vec::new();
        for &id in ids {
            let ty = self.token_type(id).ok_or_else(|| {
                Error::shape(
                    "sentencepiece decode",
                    format!("id {id} is outside the vocabulary of {}", self.tokens.len()),
                )
            })?;
            if skip_special && matches!(ty, CONTROL | UNKNOWN) {
                continue;
            }
            out.extend(self.piece_bytes(id).unwrap_or_default());
        }
        if self.add_space_prefix && out.first() == Some(&b' ') {
            out.remove(0);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// `<0xNN>` to its byte.
fn byte_piece(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
}

struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge: the best has the highest score, then the leftmost position.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

#[cfg(test)]
mod tests {
    use super::*;

    /// <unk> <s> </s>, the bytes, then pieces with their scores.
    fn vocab(pieces: &[(&str, f32)]) -> Spm {
        let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
        let mut types = vec![UNKNOWN, CONTROL, CONTROL];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(BYTE);
        }
        let mut scores = vec![0.0; tokens.len()];
        for (p, s) in pieces {
            tokens.push(p.to_string());
            types.push(NORMAL);
            scores.push(*s);
        }
        Spm::new(tokens, scores, types, Some(0), true).unwrap()
    }

    #[test]
    fn merges_follow_the_scores_and_fall_back_to_bytes() {
        let spm = vocab(&[
            ("\u{2581}", -1.0),
            ("a", -2.0),
            ("b", -3.0),
            ("ab", -4.0),
            ("\u{2581}a", -5.0),
            ("\u{2581}ab", -6.0),
        ]);
        let id = |t: &str| spm.tokens().iter().position(|x| x == t).unwrap() as u32;
        // "▁ab": ab (-4) merges before ▁a (-5), then ▁ + ab = ▁ab.
        assert_eq!(spm.encode("ab"), [id("\u{2581}ab")]);
        // "é" is no piece: its two UTF-8 bytes.
        assert_eq!(spm.encode("é"), [id("\u{2581}"), 3 + 0xC3, 3 + 0xA9]);
        assert_eq!(
            spm.encode("b a"),
            [id("\u{2581}"), id("b"), id("\u{2581}a")]
        );
        assert_eq!(spm.encode(""), Vec::<u32>::new());
        assert_eq!(
            spm.decode(&spm.encode("ab ba é"), false).unwrap(),
            "ab ba é"
        );
        assert_eq!(spm.decode(&[1, id("\u{2581}a")], false).unwrap(), "<s> a");
        assert_eq!(spm.decode(&[1, id("\u{2581}a")], true).unwrap(), "a");
    }
}
