//! SDXL's added conditioning (`addition_embed_type: "text_time"`): the pooled text embedding and the
//! six size numbers (original size, crop top-left, target size; or the refiner's five with an
//! aesthetic score) embedded and added to the time embedding, as diffusers' `get_aug_embed` does:
//! each number through `add_time_proj` (a sinusoid of `addition_time_embed_dim`), concatenated
//! after the pooled embedding, then `add_embedding` (a `TimestepEmbedding` MLP).

use kiln_kernels::elementwise::cast;
use kiln_kernels::layout::concat;
use kiln_runtime::{Error, Result, Tensor};

use super::time::{EmbeddingMlp, Sinusoid};
use kiln_nn::weights::Weights;

const OP: &str = "unet added conditioning";

/// The extra UNet inputs of an SDXL model.
#[derive(Clone, Copy)]
pub struct AddedCond<'a> {
    /// `[B, P]`: the second text encoder's projected pooled output.
    pub text_embeds: &'a Tensor,
    /// `[B, K]`: the size (and aesthetic score) numbers, `K * addition_time_embed_dim + P` being
    /// the config's `projection_class_embeddings_input_dim`.
    pub time_ids: &'a Tensor,
}

/// Sizes from the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddedSpec {
    /// `addition_time_embed_dim`: the sinusoid width per number.
    pub time_dim: usize,
    /// `projection_class_embeddings_input_dim`: pooled width + numbers * `time_dim`.
    pub input_dim: usize,
}

pub struct AddedEmbedding {
    spec: AddedSpec,
    add_time_proj: Sinusoid,
    add_embedding: EmbeddingMlp,
}

impl AddedEmbedding {
    /// `w` is the UNet's root view (`add_embedding.linear_1`, ...).
    pub fn new(
        w: &Weights,
        spec: AddedSpec,
        embed_dim: usize,
        flip_sin_to_cos: bool,
        freq_shift: f32,
    ) -> Result<AddedEmbedding> {
        Ok(AddedEmbedding {
            spec,
            add_time_proj: Sinusoid::new(spec.time_dim, flip_sin_to_cos, freq_shift, w.dtype()),
            add_embedding: EmbeddingMlp::new(&w.pp("add_embedding"), spec.input_dim, embed_dim)?,
        })
    }

    /// `[B, embed_dim]` in the model dtype, for a batch of `b`.
    pub fn forward(&self, added: &AddedCond, b: usize) -> Result<Tensor> {
        let (text, ids) = (added.text_embeds, added.time_ids);
        let AddedSpec {
            time_dim,
            input_dim,
        } = self.spec;
        let bad = |msg: String| Err(Error::shape(OP, msg));
        if text.rank() != 2 || text.dim(0) != b || ids.rank() != 2 || ids.dim(0) != b {
            return bad(format!(
                "`text_embeds` {:?} and `time_ids` {:?} must be [{b}, P] and [{b}, K] for a batch of {b}",
                text.shape(),
                ids.shape()
            ));
        }
        let k = ids.dim(1);
        if text.dim(1) + k * time_dim != input_dim {
            return bad(format!(
                "`text_embeds` {:?} and `time_ids` {:?}: {} + {k} x {time_dim} (addition_time_embed_dim) \
                 differs from projection_class_embeddings_input_dim {input_dim}",
                text.shape(),
                ids.shape(),
                text.dim(1)
            ));
        }
        let flat = ids.reshape(&[b * k])?;
        let times = self
            .add_time_proj
            .forward(&flat)?
            .reshape(&[b, k * time_dim])?;
        let text = cast(text, times.dtype())?;
        self.add_embedding.forward(&concat(&[&text, &times], 1)?)
    }
}
