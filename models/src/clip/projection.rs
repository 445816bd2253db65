//! transformers' `CLIPTextModelWithProjection` (SDXL's text_encoder_2, OpenCLIP ViT-bigG): the text
//! model plus `text_projection`, a bias-free Linear applied to the pooled (final-layer-normed EOS)
//! output. SDXL conditions on its penultimate hidden states without the final LayerNorm
//! (`ClipTextModel::hidden_state`) and on the projected pooled output (`text_embeds`).

use kiln_runtime::{Result, Tensor};

use super::config::ClipTextConfig;
use super::model::{ClipTextModel, TokenOverride};
use kiln_nn::weights::Weights;
use kiln_nn::Linear;

/// `encode`'s result.
pub struct ProjectedOutput {
    /// `[B, L, hidden]`: hidden state `-clip_skip` WITHOUT `final_layer_norm` (SDXL's rule).
    pub hidden_states: Tensor,
    /// `[B, projection_dim]`: transformers' `text_embeds`.
    pub text_embeds: Tensor,
}

pub struct ClipTextModelWithProjection {
    text_model: ClipTextModel,
    text_projection: Linear,
}

impl ClipTextModelWithProjection {
    /// `weights` as transformers saves the model: the text model (with or without the
    /// `text_model.` prefix) and `text_projection.weight` `[projection_dim, hidden]`.
    pub fn new(cfg: &ClipTextConfig, weights: &Weights) -> Result<ClipTextModelWithProjection> {
        Ok(ClipTextModelWithProjection {
            text_model: ClipTextModel::new(cfg, weights)?,
            text_projection: Linear::new(
                &weights.pp("text_projection"),
                cfg.hidden_size,
                cfg.projection_dim,
                false,
            )?,
        })
    }

    pub fn text_model(&self) -> &ClipTextModel {
        &self.text_model
    }

    pub fn config(&self) -> &ClipTextConfig {
        self.text_model.config()
    }

    /// Hidden state `-clip_skip` (no final LayerNorm) and the projected pooled output of the last
    /// layer, in one pass over the layers.
    /// `overrides` replace token-embedding rows (textual inversion).
    pub fn encode(
        &self,
        ids: &Tensor,
        overrides: &[TokenOverride],
        clip_skip: usize,
    ) -> Result<ProjectedOutput> {
        let out = self
            .text_model
            .forward_raw_with_pooled(ids, overrides, clip_skip)?;
        Ok(ProjectedOutput {
            hidden_states: out.hidden_states,
            text_embeds: self.text_projection.forward(&out.pooled)?,
        })
    }
}
