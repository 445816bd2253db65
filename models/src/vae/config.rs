//! `config.json` of a diffusers `AutoencoderKL` (the `vae/` folder of a pipeline). Absent fields take
//! `AutoencoderKL.__init__`'s defaults, as diffusers fills them; fields kiln does not use (sample_size,
//! which only sizes diffusers' tiles, latents_mean / latents_std) are ignored.

use std::path::Path;

use kiln_runtime::{Error, Result};
use serde::Deserialize;

/// The only encoder block diffusers' `Encoder` is built with for SD's VAEs.
pub const DOWN_ENCODER_BLOCK: &str = "DownEncoderBlock2D";
/// The only decoder block diffusers' `Decoder` is built with for SD's VAEs.
pub const UP_DECODER_BLOCK: &str = "UpDecoderBlock2D";

/// diffusers' `AutoencoderKL` config, with its defaults.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub act_fn: String,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    /// Latents the UNet sees are `(z - shift_factor) * scaling_factor`; old SD configs omit it and
    /// mean 0.18215.
    pub scaling_factor: f32,
    /// `None` for SD 1.x / 2.x (SD3 and Flux VAEs set it).
    pub shift_factor: Option<f32>,
    /// diffusers runs this VAE in f32 even in an f16 pipeline when set (its f16 activations can
    /// overflow); the pipeline decides, the model runs in whatever dtype its weights were loaded in.
    pub force_upcast: bool,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
}

impl Default for VaeConfig {
    fn default() -> Self {
        VaeConfig {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec![DOWN_ENCODER_BLOCK.to_string()],
            up_block_types: vec![UP_DECODER_BLOCK.to_string()],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: "silu".to_string(),
            latent_channels: 4,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
            shift_factor: None,
            force_upcast: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }
}

impl VaeConfig {
    /// Parses and validates `config.json` text; `origin` names it in errors.
    pub fn from_json(text: &str, origin: impl AsRef<Path>) -> Result<VaeConfig> {
        let origin = origin.as_ref();
        let cfg: VaeConfig = serde_json::from_str(text)
            .map_err(|e| Error::load(origin, format!("not an AutoencoderKL config: {e}")))?;
        cfg.validate()
            .map_err(|msg| Error::load(origin, format!("AutoencoderKL config: {msg}")))?;
        Ok(cfg)
    }

    pub fn from_file(path: impl AsRef<Path>) -> Result<VaeConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::load(path, format!("cannot read: {e}")))?;
        VaeConfig::from_json(&text, path)
    }

    /// The checks diffusers makes (or would fail on later), naming the field at fault. Anything this
    /// implementation does not run (other block types, activations) is refused here rather than
    /// computed differently.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("latent_channels", self.latent_channels),
            ("norm_num_groups", self.norm_num_groups),
            ("layers_per_block", self.layers_per_block),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("`{field}` must be positive"));
        }
        if self.act_fn != "silu" && self.act_fn != "swish" {
            return Err(format!(
                "`act_fn` \"{}\" is not supported (SD's VAEs use \"silu\")",
                self.act_fn
            ));
        }
        let levels = self.block_out_channels.len();
        if levels == 0 {
            return Err("`block_out_channels` is empty".to_string());
        }
        if let Some(&c) = self
            .block_out_channels
            .iter()
            .find(|&&c| c == 0 || !c.is_multiple_of(self.norm_num_groups))
        {
            return Err(format!(
                "`block_out_channels` {:?}: {c} is not a positive multiple of `norm_num_groups` {}",
                self.block_out_channels, self.norm_num_groups
            ));
        }
        for (field, types, want) in [
            (
                "down_block_types",
                &self.down_block_types,
                DOWN_ENCODER_BLOCK,
            ),
            ("up_block_types", &self.up_block_types, UP_DECODER_BLOCK),
        ] {
            if types.len() != levels {
                return Err(format!(
                    "`{field}` has {} entries but `block_out_channels` {:?} has {levels}",
                    types.len(),
                    self.block_out_channels
                ));
            }
            if let Some(t) = types.iter().find(|t| *t != want) {
                return Err(format!(
                    "`{field}` entry \"{t}\" is not supported (only \"{want}\")"
                ));
            }
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor != 0.0) {
            return Err(format!(
                "`scaling_factor` {} must be finite and non-zero",
                self.scaling_factor
            ));
        }
        if self.shift_factor.is_some_and(|s| !s.is_finite()) {
            return Err(format!(
                "`shift_factor` {:?} must be finite",
                self.shift_factor
            ));
        }
        Ok(())
    }

    /// How many times the encoder halves the image (and the decoder doubles the latents).
    pub fn downsample_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd15_config_parses_with_defaults() {
        // runwayml/stable-diffusion-v1-5 vae/config.json: no scaling_factor, no use_quant_conv.
        let text = r#"{
          "_class_name": "AutoencoderKL", "_diffusers_version": "0.6.0", "act_fn": "silu",
          "block_out_channels": [128, 256, 512, 512],
          "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D",
                               "DownEncoderBlock2D"],
          "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
          "out_channels": 3, "sample_size": 512,
          "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D",
                             "UpDecoderBlock2D"]
        }"#;
        let cfg = VaeConfig::from_json(text, "vae/config.json").unwrap();
        assert_eq!(cfg.block_out_channels, [128, 256, 512, 512]);
        assert_eq!(cfg.layers_per_block, 2);
        assert_eq!(cfg.scaling_factor, 0.18215);
        assert_eq!(cfg.shift_factor, None);
        assert!(cfg.use_quant_conv && cfg.use_post_quant_conv && cfg.mid_block_add_attention);
        assert_eq!(cfg.downsample_factor(), 8);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let check = |text: &str, needle: &str| {
            let e = VaeConfig::from_json(text, "cfg.json")
                .unwrap_err()
                .to_string();
            assert!(e.contains("cfg.json") && e.contains(needle), "{e}");
        };
        check(r#"{"block_out_channels": [64, 128]}"#, "down_block_types");
        check(
            r#"{"block_out_channels": [48], "norm_num_groups": 32}"#,
            "norm_num_groups",
        );
        check(r#"{"act_fn": "relu"}"#, "act_fn");
        check(
            r#"{"down_block_types": ["AttnDownEncoderBlock2D"]}"#,
            "AttnDownEncoderBlock2D",
        );
        check(r#"{"block_out_channels": []}"#, "block_out_channels");
        check(r#"{"scaling_factor": 0.0}"#, "scaling_factor");
        check(r#"{"latent_channels": "four"}"#, "AutoencoderKL");
    }
}
