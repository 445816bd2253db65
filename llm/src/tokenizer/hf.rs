//! `tokenizer.json` through the `tokenizers` crate, set so that control token strings inside text
//! are encoded as text (transformers would turn a user's "[INST]" into the control id).

use std::path::Path;

use kiln_runtime::{Error, Result};

pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    /// Added tokens (control tokens) by id.
    added: Vec<(u32, String)>,
}

impl HfTokenizer {
    pub fn load(path: &Path) -> Result<HfTokenizer> {
        let mut inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::load(path, format!("not a tokenizer.json: {e}")))?;
        inner.set_encode_special_tokens(true);
        let mut added: Vec<(u32, String)> = inner
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, t)| (id, t.content))
            .collect();
        added.sort();
        Ok(HfTokenizer { inner, added })
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
