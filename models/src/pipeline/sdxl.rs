//! SDXL's conditioning: both text encoders on the prompt, and the added time ids.
//!
//! As diffusers' `StableDiffusionXLPipeline.encode_prompt` and A1111's SDXL embedders
//! (sd_hijack_clip.py) do: CLIP ViT-L (`text_encoder`) and OpenCLIP bigG (`text_encoder_2`) each
//! encode the prompt with their own tokenizer (the same BPE; tokenizer_2 pads with "!"), the
//! penultimate hidden state without the final LayerNorm is taken from each, emphasis weights each
//! on its own (A1111 restores each encoder's mean), and the rows go side by side (768 + 1280 = 2048
//! for SDXL). The pooled embedding is bigG's projected EOS output of the first chunk, as A1111
//! takes it. Clip skip counts from that default on both encoders: clip skip N uses hidden state
//! `-(N + 1)`, as diffusers' `clip_skip = N - 1` does (A1111 applies its clip skip to SDXL's CLIP-L
//! only behind an option, and never to bigG). The refiner has bigG alone: its rows are bigG's
//! (1280 wide), as diffusers' Img2ImgPipeline with `text_encoder=None` and A1111's refiner
//! conditioner give them.

use super::error::{PipelineError, Result};
use super::load::{Sdxl, StableDiffusion};
use super::text::{chunk_ids, embedding_rows, prompt_chunks, weighted, Conditioning};
use crate::clip::tokenizer::CLIP_MAX_LEN;
use crate::embeddings::{EmbeddingDb, EncoderSlot};

/// The aesthetic scores an `requires_aesthetics_score` model (the refiner) gets, diffusers' and
/// A1111's defaults: 6.0 for the prompt, 2.5 for the negative prompt.
pub const AESTHETIC_SCORE: f32 = 6.0;
pub const NEGATIVE_AESTHETIC_SCORE: f32 = 2.5;

pub(super) fn encode_prompt(
    model: &StableDiffusion,
    x: &Sdxl,
    prompt: &str,
    clip_skip: usize,
    embeddings: Option<&EmbeddingDb>,
) -> Result<Conditioning> {
    let layer = clip_skip + 1;
    let chunks_2 = prompt_chunks(&x.tokenizer_2, prompt, embeddings)?;
    let n = chunks_2.len();
    // The refiner has no CLIP-L: its rows are bigG's alone.
    let (values_1, d1) = match (&model.tokenizer, &model.text_encoder) {
        (Some(tokenizer), Some(encoder)) => {
            let chunks_1 = prompt_chunks(tokenizer, prompt, embeddings)?;
            if chunks_1.len() != n {
                return Err(PipelineError::invalid(format!(
                    "the prompt splits into {} chunks with tokenizer/ but {n} with tokenizer_2/: \
                     the two tokenizers must share one vocabulary",
                    chunks_1.len()
                )));
            }
            let ids_1 = chunk_ids(&chunks_1, encoder.device())?;
            let width_1 = encoder.config().hidden_size;
            let rows_1 = embedding_rows(embeddings, &chunks_1, EncoderSlot::First, width_1)?;
            let hidden_1 = encoder.hidden_state(&ids_1, &rows_1, layer)?;
            weighted(&hidden_1, &chunks_1)?
        }
        _ => (Vec::new(), 0),
    };

    let te2 = &x.text_encoder_2;
    let ids_2 = chunk_ids(&chunks_2, te2.text_model().device())?;
    let width_2 = te2.config().hidden_size;
    let rows_2 = embedding_rows(embeddings, &chunks_2, EncoderSlot::Second, width_2)?;
    let out = te2.encode(&ids_2, &rows_2, layer)?;
    let (values_2, d2) = weighted(&out.hidden_states, &chunks_2)?;
    let pooled_all = out.text_embeds.to_vec_f32()?;
    let p = pooled_all.len() / n;

    let values = if d1 == 0 {
        values_2
    } else {
        let mut values = Vec::with_capacity(values_1.len() + values_2.len());
        for (r1, r2) in values_1.chunks_exact(d1).zip(values_2.chunks_exact(d2)) {
            values.extend_from_slice(r1);
            values.extend_from_slice(r2);
        }
        values
    };
    debug_assert_eq!(values.len(), n * CLIP_MAX_LEN * (d1 + d2));
    Ok(Conditioning {
        values,
        chunks: n,
        dim: d1 + d2,
        pooled: Some(pooled_all[..p].to_vec()),
    })
}

/// diffusers' `_get_add_time_ids` for an image of `height` x `width`, with its defaults (original
/// size = target size = the image, crop (0, 0)): `[h, w, 0, 0, h, w]`, or for a
/// `requires_aesthetics_score` model `[h, w, 0, 0, score]`.
pub fn time_ids(x: &Sdxl, height: usize, width: usize, negative: bool) -> Vec<f32> {
    let (h, w) = (height as f32, width as f32);
    if x.requires_aesthetics_score {
        let score = if negative {
            NEGATIVE_AESTHETIC_SCORE
        } else {
            AESTHETIC_SCORE
        };
        vec![h, w, 0.0, 0.0, score]
    } else {
        vec![h, w, 0.0, 0.0, h, w]
    }
}
