//! Prompt -> text-encoder conditioning as A1111 builds it: emphasis syntax parsed, tokens split
//! into 75-token chunks, each chunk encoded by CLIP on its own (77 tokens with start and end) and
//! weighted, the chunks concatenated along the token axis. A prompt with no emphasis and at most
//! 75 tokens gives exactly diffusers' `encode_prompt` (one padded 77-token row).
//!
//! SDXL (`sdxl.rs`) encodes the prompt with both text encoders, each weighted on its own, puts their
//! rows side by side and adds bigG's projected pooled output of the first chunk.

use kiln_runtime::Tensor;

use super::error::{PipelineError, Result};
use super::load::StableDiffusion;
use super::sdxl;
use crate::clip::tokenizer::{ClipTokenizer, CLIP_MAX_LEN};
use crate::clip::TokenOverride;
use crate::embeddings::{EmbeddingDb, EncoderSlot};
use crate::prompt::{apply_emphasis, ChunkOptions, PromptChunks, PromptError};

/// One prompt's text embeddings on the host: `chunks * 77` rows of `dim` values.
#[derive(Clone, Debug, PartialEq)]
pub struct Conditioning {
    pub values: Vec<f32>,
    pub chunks: usize,
    pub dim: usize,
    /// SDXL: the second text encoder's projected pooled output (`text_embeds`) of the first chunk.
    pub pooled: Option<Vec<f32>>,
}

impl Conditioning {
    /// Tokens along the sequence axis.
    pub fn tokens(&self) -> usize {
        self.chunks * CLIP_MAX_LEN
    }

    /// Appends copies of `pad` (one chunk) until there are `chunks` chunks: A1111 pads the shorter
    /// of prompt and negative prompt with the empty prompt's encoding so both batch together.
    pub fn pad_to(&mut self, chunks: usize, pad: &Conditioning) {
        while self.chunks < chunks {
            self.values.extend_from_slice(&pad.values);
            self.chunks += 1;
        }
    }

    /// The same shape filled with zeros: SDXL's unconditional input for an empty negative prompt.
    pub fn zeros_like(&self) -> Conditioning {
        Conditioning {
            values: vec![0.0; self.values.len()],
            chunks: self.chunks,
            dim: self.dim,
            pooled: self.pooled.as_ref().map(|p| vec![0.0; p.len()]),
        }
    }
}

/// Encodes `prompt` (A1111 emphasis syntax) with the model's tokenizer and text encoder, using
/// the output of layer `-clip_skip` (1 = the last, 2 = A1111's "clip skip 2"); for SDXL, hidden
/// state `-(clip_skip + 1)` of both encoders.
pub fn encode_prompt(
    model: &StableDiffusion,
    prompt: &str,
    clip_skip: usize,
) -> Result<Conditioning> {
    encode_prompt_with(model, prompt, clip_skip, None)
}

/// [`encode_prompt`] with the textual-inversion embeddings of `embeddings` recognised by name.
pub fn encode_prompt_with(
    model: &StableDiffusion,
    prompt: &str,
    clip_skip: usize,
    embeddings: Option<&EmbeddingDb>,
) -> Result<Conditioning> {
    if let Some(x) = &model.sdxl {
        return sdxl::encode_prompt(model, x, prompt, clip_skip, embeddings);
    }
    let (tokenizer, encoder) = model.clip()?;
    let chunks = prompt_chunks(tokenizer, prompt, embeddings)?;
    let ids = chunk_ids(&chunks, encoder.device())?;
    let width = encoder.config().hidden_size;
    let overrides = embedding_rows(embeddings, &chunks, EncoderSlot::First, width)?;
    let hidden = encoder.forward(&ids, &overrides, clip_skip)?;
    let (values, dim) = weighted(&hidden, &chunks)?;
    Ok(Conditioning {
        values,
        chunks: chunks.len(),
        dim,
        pooled: None,
    })
}

/// The prompt's chunks, with the names of `embeddings` recognised.
pub(super) fn prompt_chunks(
    tokenizer: &ClipTokenizer,
    prompt: &str,
    embeddings: Option<&EmbeddingDb>,
) -> Result<PromptChunks> {
    let entries = match embeddings {
        Some(db) => db.prompt_entries(tokenizer)?,
        None => Vec::new(),
    };
    Ok(PromptChunks::from_prompt_with(
        tokenizer,
        prompt,
        &ChunkOptions::default(),
        &entries,
    )?)
}

/// The chunks' ids as a `[chunks, 77]` tensor on `device`.
pub(super) fn chunk_ids(chunks: &PromptChunks, device: &kiln_runtime::Device) -> Result<Tensor> {
    let ids: Vec<u32> = chunks.ids.iter().flatten().copied().collect();
    Ok(Tensor::from_u32(
        device,
        &[chunks.len(), CLIP_MAX_LEN],
        &ids,
    )?)
}

/// A text encoder's `[chunks, 77, dim]` output on the host with each chunk's emphasis applied
/// (A1111 rescales to the unweighted mean per encoded chunk), and `dim`.
pub(super) fn weighted(hidden: &Tensor, chunks: &PromptChunks) -> Result<(Vec<f32>, usize)> {
    let n = chunks.len();
    if hidden.rank() != 3 || hidden.dim(0) != n || hidden.dim(1) != CLIP_MAX_LEN {
        return Err(PipelineError::invalid(format!(
            "text encoder returned {:?} for {n} chunks of {CLIP_MAX_LEN} tokens",
            hidden.shape()
        )));
    }
    let dim = hidden.dim(2);
    let mut values = hidden.to_vec_f32()?;
    for (z, weights) in values
        .chunks_exact_mut(CLIP_MAX_LEN * dim)
        .zip(&chunks.weights)
    {
        apply_emphasis(z, weights)?;
    }
    Ok((values, dim))
}

/// The prompt and negative prompt encoded and padded to the same number of chunks. The negative
/// prompt is only encoded when guidance needs it.
///
/// SDXL with an empty negative prompt gets zeros (conditioning and pooled embedding) rather than
/// the empty string's encoding: A1111 does so (sd_models_xl.py, `force_zero_negative_prompt`), and
/// so does diffusers when no negative prompt is given (`force_zeros_for_empty_prompt`).
pub fn encode_pair(
    model: &StableDiffusion,
    prompt: &str,
    negative: Option<&str>,
    clip_skip: usize,
    embeddings: Option<&EmbeddingDb>,
) -> Result<(Conditioning, Option<Conditioning>)> {
    let mut cond = encode_prompt_with(model, prompt, clip_skip, embeddings)?;
    let Some(negative) = negative else {
        return Ok((cond, None));
    };
    if model.sdxl.is_some() && negative.is_empty() {
        let zeros = cond.zeros_like();
        return Ok((cond, Some(zeros)));
    }
    let mut uncond = encode_prompt_with(model, negative, clip_skip, embeddings)?;
    if cond.chunks != uncond.chunks {
        let empty = encode_prompt(model, "", clip_skip)?;
        let n = cond.chunks.max(uncond.chunks);
        cond.pad_to(n, &empty);
        uncond.pad_to(n, &empty);
    }
    Ok((cond, Some(uncond)))
}

/// The token rows the chunks' embeddings replace, with `slot`'s vectors; an embedding without
/// vectors for this encoder, or of another width, is refused by name (A1111 would silently treat
/// the name as words).
pub(super) fn embedding_rows<'a>(
    embeddings: Option<&'a EmbeddingDb>,
    chunks: &PromptChunks,
    slot: EncoderSlot,
    width: usize,
) -> Result<Vec<TokenOverride<'a>>> {
    let mut rows = Vec::new();
    let Some(db) = embeddings else {
        return Ok(rows);
    };
    for (c, fixes) in chunks.fixes.iter().enumerate() {
        for fix in fixes {
            let e = &db.all()[fix.index];
            let refuse = |why: String| {
                PromptError::Embedding(format!(
                    "embedding {:?} ({}) {why}",
                    e.name,
                    e.path.display()
                ))
            };
            let vectors = e.vectors(slot).ok_or_else(|| {
                refuse(
                    "has no vectors for this model's second text encoder (an SD 1.x / 2.x \
                     embedding used with SDXL)"
                        .into(),
                )
            })?;
            if vectors.width != width {
                return Err(refuse(format!(
                    "has {}-wide vectors but the text encoder is {width} wide (an embedding \
                     trained for another model family)",
                    vectors.width
                ))
                .into());
            }
            for k in 0..fix.count {
                rows.push((
                    c * CLIP_MAX_LEN + fix.position + k,
                    &vectors.values[k * width..(k + 1) * width],
                ));
            }
        }
    }
    Ok(rows)
}
