//! Which SD model a single file holds, decided as diffusers' `infer_diffusers_model_type` decides it,
//! and the defaults that follow from it for what the weights cannot tell (prediction type, image size).

use super::inventory::Inventory;
use super::unet_names::UNET_PREFIX;

/// diffusers' model types for the SD 1.x / 2.x UNets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// "v1": SD 1.x (and anything not recognised as below, as in diffusers).
    Sd1,
    /// "inpainting": SD 1.x with the 9-channel inpainting UNet.
    Sd1Inpainting,
    /// "v2": SD 2.x (OpenCLIP-H context, 1024 wide).
    Sd2,
    /// "inpainting_v2".
    Sd2Inpainting,
}

impl ModelKind {
    /// diffusers tests `input_blocks.0.0.weight` for 9 input channels and the width of
    /// `input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight` for 1024. The latter is read here from
    /// the first cross-attention found, which is the same tensor in SD's layout and also works for
    /// UNets with one resnet per level.
    pub fn detect(inv: &Inventory) -> ModelKind {
        let inpainting = inv
            .get(&format!("{UNET_PREFIX}input_blocks.0.0.weight"))
            .is_some_and(|s| s.len() == 4 && s[1] == 9);
        let sd2 = inv
            .under(UNET_PREFIX)
            .find(|n| n.ends_with(".attn2.to_k.weight"))
            .and_then(|n| inv.get(n))
            .is_some_and(|s| s.last() == Some(&1024));
        match (sd2, inpainting) {
            (false, false) => ModelKind::Sd1,
            (false, true) => ModelKind::Sd1Inpainting,
            (true, false) => ModelKind::Sd2,
            (true, true) => ModelKind::Sd2Inpainting,
        }
    }

    /// diffusers' name for it.
    pub fn diffusers_name(self) -> &'static str {
        match self {
            ModelKind::Sd1 => "v1",
            ModelKind::Sd1Inpainting => "inpainting",
            ModelKind::Sd2 => "v2",
            ModelKind::Sd2Inpainting => "inpainting_v2",
        }
    }

    pub fn is_sd2(self) -> bool {
        matches!(self, ModelKind::Sd2 | ModelKind::Sd2Inpainting)
    }

    pub fn is_inpainting(self) -> bool {
        matches!(self, ModelKind::Sd1Inpainting | ModelKind::Sd2Inpainting)
    }

    /// The scheduler's `prediction_type`. The weights cannot tell epsilon from v-prediction; diffusers'
    /// single-file loader takes the scheduler config of its default repository for the type:
    /// stable-diffusion-2-1 (v_prediction) for "v2", epsilon for the others. So SD 2.x-base (512) and
    /// SD-Turbo single files come out as v_prediction, as in diffusers, and need an override.
    pub fn prediction_type(self) -> &'static str {
        match self {
            ModelKind::Sd2 => "v_prediction",
            _ => "epsilon",
        }
    }

    /// The image size the model was trained at, in pixels (diffusers'
    /// `DIFFUSERS_TO_LDM_DEFAULT_IMAGE_SIZE_MAP`: 768 for "v2", 512 for the others).
    pub fn image_size(self) -> usize {
        match self {
            ModelKind::Sd2 => 768,
            _ => 512,
        }
    }
}
