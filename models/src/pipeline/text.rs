//! Prompt -> text-encoder conditioning as A1111 builds it: emphasis syntax parsed, tokens split
//! into 75-token chunks, each chunk encoded by CLIP on its own (77 tokens with start and end) and
//! weighted, the chunks concatenated along the token axis. A prompt with no emphasis and at most
//! 75 tokens gives exactly diffusers' `encode_prompt` (one padded 77-token row).

use kiln_runtime::Tensor;

use super::error::{PipelineError, Result};
use super::load::StableDiffusion;
use crate::clip::tokenizer::CLIP_MAX_LEN;
use crate::prompt::{apply_emphasis, ChunkOptions, PromptChunks};

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
    let chunks = PromptChunks::from_prompt(&model.tokenizer, prompt, &ChunkOptions::default())?;
    let n = chunks.len();
    let ids: Vec<u32> = chunks.ids.iter().flatten().copied().collect();
    let ids = Tensor::from_u32(model.text_encoder.device(), &[n, CLIP_MAX_LEN], &ids)?;
    let hidden = model.text_encoder.forward(&ids, clip_skip)?;
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
) -> Result<(Conditioning, Option<Conditioning>)> {
    let mut cond = encode_prompt(model, prompt, clip_skip)?;
    let Some(negative) = negative else {
        return Ok((cond, None));
    };
    let mut uncond = encode_prompt(model, negative, clip_skip)?;
    if cond.chunks != uncond.chunks {
        let empty = encode_prompt(model, "", clip_skip)?;
        let n = cond.chunks.max(uncond.chunks);
        cond.pad_to(n, &empty);
        uncond.pad_to(n, &empty);
    }
    Ok((cond, Some(uncond)))
}
