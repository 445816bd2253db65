//! The model's tokenizer: Mistral's `tekken.json` read directly, a Hugging Face
//! `tokenizer.json`, or the vocabulary a llama.cpp GGUF file carries (`gguf.rs`: Tekken, Llama 3
//! byte-level BPE or SentencePiece, encoded as llama.cpp encodes them). Text given by users is always encoded as plain text: a user who types
//! "[INST]" gets the ids of those characters, never the control id (as mistral-common does).
//! Only a chat template's own output names control tokens (`encode_rendered`).

mod gguf;
mod gguf_vocab;
mod hf;
mod spm;
mod spm_model;
mod stream;
mod tekken;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use kiln_runtime::{Error, Result};
use serde_json::Value;

use crate::constrain::{ConstraintError, TokenVocabulary};

pub use gguf_vocab::folder_vocab_metadata;
pub use hf::HfTokenizer;
pub use spm::Spm;
pub use stream::StreamDecoder;
pub use tekken::Tekken;

/// Marks a control-token string inside message text so that `encode_rendered` keeps it text.
/// A Unicode noncharacter: never valid in interchanged text, kept as is by templates.
pub const ESCAPE: char = '\u{FDD0}';

enum Backend {
    Tekken(Box<Tekken>),
    Hf(Box<HfTokenizer>),
    Spm(Box<Spm>),
}

pub struct Tokenizer {
    backend: Backend,
    path: PathBuf,
    /// Control token strings and ids, longest first (for splitting rendered templates).
    controls: Vec<(String, u32)>,
    bos: Option<u32>,
    eos: Option<u32>,
    /// A prompt starts with BOS even when its Jinja template writes none (a GGUF file's
    /// `add_bos_token`, as llama.cpp tokenizes prompts); false for model folders, whose templates
    /// write it.
    add_bos: bool,
    /// The vocabulary as constrained decoding needs it, built on first use (a pass over every id).
    constraint_vocab: OnceLock<Arc<TokenVocabulary>>,
}

impl Tokenizer {
    /// The tokenizer of a model folder: `tekken.json` when present (what mistral-common reads),
    /// else `tokenizer.json` with BOS/EOS named by `tokenizer_config.json`.
    pub fn from_dir(dir: &Path) -> Result<Tokenizer> {
        let tekken = dir.join("tekken.json");
        if tekken.is_file() {
            return Tokenizer::from_file(&tekken);
        }
        let json = dir.join("tokenizer.json");
        if !json.is_file() {
            return Err(Error::load(
                dir,
                "no tokenizer: expected tekken.json or tokenizer.json in the model folder",
            ));
        }
        let mut tokenizer = Tokenizer::from_file(&json)?;
        let config = dir.join("tokenizer_config.json");
        if config.is_file() {
            let value = read_json(&config)?;
            let named = |key: &str| -> Result<Option<u32>> {
                let Some(name) = value.get(key).and_then(token_name) else {
                    return Ok(None);
                };
                tokenizer.token_id(name).map(Some).ok_or_else(|| {
                    Error::load(&config, format!("{key} `{name}` is not in tokenizer.json"))
                })
            };
            let (bos, eos) = (named("bos_token")?, named("eos_token")?);
            tokenizer.bos = bos.or(tokenizer.bos);
            tokenizer.eos = eos.or(tokenizer.eos);
        }
        Ok(tokenizer)
    }

    /// A `tekken.json` (by name or content) or a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let is_tekken = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains("tekken"));
        let (backend, controls) = if is_tekken {
            let t = Tekken::load(path)?;
            let controls = t
                .specials()
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.starts_with("<SPECIAL_"))
                .map(|(i, s)| (s.clone(), i as u32))
                .collect();
            (Backend::Tekken(Box::new(t)), controls)
        } else {
            let t = HfTokenizer::load(path)?;
            let controls = t
                .added_tokens()
                .iter()
                .map(|(id, s)| (s.clone(), *id))
                .collect();
            (Backend::Hf(Box::new(t)), controls)
        };
        let mut tokenizer = Tokenizer {
            backend,
            path: path.to_path_buf(),
            controls,
            bos: None,
            eos: None,
            add_bos: false,
            constraint_vocab: OnceLock::new(),
        };
        tokenizer.sort_controls();
        tokenizer.bos = tokenizer.token_id("<s>");
        tokenizer.eos = tokenizer.token_id("</s>");
        Ok(tokenizer)
    }

    /// Longest first, so `control_at` finds the longest match.
    fn sort_controls(&mut self) {
        self.controls
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a prompt starts with BOS even when its template writes none (see `add_bos`).
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// The tekken file's version ("v3", "v7"); None for tokenizer.json.
    pub fn tekken_version(&self) -> Option<&str> {
        match &self.backend {
            Backend::Tekken(t) => t.version(),
            Backend::Hf(_) | Backend::Spm(_) => None,
        }
    }

    pub fn vocab_size(&self) -> usize {
        match &self.backend {
            Backend::Tekken(t) => t.vocab_size(),
            Backend::Hf(t) => t.vocab_size(),
            Backend::Spm(t) => t.vocab_size(),
        }
    }

    /// Fails unless every id fits the model's embedding table.
    pub fn check_fits(&self, model_vocab: usize) -> Result<()> {
        if self.vocab_size() > model_vocab {
            return Err(Error::load(
                &self.path,
                format!(
                    "the tokenizer has {} ids but the model's vocab_size is {model_vocab}",
                    self.vocab_size()
                ),
            ));
        }
        Ok(())
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// The id of a control token by name (`[INST]`, `<s>`, ...).
    pub fn token_id(&self, name: &str) -> Option<u32> {
        match &self.backend {
            Backend::Tekken(_) => self.controls.iter().find(|c| c.0 == name).map(|c| c.1),
            Backend::Hf(t) => t.token_id(name),
            Backend::Spm(t) => t.tokens().iter().position(|t| t == name).map(|i| i as u32),
        }
    }

    /// The id of a control token the caller needs, or an error naming it and the file.
    pub fn require(&self, name: &str) -> Result<u32> {
        self.token_id(name)
            .ok_or_else(|| Error::load(&self.path, format!("the tokenizer has no `{name}` token")))
    }

    /// Every id's bytes, in id order, with whether the id is a control token (whose bytes are
    /// then its name). What a grammar matcher needs: the exact bytes each id adds to the text.
    pub fn token_pieces(&self) -> Result<Vec<(Vec<u8>, bool)>> {
        match &self.backend {
            Backend::Tekken(t) => Ok(t
                .specials()
                .iter()
                .map(|s| (s.as_bytes().to_vec(), true))
                .chain(t.ordinary_bytes().iter().map(|b| (b.clone(), false)))
                .collect()),
            Backend::Hf(t) => {
                let mut pieces = Vec::with_capacity(t.vocab_size());
                let controls: std::collections::HashMap<u32, &str> = self
                    .controls
                    .iter()
                    .map(|(s, id)| (*id, s.as_str()))
                    .collect();
                for id in 0..t.vocab_size() as u32 {
                    pieces.push(match controls.get(&id) {
                        Some(name) => (name.as_bytes().to_vec(), true),
                        None => (t.token_bytes(id)?, false),
                    });
                }
                Ok(pieces)
            }
            Backend::Spm(t) => Ok((0..t.vocab_size() as u32)
                .map(|id| {
                    let control = self.is_control(id) || t.token_type(id) == Some(spm::UNKNOWN);
                    (t.piece_bytes(id).unwrap_or_default(), control)
                })
                .collect()),
        }
    }

    /// The vocabulary grammars are compiled for, built once per tokenizer and shared by every
    /// request (building it walks all ids: a few hundred ms at 131072).
    pub fn constraint_vocabulary(
        &self,
    ) -> std::result::Result<Arc<TokenVocabulary>, ConstraintError> {
        if let Some(v) = self.constraint_vocab.get() {
            return Ok(v.clone());
        }
        let built = TokenVocabulary::new(self)?;
        // A concurrent first call may have won; either copy is the same vocabulary.
        Ok(self.constraint_vocab.get_or_init(|| built).clone())
    }

    pub fn is_control(&self, id: u32) -> bool {
        self.controls.iter().any(|c| c.1 == id)
    }

    /// Plain text to ids: no BOS, control token strings encoded as the characters they are.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match &self.backend {
            Backend::Tekken(t) => t.encode(text),
            Backend::Hf(t) => t.encode(text),
            Backend::Spm(t) => Ok(t.encode(text)),
        }
    }

    /// A rendered chat template to ids: control token strings become control ids, except those
    /// `escape_controls` marked inside message text, which stay text.
    pub fn encode_rendered(&self, rendered: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        let mut text = String::new();
        let mut rest = rendered;
        while let Some(c) = rest.chars().next() {
            if c == ESCAPE {
                // The escaped control string is copied as text on the next iterations.
                rest = &rest[c.len_utf8()..];
                if let Some((name, _)) = self.control_at(rest) {
                    text.push_str(name);
                    rest = &rest[name.len()..];
                }
                continue;
            }
            if let Some((name, id)) = self.control_at(rest) {
                ids.extend(self.encode(&text)?);
                text.clear();
                ids.push(id);
                rest = &rest[name.len()..];
                continue;
            }
            text.push(c);
            rest = &rest[c.len_utf8()..];
        }
        ids.extend(self.encode(&text)?);
        Ok(ids)
    }

    /// Marks each control token string in user text so `encode_rendered` keeps it as text.
    pub fn escape_controls(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if c == ESCAPE {
                rest = &rest[c.len_utf8()..];
                continue;
            }
            if let Some((name, _)) = self.control_at(rest) {
                out.push(ESCAPE);
                out.push_str(name);
                rest = &rest[name.len()..];
                continue;
            }
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out
    }

    /// The longest control token string at the start of `text`.
    fn control_at(&self, text: &str) -> Option<(&str, u32)> {
        let first = *text.as_bytes().first()?;
        self.controls
            .iter()
            .find(|(name, _)| name.as_bytes().first() == Some(&first) && text.starts_with(name))
            .map(|(name, id)| (name.as_str(), *id))
    }

    /// Ids to text; control tokens are dropped when `skip_special`, else written by name.
    /// Incomplete UTF-8 comes out as U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        match &self.backend {
            Backend::Tekken(t) => {
                Ok(String::from_utf8_lossy(&t.decode_bytes(ids, skip_special)?).into_owned())
            }
            Backend::Hf(t) => t.decode(ids, skip_special),
            Backend::Spm(t) => t.decode(ids, skip_special),
        }
    }

    /// A decoder that releases text as ids arrive, never half a character.
    pub fn stream(&self, skip_special: bool) -> StreamDecoder {
        StreamDecoder::new(skip_special)
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::load(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| Error::load(path, format!("not valid JSON: {e}")))
}

/// `"<s>"` or `{"content": "<s>", ...}` as tokenizer_config.json writes special tokens.
fn token_name(value: &Value) -> Option<&str> {
    value
        .as_str()
        .or_else(|| value.get("content").and_then(Value::as_str))
}
