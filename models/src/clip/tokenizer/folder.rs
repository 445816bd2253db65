//! Loading and saving diffusers-style `tokenizer/` folders.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{pipeline, vocab, ClipTokenizer, Padding, TokenizerError};

impl ClipTokenizer {
    /// diffusers' `tokenizer/vocab.json` and `tokenizer/merges.txt`, padding with EOS.
    pub fn from_vocab_merges(vocab_json: &Path, merges_txt: &Path) -> Result<Self, TokenizerError> {
        let (vocab, merges) = vocab::read_files(vocab_json, merges_txt)?;
        let name = vocab_json.display().to_string();
        Self::wrap(pipeline::clip_pipeline(vocab, merges, &name)?, &name)
    }

    /// A `tokenizer.json` as transformers saves it; its own normalizer and pre-tokenizer are
    /// used. Padding with EOS.
    pub fn from_tokenizer_json(path: &Path) -> Result<Self, TokenizerError> {
        let text = vocab::read_text(path)?;
        let name = path.display().to_string();
        let inner = tokenizers::Tokenizer::from_bytes(text.as_bytes())
            .map_err(|e| TokenizerError::format(&name, format!("not a tokenizer.json: {e}")))?;
        Self::wrap(inner, &name)
    }

    /// A diffusers `tokenizer/` folder: vocab.json + merges.txt when present (built with the
    /// exact CLIP pipeline), else tokenizer.json. The padding comes from the folder's pad token.
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let (vocab, merges, json) = (
            dir.join("vocab.json"),
            dir.join("merges.txt"),
            dir.join("tokenizer.json"),
        );
        let tok = if vocab.is_file() && merges.is_file() {
            Self::from_vocab_merges(&vocab, &merges)?
        } else if json.is_file() {
            Self::from_tokenizer_json(&json)?
        } else {
            return Err(TokenizerError::format(
                &dir.display().to_string(),
                "holds neither vocab.json + merges.txt nor tokenizer.json",
            ));
        };
        let padding = tok.padding_from_config(dir)?;
        tok.with_padding(padding)
    }

    /// The pad token of special_tokens_map.json, else tokenizer_config.json (transformers lets
    /// the former override the latter; SD2's folder sets "!" there), else EOS.
    fn padding_from_config(&self, dir: &Path) -> Result<Padding, TokenizerError> {
        for file in ["special_tokens_map.json", "tokenizer_config.json"] {
            let path = dir.join(file);
            if !path.is_file() {
                continue;
            }
            let name = path.display().to_string();
            let json: Value = serde_json::from_str(&vocab::read_text(&path)?)
                .map_err(|e| TokenizerError::format(&name, format!("not JSON: {e}")))?;
            // transformers writes either "pad_token": "!" or "pad_token": {"content": "!", ...}
            let pad = match json.get("pad_token") {
                Some(Value::String(s)) => s.as_str(),
                Some(Value::Object(o)) => match o.get("content") {
                    Some(Value::String(s)) => s.as_str(),
                    _ => continue,
                },
                _ => continue,
            };
            let id = self.base.token_to_id(pad).ok_or_else(|| {
                TokenizerError::format(&name, format!("pad_token {pad:?} is not in the vocabulary"))
            })?;
            return Ok(if id == self.eos {
                Padding::Eos
            } else {
                Padding::Token(id)
            });
        }
        Ok(Padding::Eos)
    }

    /// Writes vocab.json, merges.txt, tokenizer.json and special_tokens_map.json (with the pad
    /// token) into `dir`: a diffusers-style tokenizer folder that [`ClipTokenizer::from_dir`] reads.
    pub fn save_dir(&self, dir: &Path) -> Result<(), TokenizerError> {
        use tokenizers::Model;
        let fail = |path: PathBuf, e: &dyn std::fmt::Display| TokenizerError::Write {
            path,
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(dir.to_path_buf(), &e))?;
        self.base
            .get_model()
            .save(dir, None)
            .map_err(|e| fail(dir.to_path_buf(), &e))?;
        // The base pipeline: from_dir registers the pad token again from the map below.
        let json = dir.join("tokenizer.json");
        self.base
            .save(&json, false)
            .map_err(|e| fail(json.clone(), &e))?;
        let pad_id = self.pad_id();
        let pad = self
            .base
            .id_to_token(pad_id)
            .ok_or(TokenizerError::PadId(pad_id))?;
        let map = serde_json::json!({
            "bos_token": vocab::BOS_TOKEN,
            "eos_token": vocab::EOS_TOKEN,
            "unk_token": vocab::EOS_TOKEN,
            "pad_token": pad,
        });
        let path = dir.join("special_tokens_map.json");
        std::fs::write(&path, map.to_string()).map_err(|e| fail(path.clone(), &e))
    }
}
