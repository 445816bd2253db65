//! Which SD model a single file holds, decided as diffusers' `infer_diffusers_model_type` decides it,
//! and the defaults that follow from it for what the weights cannot tell (prediction type, image size).

use super::clip_names::{REFINER_BIG_G_PREFIX, SDXL_BIG_G_PREFIX, SDXL_CLIP_PREFIX};
use super::inventory::Inventory;
use super::unet_names::{ADD_EMBEDDING, UNET_PREFIX};

/// diffusers' model types for the SD 1.x / 2.x and SDXL UNets.
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
    /// "xl_base": SDXL base (CLIP-L + bigG context, text_time added conditioning), and fine-tunes.
    SdxlBase,
    /// "xl_refiner": bigG only, aesthetic-score time ids.
    SdxlRefiner,
    /// "xl_inpaint": SDXL base with the 9-channel inpainting UNet.
    SdxlInpainting,
}

impl ModelKind {
    /// diffusers tests `input_blocks.0.0.weight` for 9 input channels and the width of
    /// `input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight` for 1024. The latter is read here from
    /// the first cross-attention found, which is the same tensor in SD's layout and also works for
    /// UNets with one resnet per level. diffusers tells SDXL base / refiner by bigG's 10th resblock
    /// under `conditioner.embedders.1.` / `.0.`; here any bigG tensor there does (so do smaller
    /// towers), and a UNet-only SDXL file is told by its text_time embedding (`label_emb.0.0`): base,
    /// unless the refiner's bigG is what the file holds.
    pub fn detect(inv: &Inventory) -> ModelKind {
        let inpainting = inv
            .get(&format!("{UNET_PREFIX}input_blocks.0.0.weight"))
            .is_some_and(|s| s.len() == 4 && s[1] == 9);
        let refiner = inv.any_under(REFINER_BIG_G_PREFIX) && !inv.any_under(SDXL_CLIP_PREFIX);
        let sdxl = inv.any_under(SDXL_BIG_G_PREFIX)
            || inv.any_under(SDXL_CLIP_PREFIX)
            || refiner
            || inv.any_under(&format!("{UNET_PREFIX}{ADD_EMBEDDING}"));
        if sdxl {
            return match (refiner, inpainting) {
                (true, _) => ModelKind::SdxlRefiner,
                (false, true) => ModelKind::SdxlInpainting,
                (false, false) => ModelKind::SdxlBase,
            };
        }
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
            ModelKind::SdxlBase => "xl_base",
            ModelKind::SdxlRefiner => "xl_refiner",
            ModelKind::SdxlInpainting => "xl_inpaint",
        }
    }

    pub fn is_sd2(self) -> bool {
        matches!(self, ModelKind::Sd2 | ModelKind::Sd2Inpainting)
    }

    pub fn is_sdxl(self) -> bool {
        matches!(
            self,
            ModelKind::SdxlBase | ModelKind::SdxlRefiner | ModelKind::SdxlInpainting
        )
    }

    pub fn is_inpainting(self) -> bool {
        matches!(
            self,
            ModelKind::Sd1Inpainting | ModelKind::Sd2Inpainting | ModelKind::SdxlInpainting
        )
    }

    /// How many numbers SDXL's text_time conditioning embeds per image (`add_time_ids`): original
    /// size, crop offset and target size (6) for base and inpainting; the refiner replaces the
    /// target size with an aesthetic score (5). None for SD 1.x / 2.x.
    pub fn time_ids(self) -> Option<usize> {
        match self {
            ModelKind::SdxlBase | ModelKind::SdxlInpainting => Some(6),
            ModelKind::SdxlRefiner => Some(5),
            _ => None,
        }
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
    /// `DIFFUSERS_TO_LDM_DEFAULT_IMAGE_SIZE_MAP`: 768 for "v2", 1024 for the SDXL types, 512 for the
    /// others).
    pub fn image_size(self) -> usize {
        match self {
            ModelKind::Sd2 => 768,
            k if k.is_sdxl() => 1024,
            _ => 512,
        }
    }
}
