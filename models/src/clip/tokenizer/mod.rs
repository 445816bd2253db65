//! CLIP's byte-level BPE tokenizer, giving the ids of transformers' `CLIPTokenizer` (the one
//! diffusers uses for SD 1.x/2.x): NFC, whitespace runs collapsed to one space, lower-case, CLIP's
//! word pattern, byte-level BPE with a `</w>` end-of-word suffix.
//!
//! Like transformers' tokenizer (and unlike OpenAI's/open_clip's Python one) it does not run ftfy
//! or unescape HTML entities: `&amp;` stays three pieces. The vocabulary comes from a diffusers
//! `tokenizer/` folder when there is one, else from OpenAI's merges embedded in this crate.

mod folder;
mod pipeline;
mod vocab;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use vocab::CLIP_MERGES;

/// Sequence length of every CLIP text encoder in SD 1.x/2.x/XL.
pub const CLIP_MAX_LEN: usize = 77;
/// Vocabulary size of OpenAI's CLIP BPE (SD1's CLIP-L and SD2's OpenCLIP-H share it).
pub const CLIP_VOCAB_SIZE: usize = 49_408;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {reason}")]
    Format { file: String, reason: String },
    #[error("cannot build the CLIP tokenizer: {0}")]
    Build(String),
    #[error("cannot tokenize: {0}")]
    Encode(String),
    #[error("cannot write {}: {reason}", path.display())]
    Write { path: PathBuf, reason: String },
    #[error("pad id {0} is not in the vocabulary")]
    PadId(u32),
    #[error("max_len {0} leaves no room for the start and end tokens (needs at least 2)")]
    MaxLen(usize),
}

impl TokenizerError {
    pub(crate) fn format(file: &str, reason: impl Into<String>) -> Self {
        Self::Format {
            file: file.to_string(),
            reason: reason.into(),
        }
    }
}

/// What fills a padded sequence after the end token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// SD 1.x (OpenAI CLIP in transformers): pad with the end token, 49407.
    Eos,
    /// Pad with this id; SD 2.x pads with "!" = id 0, see [`Padding::OPENCLIP`].
    Token(u32),
}

impl Padding {
    /// SD 2.x's tokenizer folder sets `pad_token: "!"`, which is id 0.
    pub const OPENCLIP: Padding = Padding::Token(0);
}

/// A CLIP tokenizer configured with a pad token, as a transformers tokenizer folder is.
#[derive(Clone)]
pub struct ClipTokenizer {
    /// The pipeline with only BOS/EOS registered as special tokens.
    base: tokenizers::Tokenizer,
    /// `base` plus the pad token as a special token when it is not EOS (see `with_padding`).
    inner: tokenizers::Tokenizer,
    bos: u32,
    eos: u32,
    padding: Padding,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("padding", &self.padding)
            .finish()
    }
}

impl ClipTokenizer {
    /// OpenAI's CLIP vocabulary embedded in this crate, padding with EOS (SD 1.x).
    pub fn builtin() -> Result<Self, TokenizerError> {
        let (vocab, merges) = vocab::builtin()?;
        let tk = pipeline::clip_pipeline(vocab, merges, vocab::BUILTIN_NAME)?;
        Self::wrap(tk, vocab::BUILTIN_NAME)
    }

    /// The embedded vocabulary set up as SD 2.x's tokenizer folder: pad token "!" (id 0).
    pub fn builtin_openclip() -> Result<Self, TokenizerError> {
        Self::builtin()?.with_padding(Padding::OPENCLIP)
    }

    pub(crate) fn wrap(base: tokenizers::Tokenizer, name: &str) -> Result<Self, TokenizerError> {
        let id = |t: &str| {
            base.token_to_id(t)
                .ok_or_else(|| TokenizerError::format(name, format!("vocabulary lacks {t}")))
        };
        Ok(Self {
            bos: id(vocab::BOS_TOKEN)?,
            eos: id(vocab::EOS_TOKEN)?,
            padding: Padding::Eos,
            inner: base.clone(),
            base,
        })
    }

    /// Sets the pad token. transformers registers a pad token as a special token, so with "!"
    /// (SD 2.x) every "!" in a prompt becomes the standalone id 0 instead of joining BPE pieces
    /// ("wow!!!" -> wow, 0, 0, 0); this reproduces that.
    pub fn with_padding(mut self, padding: Padding) -> Result<Self, TokenizerError> {
        self.inner = self.base.clone();
        if let Padding::Token(id) = padding {
            if id != self.eos {
                let token = self.base.id_to_token(id).ok_or(TokenizerError::PadId(id))?;
                pipeline::add_special(&mut self.inner, &[token.as_str()])?;
            }
        }
        self.padding = padding;
        Ok(self)
    }

    /// The padding this tokenizer was configured with.
    pub fn padding(&self) -> Padding {
        self.padding
    }

    pub fn bos_id(&self) -> u32 {
        self.bos
    }

    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    /// The id that fills sequences after the end token.
    pub fn pad_id(&self) -> u32 {
        match self.padding {
            Padding::Eos => self.eos,
            Padding::Token(id) => id,
        }
    }

    /// Id of a vocabulary entry, e.g. `",</w>"` (267), A1111's chunk-split marker.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text` without start/end tokens, untruncated.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// `[BOS] + first max_len-2 ids + [EOS] + padding` to exactly `max_len` ids: what transformers
    /// returns for `padding="max_length", truncation=True`, and what diffusers feeds CLIP.
    pub fn encode_padded(&self, text: &str, max_len: usize) -> Result<Vec<u32>, TokenizerError> {
        if max_len < 2 {
            return Err(TokenizerError::MaxLen(max_len));
        }
        let ids = self.encode(text)?;
        let body = ids.len().min(max_len - 2);
        let mut out = Vec::with_capacity(max_len);
        out.push(self.bos);
        out.extend_from_slice(&ids[..body]);
        out.push(self.eos);
        out.resize(max_len, self.pad_id());
        Ok(out)
    }
}
