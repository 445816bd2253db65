//! diffusers `AutoencoderKL` names -> CompVis `AutoencoderKL` names (under `first_stage_model.`): the
//! inverse of diffusers' `convert_ldm_vae_checkpoint`.
//!
//! CompVis numbers the decoder's levels by resolution (`up.0` is the full-size one, run last), diffusers
//! in the order they run, so decoder up block i is `up.(n-1-i)`. The mid-block attention's q/k/v/proj_out
//! are 1x1 convolutions there and Linear layers in diffusers.

use super::stored::{split_index, Part, Stored};
use super::NameMap;
use crate::vae::VaeConfig;

pub const VAE_PREFIX: &str = "first_stage_model.";

/// Mid-block attention layers: (diffusers, CompVis).
const ATTENTION: [(&str, &str); 5] = [
    ("group_norm", "norm"),
    ("to_q", "q"),
    ("to_k", "k"),
    ("to_v", "v"),
    ("to_out.0", "proj_out"),
];

pub struct VaeNames {
    levels: usize,
    /// `first_stage_model.` in a checkpoint; nothing in a VAE file of its own (`--vae`).
    prefix: &'static str,
}

impl VaeNames {
    pub fn new(config: &VaeConfig) -> VaeNames {
        VaeNames::with_prefix(config, VAE_PREFIX)
    }

    pub fn with_prefix(config: &VaeConfig, prefix: &'static str) -> VaeNames {
        VaeNames {
            levels: config.block_out_channels.len(),
            prefix,
        }
    }

    fn at(&self, name: String) -> Option<Stored> {
        Some(Stored::whole(format!("{}{name}", self.prefix)))
    }
}

/// ResnetBlock2D: only the shortcut is renamed.
fn resnet(rest: &str) -> String {
    match rest.strip_prefix("conv_shortcut.") {
        Some(param) => format!("nin_shortcut.{param}"),
        None => rest.to_string(),
    }
}

impl NameMap for VaeNames {
    fn stored(&self, name: &str) -> Option<Stored> {
        let stored = |name: String| self.at(name);
        if name.starts_with("quant_conv.") || name.starts_with("post_quant_conv.") {
            return stored(name.to_string());
        }
        let (side, rest) = name.split_once('.')?;
        if side != "encoder" && side != "decoder" {
            return None;
        }
        if let Some(param) = rest.strip_prefix("conv_norm_out.") {
            return stored(format!("{side}.norm_out.{param}"));
        }
        if rest.starts_with("conv_in.") || rest.starts_with("conv_out.") {
            return stored(name.to_string());
        }
        if let Some(rest) = rest.strip_prefix("mid_block.") {
            if let Some(rest) = rest.strip_prefix("resnets.") {
                let (j, rest) = split_index(rest)?;
                return stored(format!("{side}.mid.block_{}.{}", j + 1, resnet(rest)));
            }
            let rest = rest.strip_prefix("attentions.0.")?;
            let (layer, param) = rest.rsplit_once('.')?;
            let (_, old) = ATTENTION.iter().find(|(new, _)| *new == layer)?;
            let part = if layer != "group_norm" && param == "weight" {
                Part::Conv1x1
            } else {
                Part::Whole
            };
            return Some(Stored {
                name: format!("{}{side}.mid.attn_1.{old}.{param}", self.prefix),
                part,
            });
        }
        let (blocks, rest) = rest.split_once('.')?;
        let (i, rest) = split_index(rest)?;
        if i >= self.levels {
            return None;
        }
        let (level, sampler) = match (side, blocks) {
            ("encoder", "down_blocks") => (format!("down.{i}"), ("downsamplers", "downsample")),
            ("decoder", "up_blocks") => (
                format!("up.{}", self.levels - 1 - i),
                ("upsamplers", "upsample"),
            ),
            _ => return None,
        };
        if let Some(rest) = rest.strip_prefix("resnets.") {
            let (j, rest) = split_index(rest)?;
            return stored(format!("{side}.{level}.block.{j}.{}", resnet(rest)));
        }
        let rest = rest.strip_prefix(sampler.0)?.strip_prefix(".0.")?;
        stored(format!("{side}.{level}.{}.{rest}", sampler.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd_vae_names_match_diffusers_conversion() {
        let cfg = VaeConfig {
            block_out_channels: vec![128, 256, 512, 512],
            ..VaeConfig::default()
        };
        let m = VaeNames::new(&cfg);
        for (diffusers, compvis, part) in [
            (
                "encoder.conv_in.weight",
                "encoder.conv_in.weight",
                Part::Whole,
            ),
            (
                "encoder.conv_norm_out.bias",
                "encoder.norm_out.bias",
                Part::Whole,
            ),
            (
                "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
                "encoder.down.1.block.0.nin_shortcut.weight",
                Part::Whole,
            ),
            (
                "encoder.down_blocks.2.downsamplers.0.conv.weight",
                "encoder.down.2.downsample.conv.weight",
                Part::Whole,
            ),
            (
                "encoder.mid_block.resnets.1.norm1.weight",
                "encoder.mid.block_2.norm1.weight",
                Part::Whole,
            ),
            (
                "decoder.mid_block.attentions.0.to_q.weight",
                "decoder.mid.attn_1.q.weight",
                Part::Conv1x1,
            ),
            (
                "decoder.mid_block.attentions.0.to_out.0.bias",
                "decoder.mid.attn_1.proj_out.bias",
                Part::Whole,
            ),
            (
                "decoder.mid_block.attentions.0.group_norm.weight",
                "decoder.mid.attn_1.norm.weight",
                Part::Whole,
            ),
            (
                "decoder.up_blocks.0.resnets.2.conv2.weight",
                "decoder.up.3.block.2.conv2.weight",
                Part::Whole,
            ),
            (
                "decoder.up_blocks.2.upsamplers.0.conv.bias",
                "decoder.up.1.upsample.conv.bias",
                Part::Whole,
            ),
            (
                "post_quant_conv.weight",
                "post_quant_conv.weight",
                Part::Whole,
            ),
        ] {
            let s = m.stored(diffusers).unwrap();
            assert_eq!(s.name, format!("{VAE_PREFIX}{compvis}"), "{diffusers}");
            assert_eq!(s.part, part, "{diffusers}");
        }
        // A VAE file of its own (sdxl-vae's single file) has the same names without the prefix.
        let bare = VaeNames::with_prefix(&cfg, "");
        assert_eq!(
            bare.stored("decoder.up_blocks.0.resnets.2.conv2.weight")
                .unwrap()
                .name,
            "decoder.up.3.block.2.conv2.weight"
        );
        for bad in [
            "encoder.up_blocks.0.resnets.0.conv1.weight",
            "decoder.up_blocks.4.resnets.0.conv1.weight",
            "decoder.mid_block.attentions.0.query.weight",
            "encoder.mid_block.attentions.1.to_q.weight",
        ] {
            assert!(m.stored(bad).is_none(), "{bad}");
        }
    }
}
