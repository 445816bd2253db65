//! One conversation with a model: its KV cache and the token ids the cache holds. Each turn sends
//! the whole conversation's ids; only the part after the prefix already cached is run.

use kiln_kernels::argmax::{argmax_finite, NON_FINITE};
use kiln_runtime::{DType, Error, Result, Tensor};

use crate::kv_cache::KvCache;
use crate::model::{Logits, Mistral};
use crate::vision::{Prompt, PromptImage};

pub struct Session {
    cache: KvCache,
    tokens: Vec<u32>,
    /// The images whose rows the cache holds: (first position, layout length, pixel hash). A
    /// cached prefix is reused across an image only when the same image sits at the same place
    /// (its `[IMG]` ids alone say nothing of its pixels).
    images: Vec<(usize, usize, u64)>,
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
            images: Vec::new(),
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
        self.images.clear();
        Ok(())
    }

    /// Forgets the conversation (the buffers stay allocated).
    pub fn reset(&mut self) {
        self.cache.truncate(0);
        self.tokens.clear();
        self.images.clear();
    }

    /// Makes the cache hold `prompt` and returns the logits (f32, `[vocab]`) after its last token
    /// and how many tokens had to be run. The longest prefix already cached is kept; at least the
    /// last token is always run, since its logits are not kept.
    pub fn prefill(&mut self, model: &Mistral, prompt: &[u32]) -> Result<(Vec<f32>, usize)> {
        let (logits, run) = self.prefill_on_device(model, prompt, &[])?;
        Ok((logits.to_vec_f32()?, run))
    }

    /// As [`prefill`](Self::prefill) for a prompt with images: each image not already cached
    /// at its place is encoded by the model's vision tower (one at a time) and its rows take
    /// the place of its `[IMG]` embeddings.
    pub fn prefill_prompt(
        &mut self,
        model: &Mistral,
        prompt: &Prompt,
    ) -> Result<(Vec<f32>, usize)> {
        self.prefill_parts(model, &prompt.ids, &prompt.images)
    }

    pub(crate) fn prefill_parts(
        &mut self,
        model: &Mistral,
        ids: &[u32],
        images: &[PromptImage],
    ) -> Result<(Vec<f32>, usize)> {
        let (logits, run) = self.prefill_on_device(model, ids, images)?;
        Ok((logits.to_vec_f32()?, run))
    }

    /// [`prefill_prompt`](Self::prefill_prompt) returning the greedy choice (as
    /// [`prefill_greedy`](Self::prefill_greedy)).
    pub fn prefill_prompt_greedy(
        &mut self,
        model: &Mistral,
        prompt: &Prompt,
    ) -> Result<(u32, usize)> {
        self.prefill_parts_greedy(model, &prompt.ids, &prompt.images)
    }

    pub(crate) fn prefill_parts_greedy(
        &mut self,
        model: &Mistral,
        ids: &[u32],
        images: &[PromptImage],
    ) -> Result<(u32, usize)> {
        let (logits, run) = self.prefill_on_device(model, ids, images)?;
        Ok((greedy_id(&logits)?, run))
    }

    /// As [`prefill`](Self::prefill), but returns the greedy choice after the prompt (the argmax of
    /// the logits, lowest id on ties) instead of the logits: computed on the model's device, so only
    /// 4 bytes come back.
    pub fn prefill_greedy(&mut self, model: &Mistral, prompt: &[u32]) -> Result<(u32, usize)> {
        let (logits, run) = self.prefill_on_device(model, prompt, &[])?;
        Ok((greedy_id(&logits)?, run))
    }

    fn prefill_on_device(
        &mut self,
        model: &Mistral,
        prompt: &[u32],
        images: &[PromptImage],
    ) -> Result<(Tensor, usize)> {
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
        for image in images {
            if image.start + image.len > prompt.len() {
                return Err(Error::shape(
                    "prefill",
                    format!(
                        "an image at positions {}..{} of a {}-token prompt",
                        image.start,
                        image.start + image.len,
                        prompt.len()
                    ),
                ));
            }
        }
        let mut common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        // The cache holds an image's rows only where the new prompt has the same image: its
        // `[IMG]` ids alone match any image (or ids sent without one).
        for image in images {
            let key = (image.start, image.len, image.image.hash);
            let overlaps = image.start < common;
            if overlaps && (!self.images.contains(&key) || image.start + image.len > common) {
                common = image.start;
            }
        }
        for &(start, len, hash) in &self.images {
            let kept = images
                .iter()
                .any(|i| (i.start, i.len, i.image.hash) == (start, len, hash));
            if start < common && !kept {
                common = start;
            }
        }
        self.cache.truncate(common);
        self.tokens.truncate(common);
        self.images.retain(|&(start, len, _)| start + len <= common);
        let new = &prompt[common..];
        let fresh: Vec<&PromptImage> = images.iter().filter(|i| i.start >= common).collect();
        let inserts = match (&model.vision, fresh.is_empty()) {
            (_, true) => Vec::new(),
            (None, false) => {
                return Err(Error::shape(
                    "prefill",
                    "a prompt with images for a model without a vision encoder",
                ))
            }
            (Some(vision), false) => fresh
                .iter()
                .map(|image| {
                    let rows = image
                        .image_positions()
                        .into_iter()
                        .map(|p| (p - common) as u32)
                        .collect();
                    Ok((rows, vision.encode(&image.image)?))
                })
                .collect::<Result<Vec<_>>>()?,
        };
        let logits = model.forward_embedded(new, &inserts, &mut self.cache, Logits::Last)?;
        self.tokens.extend_from_slice(new);
        self.images
            .extend(fresh.iter().map(|i| (i.start, i.len, i.image.hash)));
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
