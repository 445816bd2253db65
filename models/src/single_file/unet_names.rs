//! diffusers `UNet2DConditionModel` names -> CompVis `openaimodel.UNetModel` names (under
//! `model.diffusion_model.`): the inverse of diffusers' `convert_ldm_unet_checkpoint`.
//!
//! CompVis numbers its blocks flatly: `input_blocks.0` is conv_in, then each level's resnets (each
//! `input_blocks.i.0`, with its spatial transformer as `.1`) followed by the level's downsampler
//! (`input_blocks.i.0.op`); `middle_block.0/1/2` is resnet, transformer, resnet; `output_blocks`
//! holds each up block's resnets (`.0`), transformers (`.1`) and, on the last one of a block, the
//! upsampler (`.1.conv`, or `.2.conv` after a transformer). Inside a transformer the names are the same
//! in both layouts. SDXL's text_time embedding MLP (`add_embedding`) is CompVis' `label_emb.0`.

use serde_json::Value;

use super::stored::{split_index, Stored};
use super::NameMap;
use crate::unet::UnetConfig;
use kiln_runtime::{Error, Result};

pub const UNET_PREFIX: &str = "model.diffusion_model.";
/// SDXL's added-conditioning MLP, under the UNet prefix.
pub const ADD_EMBEDDING: &str = "label_emb.0.";

/// Top-level layers: (diffusers, CompVis).
const TOP: [(&str, &str); 7] = [
    ("time_embedding.linear_1", "time_embed.0"),
    ("time_embedding.linear_2", "time_embed.2"),
    ("add_embedding.linear_1", "label_emb.0.0"),
    ("add_embedding.linear_2", "label_emb.0.2"),
    ("conv_in", "input_blocks.0.0"),
    ("conv_norm_out", "out.0"),
    ("conv_out", "out.2"),
];

/// ResnetBlock2D layers: (diffusers, CompVis ResBlock).
const RESNET: [(&str, &str); 6] = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
];

/// Where each block's layers start in CompVis' flat numbering, from the config.
pub struct UnetNames {
    /// Per down block: its first `input_blocks` index and its resnet count.
    down: Vec<(usize, usize)>,
    /// Per up block: its first `output_blocks` index, its resnet count, and whether it has
    /// transformers (which move the upsampler from slot 1 to slot 2).
    up: Vec<(usize, usize, bool)>,
}

impl UnetNames {
    /// Only the block layout is read (resnets per level, which up blocks have attention), so configs
    /// with features kiln's UNet does not build yet (SDXL's `addition_embed_type`) name tensors too.
    pub fn new(config: &UnetConfig) -> Result<UnetNames> {
        let n = config.down_block_types.len();
        let layers = config.layers_per_block.expand(n, "layers_per_block")?;
        if config.up_block_types.len() != n {
            return Err(Error::shape(
                "unet names",
                format!(
                    "{} up_block_types for {n} down_block_types",
                    config.up_block_types.len()
                ),
            ));
        }
        let up_attention: Vec<bool> = config
            .up_block_types
            .iter()
            .map(|t| t.starts_with("CrossAttn"))
            .collect();
        let mut down = Vec::with_capacity(n);
        let mut first = 1;
        for &l in &layers {
            down.push((first, l));
            first += l + 1;
        }
        let mut up = Vec::with_capacity(n);
        let mut first = 0;
        for (i, &attention) in up_attention.iter().enumerate() {
            // Up block i works at level n-1-i and has one resnet more than its down block.
            let count = layers[n - 1 - i] + 1;
            up.push((first, count, attention));
            first += count;
        }
        Ok(UnetNames { down, up })
    }

    /// From a diffusers config.json value, unvalidated (see `new`).
    pub fn from_json(config: &Value) -> Result<UnetNames> {
        let config: UnetConfig = serde_json::from_value(config.clone())
            .map_err(|e| Error::shape("unet names", format!("UNet config: {e}")))?;
        UnetNames::new(&config)
    }
}

/// CompVis' name (without `model.diffusion_model.`) of diffusers UNet module `module`
/// (`down_blocks.1.attentions.0.proj_in` -> `input_blocks.4.1.proj_in`): the names kohya's SDXL
/// LoRAs use, since its trainer runs this layout.
pub(crate) fn compvis_module(names: &UnetNames, module: &str) -> Option<String> {
    let stored = names.stored(&format!("{module}.weight"))?;
    let name = stored
        .name
        .strip_prefix(UNET_PREFIX)?
        .strip_suffix(".weight")?;
    Some(name.to_string())
}

fn resnet(rest: &str) -> Option<String> {
    let (layer, param) = rest.split_once('.')?;
    let (_, old) = RESNET.iter().find(|(new, _)| *new == layer)?;
    Some(format!("{old}.{param}"))
}

fn stored(name: String) -> Option<Stored> {
    Some(Stored::whole(format!("{UNET_PREFIX}{name}")))
}

impl NameMap for UnetNames {
    fn stored(&self, name: &str) -> Option<Stored> {
        for (new, old) in TOP {
            if let Some(param) = name.strip_prefix(new).and_then(|r| r.strip_prefix('.')) {
                return stored(format!("{old}.{param}"));
            }
        }
        let (group, rest) = name.split_once('.')?;
        if group == "mid_block" {
            let (kind, rest) = rest.split_once('.')?;
            let (j, rest) = split_index(rest)?;
            return match (kind, j) {
                ("resnets", 0 | 1) => stored(format!("middle_block.{}.{}", 2 * j, resnet(rest)?)),
                ("attentions", 0) => stored(format!("middle_block.1.{rest}")),
                _ => None,
            };
        }
        let (b, rest) = split_index(rest)?;
        let (kind, rest) = rest.split_once('.')?;
        let (j, rest) = split_index(rest)?;
        match group {
            "down_blocks" => {
                let &(first, count) = self.down.get(b)?;
                match kind {
                    "resnets" if j < count => {
                        stored(format!("input_blocks.{}.0.{}", first + j, resnet(rest)?))
                    }
                    "attentions" if j < count => {
                        stored(format!("input_blocks.{}.1.{rest}", first + j))
                    }
                    "downsamplers" if j == 0 => {
                        let param = rest.strip_prefix("conv.")?;
                        stored(format!("input_blocks.{}.0.op.{param}", first + count))
                    }
                    _ => None,
                }
            }
            "up_blocks" => {
                let &(first, count, attention) = self.up.get(b)?;
                match kind {
                    "resnets" if j < count => {
                        stored(format!("output_blocks.{}.0.{}", first + j, resnet(rest)?))
                    }
                    "attentions" if j < count => {
                        stored(format!("output_blocks.{}.1.{rest}", first + j))
                    }
                    "upsamplers" if j == 0 => {
                        let slot = if attention { 2 } else { 1 };
                        stored(format!("output_blocks.{}.{slot}.{rest}", first + count - 1))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd15() -> UnetNames {
        UnetNames::new(&UnetConfig::from_json(r#"{"cross_attention_dim": 768}"#).unwrap()).unwrap()
    }

    fn name(map: &UnetNames, diffusers: &str) -> String {
        map.stored(diffusers).unwrap().name
    }

    #[test]
    fn sd15_names_match_diffusers_conversion() {
        let m = sd15();
        for (diffusers, compvis) in [
            ("conv_in.weight", "input_blocks.0.0.weight"),
            ("time_embedding.linear_2.bias", "time_embed.2.bias"),
            (
                "down_blocks.0.resnets.1.conv1.weight",
                "input_blocks.2.0.in_layers.2.weight",
            ),
            (
                "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight",
                "input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight",
            ),
            (
                "down_blocks.2.downsamplers.0.conv.bias",
                "input_blocks.9.0.op.bias",
            ),
            (
                "down_blocks.3.resnets.1.time_emb_proj.weight",
                "input_blocks.11.0.emb_layers.1.weight",
            ),
            (
                "mid_block.resnets.1.norm2.weight",
                "middle_block.2.out_layers.0.weight",
            ),
            (
                "mid_block.attentions.0.proj_in.weight",
                "middle_block.1.proj_in.weight",
            ),
            (
                "up_blocks.0.upsamplers.0.conv.weight",
                "output_blocks.2.1.conv.weight",
            ),
            (
                "up_blocks.1.upsamplers.0.conv.weight",
                "output_blocks.5.2.conv.weight",
            ),
            (
                "up_blocks.3.resnets.2.conv_shortcut.weight",
                "output_blocks.11.0.skip_connection.weight",
            ),
            (
                "up_blocks.3.attentions.2.norm.bias",
                "output_blocks.11.1.norm.bias",
            ),
            ("conv_out.weight", "out.2.weight"),
        ] {
            assert_eq!(
                name(&m, diffusers),
                format!("{UNET_PREFIX}{compvis}"),
                "{diffusers}"
            );
        }
    }

    #[test]
    fn sdxl_names_match_diffusers_conversion() {
        // stable-diffusion-xl-base-1.0: three levels, no attention in the first.
        let m = UnetNames::from_json(&serde_json::json!({
            "block_out_channels": [320, 640, 1280],
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            "addition_embed_type": "text_time",
            "transformer_layers_per_block": [1, 2, 10],
        }))
        .unwrap();
        for (diffusers, compvis) in [
            ("add_embedding.linear_1.weight", "label_emb.0.0.weight"),
            ("add_embedding.linear_2.bias", "label_emb.0.2.bias"),
            (
                "down_blocks.2.attentions.1.transformer_blocks.9.ff.net.2.weight",
                "input_blocks.8.1.transformer_blocks.9.ff.net.2.weight",
            ),
            (
                "up_blocks.0.upsamplers.0.conv.weight",
                "output_blocks.2.2.conv.weight",
            ),
            (
                "up_blocks.2.resnets.2.conv2.bias",
                "output_blocks.8.0.out_layers.3.bias",
            ),
        ] {
            assert_eq!(
                name(&m, diffusers),
                format!("{UNET_PREFIX}{compvis}"),
                "{diffusers}"
            );
        }
    }

    #[test]
    fn names_outside_the_layout_have_no_place() {
        let m = sd15();
        for bad in [
            "down_blocks.4.resnets.0.conv1.weight",
            "down_blocks.0.resnets.2.conv1.weight",
            "down_blocks.0.resnets.0.bogus.weight",
            "up_blocks.0.upsamplers.1.conv.weight",
            "mid_block.resnets.2.conv1.weight",
            "add_embedding.linear_3.weight",
        ] {
            assert!(m.stored(bad).is_none(), "{bad}");
        }
    }
}
