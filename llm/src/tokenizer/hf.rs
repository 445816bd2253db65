//! `tokenizer.json` through the `tokenizers` crate, set so that control token strings inside text
//! are encoded as text (transformers would turn a user's "[INST]" into the control id).

use std::path::Path;

use kiln_runtime::{Error, Result};
use tokenizers::DecoderWrapper;

pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    piece_style: PieceStyle,
    /// Added tokens (control tokens) by id.
    added: Vec<(u32, String)>,
}

impl HfTokenizer {
    pub fn load(path: &Path) -> Result<HfTokenizer> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::load(path, format!("not a tokenizer.json: {e}")))?;
        Ok(HfTokenizer::new(inner))
    }

    /// A tokenizer.json given as text (one built from a GGUF file's vocabulary); `path` is
    /// named in errors.
    pub fn from_json(path: &Path, json: &str) -> Result<HfTokenizer> {
        let inner: tokenizers::Tokenizer = json
            .parse()
            .map_err(|e| Error::load(path, format!("cannot build its tokenizer: {e}")))?;
        Ok(HfTokenizer::new(inner))
    }

    fn new(mut inner: tokenizers::Tokenizer) -> HfTokenizer {
        inner.set_encode_special_tokens(true);
        let mut added: Vec<(u32, String)> = inner
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, t)| (id, t.content))
            .collect();
        added.sort();
        let piece_style = piece_style(inner.get_decoder());
        HfTokenizer {
            inner,
            piece_style,
            added,
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn added_tokens(&self) -> &[(u32, String)] {
        &self.added
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The bytes an ordinary token decodes to, read from its vocabulary string: byte-level BPE
    /// (GPT-2's byte-to-character table) or SentencePiece style (`▁` for space, `<0xNN>` bytes).
    /// Empty for an id the vocabulary skips. Decoding the id alone would turn a token holding part of a character into U+FFFD.
    pub fn token_bytes(&self, id: u32) -> Result<Vec<u8>> {
        // Ids the vocabulary skips have no bytes (a matcher never allows them).
        let Some(piece) = self.inner.id_to_token(id) else {
            return Ok(Vec::new());
        };
        match &self.piece_style {
            PieceStyle::ByteLevel(table) => piece
                .chars()
                .map(|c| {
                    table.get(c as usize).copied().flatten().ok_or_else(|| {
                        Error::shape(
                            "tokenizer token_bytes",
                            format!("token {id} ({piece:?}) has a character outside the byte-level table"),
                        )
                    })
                })
                .collect(),
            PieceStyle::SentencePiece => Ok(sentencepiece_bytes(&piece)),
        }
    }

    /// Plain text to ids, without the post-processor's BOS/EOS (templates write those).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::shape("tokenizer encode", e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| Error::shape("tokenizer decode", e.to_string()))
    }
}

/// How vocabulary strings spell bytes (see `token_bytes`).
enum PieceStyle {
    /// GPT-2's byte-to-character table, inverted.
    ByteLevel(Vec<Option<u8>>),
    SentencePiece,
}

fn piece_style(decoder: Option<&DecoderWrapper>) -> PieceStyle {
    match decoder {
        Some(DecoderWrapper::ByteLevel(_)) => PieceStyle::ByteLevel(byte_level_table()),
        Some(DecoderWrapper::Sequence(s))
            if s.get_decoders()
                .iter()
                .any(|d| matches!(d, DecoderWrapper::ByteLevel(_))) =>
        {
            PieceStyle::ByteLevel(byte_level_table())
        }
        _ => PieceStyle::SentencePiece,
    }
}

/// GPT-2's table, by character: printable Latin-1 bytes stand for themselves, the other bytes
/// in order are written as U+0100, U+0101, ...
pub(super) fn byte_level_table() -> Vec<Option<u8>> {
    let self_mapped = |b: u8| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    let mut table = vec![None; 0x144];
    let mut next = 0x100;
    for b in 0..=255u8 {
        if self_mapped(b) {
            table[b as usize] = Some(b);
        } else {
            table[next] = Some(b);
            next += 1;
        }
    }
    table
}

fn sentencepiece_bytes(piece: &str) -> Vec<u8> {
    let hex = piece
        .strip_prefix("<0x")
        .and_then(|h| h.strip_suffix('>'))
        .filter(|h| h.len() == 2)
        .and_then(|h| u8::from_str_radix(h, 16).ok());
    match hex {
        Some(b) => vec![b],
        None => piece.replace('\u{2581}', " ").into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_characters_map_back_to_bytes() {
        let table = byte_level_table();
        let byte = |c: char| table.get(c as usize).copied().flatten();
        assert_eq!(byte('a'), Some(b'a'));
        assert_eq!(byte('\u{120}'), Some(b' ')); // Ġ
        assert_eq!(byte('\u{10A}'), Some(b'\n')); // Ċ
        assert_eq!(byte('\u{100}'), Some(0)); // Ā
        assert_eq!(byte(' '), None); // spaces are never written as themselves
        assert_eq!(table.iter().flatten().count(), 256);
    }

    #[test]
    fn sentencepiece_pieces_give_their_bytes() {
        assert_eq!(sentencepiece_bytes("\u{2581}hello"), b" hello");
        assert_eq!(sentencepiece_bytes("<0x0A>"), b"\n");
        assert_eq!(sentencepiece_bytes("<0xE2>"), [0xE2]);
        assert_eq!(sentencepiece_bytes("<0x0A"), b"<0x0A");
    }
}
