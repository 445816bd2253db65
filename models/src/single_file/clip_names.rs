//! transformers `CLIPTextModel` names -> the text encoders of original-layout checkpoints.
//!
//! SD 1.x stores transformers' own CLIP (`cond_stage_model.transformer.text_model.*`, or without
//! `text_model.` in checkpoints saved by old transformers), so only the prefix changes. SD 2.x stores
//! OpenCLIP's text tower (`cond_stage_model.model.*`): the inverse of diffusers'
//! `convert_open_clip_checkpoint`, with q/k/v as thirds of the fused `attn.in_proj_weight` / `_bias`.
//! SDXL stores CLIP ViT-L the SD 1.x way under `conditioner.embedders.0.transformer.` and OpenCLIP
//! bigG under `conditioner.embedders.1.model.` (the refiner, bigG only: `conditioner.embedders.0.model.`),
//! whose `text_projection` is `CLIPTextModelWithProjection`'s, stored transposed.

use super::stored::{split_index, Part, Stored};
use super::NameMap;

/// SD 1.x's CLIP, as transformers 4 saved it inside the CompVis module.
pub const CLIP_PREFIX: &str = "cond_stage_model.transformer.text_model.";
/// The same without `text_model.`: some fine-tunes store it so (diffusers strips either prefix).
pub const CLIP_LEGACY_PREFIX: &str = "cond_stage_model.transformer.";
/// SD 2.x's OpenCLIP ViT-H text tower.
pub const OPEN_CLIP_PREFIX: &str = "cond_stage_model.model.";
/// SDXL base's CLIP ViT-L (its first text encoder).
pub const SDXL_CLIP_PREFIX: &str = "conditioner.embedders.0.transformer.text_model.";
/// SDXL base's OpenCLIP ViT-bigG (its second text encoder).
pub const SDXL_BIG_G_PREFIX: &str = "conditioner.embedders.1.model.";
/// The SDXL refiner's only text encoder, OpenCLIP ViT-bigG.
pub const REFINER_BIG_G_PREFIX: &str = "conditioner.embedders.0.model.";

/// transformers' names, with or without `text_model.` (the CLIP builder accepts both).
fn unprefixed(name: &str) -> &str {
    name.strip_prefix("text_model.").unwrap_or(name)
}

/// SD 1.x: transformers' names under `prefix`.
pub struct ClipNames {
    pub prefix: &'static str,
}

impl NameMap for ClipNames {
    fn stored(&self, name: &str) -> Option<Stored> {
        Some(Stored::whole(format!(
            "{}{}",
            self.prefix,
            unprefixed(name)
        )))
    }
}

/// Top-level OpenCLIP tensors: (transformers, OpenCLIP).
const OPEN_CLIP_TOP: [(&str, &str); 4] = [
    (
        "embeddings.token_embedding.weight",
        "token_embedding.weight",
    ),
    (
        "embeddings.position_embedding.weight",
        "positional_embedding",
    ),
    ("final_layer_norm.weight", "ln_final.weight"),
    ("final_layer_norm.bias", "ln_final.bias"),
];

/// Layers of one encoder layer / resblock: (transformers, OpenCLIP).
const OPEN_CLIP_LAYER: [(&str, &str); 5] = [
    ("layer_norm1", "ln_1"),
    ("layer_norm2", "ln_2"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
    ("self_attn.out_proj", "attn.out_proj"),
];

/// OpenCLIP names under `prefix`: SD 2.x's ViT-H (`cond_stage_model.model.`, no projection: SD 2.x
/// runs a plain CLIPTextModel) or SDXL's bigG (with `text_projection.weight`).
pub struct OpenClipNames {
    pub prefix: &'static str,
    pub projection: bool,
}

impl OpenClipNames {
    pub const SD2: OpenClipNames = OpenClipNames {
        prefix: OPEN_CLIP_PREFIX,
        projection: false,
    };

    pub fn big_g(prefix: &'static str) -> OpenClipNames {
        OpenClipNames {
            prefix,
            projection: true,
        }
    }
}

impl NameMap for OpenClipNames {
    fn stored(&self, name: &str) -> Option<Stored> {
        let p = self.prefix;
        if self.projection && name == "text_projection.weight" {
            return Some(Stored {
                name: format!("{p}text_projection"),
                part: Part::Transposed,
            });
        }
        let name = unprefixed(name);
        if let Some((_, old)) = OPEN_CLIP_TOP.iter().find(|(new, _)| *new == name) {
            return Some(Stored::whole(format!("{p}{old}")));
        }
        let (i, rest) = split_index(name.strip_prefix("encoder.layers.")?)?;
        let (layer, param) = rest.rsplit_once('.')?;
        let block = format!("{p}transformer.resblocks.{i}");
        let third = match layer {
            "self_attn.q_proj" => Some(0),
            "self_attn.k_proj" => Some(1),
            "self_attn.v_proj" => Some(2),
            _ => None,
        };
        if let Some(k) = third {
            return Some(Stored {
                name: format!("{block}.attn.in_proj_{param}"),
                part: Part::Third(k),
            });
        }
        let (_, old) = OPEN_CLIP_LAYER.iter().find(|(new, _)| *new == layer)?;
        Some(Stored::whole(format!("{block}.{old}.{param}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd1_clip_only_changes_the_prefix() {
        let m = ClipNames {
            prefix: CLIP_PREFIX,
        };
        for name in [
            "text_model.encoder.layers.3.mlp.fc1.weight",
            "encoder.layers.3.mlp.fc1.weight",
        ] {
            assert_eq!(
                m.stored(name).unwrap().name,
                "cond_stage_model.transformer.text_model.encoder.layers.3.mlp.fc1.weight"
            );
        }
    }

    #[test]
    fn open_clip_names_match_diffusers_conversion() {
        let m = OpenClipNames::SD2;
        for (name, stored, part) in [
            (
                "text_model.embeddings.position_embedding.weight",
                "positional_embedding",
                Part::Whole,
            ),
            ("final_layer_norm.bias", "ln_final.bias", Part::Whole),
            (
                "text_model.encoder.layers.22.self_attn.k_proj.weight",
                "transformer.resblocks.22.attn.in_proj_weight",
                Part::Third(1),
            ),
            (
                "encoder.layers.0.self_attn.v_proj.bias",
                "transformer.resblocks.0.attn.in_proj_bias",
                Part::Third(2),
            ),
            (
                "encoder.layers.5.self_attn.out_proj.weight",
                "transformer.resblocks.5.attn.out_proj.weight",
                Part::Whole,
            ),
            (
                "encoder.layers.5.mlp.fc2.bias",
                "transformer.resblocks.5.mlp.c_proj.bias",
                Part::Whole,
            ),
            (
                "encoder.layers.5.layer_norm1.weight",
                "transformer.resblocks.5.ln_1.weight",
                Part::Whole,
            ),
        ] {
            let s = m.stored(name).unwrap();
            assert_eq!(s.name, format!("{OPEN_CLIP_PREFIX}{stored}"), "{name}");
            assert_eq!(s.part, part, "{name}");
        }
        assert!(m.stored("text_projection.weight").is_none());
        assert!(m.stored("encoder.layers.1.self_attn.qkv.weight").is_none());
    }

    #[test]
    fn sdxl_big_g_has_its_projection_transposed() {
        let m = OpenClipNames::big_g(SDXL_BIG_G_PREFIX);
        let s = m.stored("text_projection.weight").unwrap();
        assert_eq!(
            (s.name.as_str(), s.part),
            (
                "conditioner.embedders.1.model.text_projection",
                Part::Transposed
            )
        );
        let s = m
            .stored("text_model.encoder.layers.31.self_attn.v_proj.bias")
            .unwrap();
        assert_eq!(
            (s.name.as_str(), s.part),
            (
                "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_bias",
                Part::Third(2)
            )
        );
        let refiner = OpenClipNames::big_g(REFINER_BIG_G_PREFIX);
        assert_eq!(
            refiner.stored("final_layer_norm.weight").unwrap().name,
            "conditioner.embedders.0.model.ln_final.weight"
        );
    }
}
