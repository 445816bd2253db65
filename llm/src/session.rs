//! One conversation with a model: its KV cache and the token ids the cache holds. Each turn sends
//! the whole conversation's ids; only the part after the prefix already cached is run.

use kiln_runtime::{DType, Error, Result};

use crate::kv_cache::KvCache;
use crate::model::{Logits, Mistral};

pub struct Session {
    cache: KvCache,
    tokens: Vec<u32>,
}

impl Session {
    /// A session with room for `context` positions, cached in `kv_dtype`.
    pub fn new(model: &Mistral, context: usize, kv_dtype: DType) -> Result<Session> {
        if context == 0 {
            return Err(Error::shape("session", "a context of 0 tokens"));
        }
        Ok(Session {
            cache: model.new_cache(context, kv_dtype)?,
            tokens: Vec::new(),
        })
    }

    /// The ids whose keys and values are cached.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn context(&self) -> usize {
        self.cache.capacity()
    }

    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    pub(crate) fn cache_mut(&mut self) -> &mut KvCache {
        &mut self.cache
    }

    /// Treats the first `len` positions as cached without computing them (their keys and values
    /// are whatever the buffers hold): benchmarks time decoding at a depth this way without a
    /// prefill of that length.
    pub fn assume_filled(&mut self, len: usize) -> Result<()> {
        if len > self.context() {
            return Err(Error::limit(
                "assume_filled",
                format!("{len} positions in a context of {}", self.context()),
            ));
        }
        self.cache.truncate(0);
        self.cache.advance(len);
        self.tokens = vec![0; len];
        Ok(())
    }

    /// Forgets the conversation (the buffers stay allocated).
    pub fn reset(&mut self) {
        self.cache.truncate(0);
        self.tokens.clear();
    }

    /// Makes the cache hold `prompt` and returns the logits (f32, `[vocab]`) after its last token
    /// and how many tokens had to be run. The longest prefix already cached is kept; at least the
    /// last token is always run, since its logits are not kept.
    pub fn prefill(&mut self, model: &Mistral, prompt: &[u32]) -> Result<(Vec<f32>, usize)> {
        if prompt.is_empty() {
            return Err(Error::shape("prefill", "an empty prompt"));
        }
        if prompt.len() > self.context() {
            return Err(Error::limit(
                "prefill",
                format!(
                    "the prompt has {} tokens, over the context of {}",
                    prompt.len(),
                    self.context()
                ),
            ));
        }
        let common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        self.cache.truncate(common);
        self.tokens.truncate(common);
        let new = &prompt[common..];
        let logits = model.forward(new, &mut self.cache, Logits::Last)?;
        self.tokens.extend_from_slice(new);
        Ok((logits.to_vec_f32()?, new.len()))
    }

    /// Appends one generated token and returns the logits after it.
    pub fn decode(&mut self, model: &Mistral, id: u32) -> Result<Vec<f32>> {
        let logits = model.forward(&[id], &mut self.cache, Logits::Last)?;
        self.tokens.push(id);
        logits.to_vec_f32()
    }
}
