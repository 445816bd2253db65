//! One conversation with a model: its KV cache and the token ids the cache holds. Each turn sends
//! the whole conversation's ids; only the part after the prefix already cached is run.

use kiln_kernels::argmax::{argmax_finite, NON_FINITE};
use kiln_runtime::{DType, Error, Result, Tensor};

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
        let (logits, run) = self.prefill_on_device(model, prompt)?;
        Ok((logits.to_vec_f32()?, run))
    }

    /// As [`prefill`](Self::prefill), but returns the greedy choice after the prompt (the argmax of
    /// the logits, lowest id on ties) instead of the logits: computed on the model's device, so only
    /// 4 bytes come back.
    pub fn prefill_greedy(&mut self, model: &Mistral, prompt: &[u32]) -> Result<(u32, usize)> {
        let (logits, run) = self.prefill_on_device(model, prompt)?;
        Ok((greedy_id(&logits)?, run))
    }

    fn prefill_on_device(&mut self, model: &Mistral, prompt: &[u32]) -> Result<(Tensor, usize)> {
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
        Ok((logits, new.len()))
    }

    /// Appends one generated token and returns the logits after it.
    pub fn decode(&mut self, model: &Mistral, id: u32) -> Result<Vec<f32>> {
        self.decode_on_device(model, id)?.to_vec_f32()
    }

    /// Appends one generated token and returns the greedy choice after it (see
    /// [`prefill_greedy`](Self::prefill_greedy)). On a GPU the step is one submission and one
    /// 4-byte readback.
    pub fn decode_greedy(&mut self, model: &Mistral, id: u32) -> Result<u32> {
        greedy_id(&self.decode_on_device(model, id)?)
    }

    fn decode_on_device(&mut self, model: &Mistral, id: u32) -> Result<Tensor> {
        let logits = model.forward(&[id], &mut self.cache, Logits::Last)?;
        self.tokens.push(id);
        Ok(logits)
    }
}

/// One decode step of several sessions at once: `ids[b]` is appended to `sessions[b]`. Returns
/// the logits `[B, vocab]` on the model's device (`Mistral::forward_batch`).
pub fn decode_batch(model: &Mistral, sessions: &mut [&mut Session], ids: &[u32]) -> Result<Tensor> {
    let mut caches: Vec<&mut KvCache> = sessions.iter_mut().map(|s| &mut s.cache).collect();
    let logits = model.forward_batch(ids, &mut caches)?;
    for (session, &id) in sessions.iter_mut().zip(ids) {
        session.tokens.push(id);
    }
    Ok(logits)
}

/// The argmax of one row of logits `[1, vocab]`, read back alone. Logits holding a NaN or an
/// infinity are an error, as the sampler makes them when it reads the whole row.
fn greedy_id(logits: &Tensor) -> Result<u32> {
    let ids = argmax_finite(logits)?.to_vec_u32()?;
    match ids[..] {
        [NON_FINITE] => Err(Error::shape(
            "greedy decoding",
            format!(
                "the logits {:?} hold a NaN or an infinity (the model's activations overflowed?)",
                logits.shape()
            ),
        )),
        [id] => Ok(id),
        _ => Err(Error::shape(
            "greedy decoding",
            format!("logits {:?} are not one row", logits.shape()),
        )),
    }
}
