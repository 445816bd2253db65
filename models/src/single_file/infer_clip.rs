//! The transformers `CLIPTextConfig` of an original-layout text encoder, read off its tensor shapes.
//!
//! Not in the weights, and taken as the published SD text_encoder configs have them: 64-wide heads
//! (ViT-L/14: 12 heads of 768; ViT-H/14: 16 of 1024), the activation (OpenAI CLIP: quick_gelu;
//! OpenCLIP: gelu), LayerNorm eps 1e-5, and the token ids of those configs (bos 0, eos 2, pad 1: the
//! legacy values transformers' pooling treats specially). SD 2.x conditions on OpenCLIP's penultimate
//! layer, so its config has one layer fewer than the checkpoint's resblocks, as diffusers' has (23 of 24).
//! SDXL runs all of bigG's layers (taking the penultimate hidden state and the final layer's pooled,
//! projected output), so its `CLIPTextModelWithProjection` config keeps them all, with the projection's
//! width as `projection_dim`.

use serde_json::{json, Value};

use kiln_runtime::{Error, Result};

use super::clip_names::{OPEN_CLIP_PREFIX, REFINER_BIG_G_PREFIX, SDXL_BIG_G_PREFIX};
use super::inventory::Inventory;
use super::kind::ModelKind;

const HEAD_WIDTH: usize = 64;

/// Which text encoder a single file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextEncoderKind {
    /// SD 1.x: OpenAI CLIP in transformers' layout under this prefix.
    Clip(&'static str),
    /// SD 2.x: OpenCLIP under `cond_stage_model.model.`.
    OpenClip,
    /// SDXL: OpenCLIP bigG with its text projection under this prefix.
    BigG(&'static str),
}

impl TextEncoderKind {
    /// Where its tensors are.
    pub fn prefix(self) -> &'static str {
        match self {
            TextEncoderKind::Clip(p) | TextEncoderKind::BigG(p) => p,
            TextEncoderKind::OpenClip => OPEN_CLIP_PREFIX,
        }
    }
}

/// The width of SDXL's pooled text embedding: bigG's `text_projection` [width, projection], if the
/// file holds it.
pub fn pooled_width(inv: &Inventory, kind: ModelKind) -> Result<Option<usize>> {
    let prefix = if kind == ModelKind::SdxlRefiner {
        REFINER_BIG_G_PREFIX
    } else {
        SDXL_BIG_G_PREFIX
    };
    let name = format!("{prefix}text_projection");
    if !inv.has(&name) {
        return Ok(None);
    }
    Ok(Some(inv.shape(&name, 2, "the pooled text width")?[1]))
}

pub fn text_encoder_config(inv: &Inventory, kind: TextEncoderKind) -> Result<Value> {
    let mut architecture = "CLIPTextModel";
    let (p, token, position, layers, fc1, act, projection) = match kind {
        TextEncoderKind::Clip(p) => (
            p,
            "embeddings.token_embedding.weight",
            "embeddings.position_embedding.weight",
            inv.count(&format!("{p}encoder.layers.")),
            "encoder.layers.0.mlp.fc1.weight",
            "quick_gelu",
            768,
        ),
        TextEncoderKind::OpenClip => {
            let p = OPEN_CLIP_PREFIX;
            let resblocks = inv.count(&format!("{p}transformer.resblocks."));
            (
                p,
                "token_embedding.weight",
                "positional_embedding",
                resblocks.saturating_sub(1),
                "transformer.resblocks.0.mlp.c_fc.weight",
                "gelu",
                512,
            )
        }
        TextEncoderKind::BigG(p) => {
            architecture = "CLIPTextModelWithProjection";
            let projection = format!("{p}text_projection");
            (
                p,
                "token_embedding.weight",
                "positional_embedding",
                inv.count(&format!("{p}transformer.resblocks.")),
                "transformer.resblocks.0.mlp.c_fc.weight",
                "gelu",
                inv.shape(&projection, 2, "projection_dim")?[1],
            )
        }
    };
    let token = inv.shape(&format!("{p}{token}"), 2, "the text encoder's vocab_size")?;
    let (vocab, hidden) = (token[0], token[1]);
    let positions = inv.shape(&format!("{p}{position}"), 2, "max_position_embeddings")?[0];
    let intermediate = inv.shape(&format!("{p}{fc1}"), 2, "intermediate_size")?[0];
    if layers == 0 || !hidden.is_multiple_of(HEAD_WIDTH) {
        return Err(Error::load(
            &inv.origin,
            format!(
                "text encoder `{p}*`: {layers} layers of width {hidden}: not an SD text encoder \
                 (64-wide heads, at least one layer)"
            ),
        ));
    }
    Ok(json!({
        "architectures": [architecture],
        "model_type": "clip_text_model",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": hidden / HEAD_WIDTH,
        "max_position_embeddings": positions,
        "hidden_act": act,
        "layer_norm_eps": 1e-5,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
        "projection_dim": projection,
    }))
}
