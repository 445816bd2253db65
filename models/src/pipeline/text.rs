//! Prompt -> text-encoder conditioning as A1111 builds it: emphasis syntax parsed, tokens split
//! into 75-token chunks, each chunk encoded by CLIP on its own (77 tokens with start and end) and
//! weighted, the chunks concatenated along the token axis. A prompt with no emphasis and at most
//! 75 tokens gives exactly diffusers' `encode_prompt` (one padded 77-token row).

use kiln_runtime::Tensor;

use super::error::{PipelineError, Result};
use super::load::StableDiffusion;
use crate::clip::tokenizer::CLIP_MAX_LEN;
use crate::clip::TokenOverride;
use crate::embeddings::{EmbeddingDb, EncoderSlot};
use crate::prompt::{apply_emphasis, ChunkOptions, PromptChunks, PromptError};

/// One prompt's text embeddings on the host: `chunks * 77` rows of `dim` values.
#[derive(Clone, Debug, PartialEq)]
pub struct Conditioning {
    pub values: Vec<f32>,
    pub chunks: usize,
    pub dim: usize,
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
}

/// Encodes `prompt` (A1111 emphasis syntax) with the model's tokenizer and text encoder, using
/// the output of layer `-clip_skip` (1 = the last, 2 = A1111's "clip skip 2").
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
    let entries = match embeddings {
        Some(db) => db.prompt_entries(&model.tokenizer)?,
        None => Vec::new(),
    };
    let chunks = PromptChunks::from_prompt_with(
        &model.tokenizer,
        prompt,
        &ChunkOptions::default(),
        &entries,
    )?;
    let n = chunks.len();
    let ids: Vec<u32> = chunks.ids.iter().flatten().copied().collect();
    let ids = Tensor::from_u32(model.text_encoder.device(), &[n, CLIP_MAX_LEN], &ids)?;
    let width = model.text_encoder.config().hidden_size;
    let overrides = match embeddings {
        Some(db) => embedding_rows(db, &chunks, EncoderSlot::First, width)?,
        None => Vec::new(),
    };
    let hidden = model.text_encoder.forward(&ids, &overrides, clip_skip)?;
    if hidden.rank() != 3 || hidden.dim(0) != n || hidden.dim(1) != CLIP_MAX_LEN {
        return Err(PipelineError::invalid(format!(
            "text encoder returned {:?} for {n} chunks of {CLIP_MAX_LEN} tokens",
            hidden.shape()
        )));
    }
    let dim = hidden.dim(2);
    let mut values = hidden.to_vec_f32()?;
    // A1111 rescales to the unweighted mean per encoded chunk.
    for (z, weights) in values
        .chunks_exact_mut(CLIP_MAX_LEN * dim)
        .zip(&chunks.weights)
    {
        apply_emphasis(z, weights)?;
    }
    Ok(Conditioning {
        values,
        chunks: n,
        dim,
    })
}

/// The prompt and negative prompt encoded and padded to the same number of chunks. The negative
/// prompt is only encoded when guidance needs it.
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
fn embedding_rows<'a>(
    db: &'a EmbeddingDb,
    chunks: &PromptChunks,
    slot: EncoderSlot,
    width: usize,
) -> Result<Vec<TokenOverride<'a>>> {
    let mut rows = Vec::new();
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
