//! diffusers' `ControlNetModel` config.json: the UNet encoder's fields (read by [`UnetConfig`], with
//! `up_block_types` mirrored from the down blocks since a ControlNet has no up path) plus the
//! ControlNet's own: the conditioning image's channels and embedding, its channel order and
//! `global_pool_conditions`.

use std::path::Path;

use kiln_runtime::{Error, Result};
use serde::Deserialize;

use crate::unet::{Resolved, UnetConfig};

const OP: &str = "controlnet config";

fn three() -> usize {
    3
}

fn embedding_channels() -> Vec<usize> {
    vec![16, 32, 96, 256]
}

fn rgb() -> String {
    "rgb".into()
}

#[derive(Clone, Debug, Deserialize)]
struct Own {
    #[serde(default = "three")]
    conditioning_channels: usize,
    #[serde(default = "embedding_channels")]
    conditioning_embedding_out_channels: Vec<usize>,
    #[serde(default = "rgb")]
    controlnet_conditioning_channel_order: String,
    #[serde(default)]
    global_pool_conditions: bool,
}

#[derive(Clone, Debug)]
pub struct ControlNetConfig {
    /// The encoder half, as a UNet config.
    pub unet: UnetConfig,
    /// Channels of the control image (3 for RGB hints).
    pub conditioning_channels: usize,
    /// `controlnet_cond_embedding`'s conv widths.
    pub conditioning_embedding_out_channels: Vec<usize>,
    /// The control image's channels arrive in BGR order (flipped before the embedding).
    pub bgr: bool,
    /// Residuals averaged over the plane (the shuffle ControlNet); implies guess mode.
    pub global_pool_conditions: bool,
}

impl ControlNetConfig {
    pub fn from_json(text: &str) -> Result<ControlNetConfig> {
        let parse = |e: serde_json::Error| {
            Error::shape(OP, format!("cannot parse ControlNet config.json: {e}"))
        };
        let mut value: serde_json::Value = serde_json::from_str(text).map_err(parse)?;
        let own: Own = serde_json::from_value(value.clone()).map_err(parse)?;
        if let Some(map) = value.as_object_mut() {
            // The UNet config's defaults are SD 1.5's four levels; a ControlNet's encoder has
            // exactly its down blocks' levels, so give the resolver a matching up path.
            let downs = map
                .get("down_block_types")
                .cloned()
                .unwrap_or(serde_json::json!([
                    "CrossAttnDownBlock2D",
                    "CrossAttnDownBlock2D",
                    "CrossAttnDownBlock2D",
                    "DownBlock2D"
                ]));
            let ups: Vec<serde_json::Value> = downs
                .as_array()
                .map(|a| {
                    a.iter()
                        .rev()
                        .map(|t| match t.as_str() {
                            Some("CrossAttnDownBlock2D") => "CrossAttnUpBlock2D".into(),
                            _ => "UpBlock2D".into(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            map.insert("up_block_types".into(), ups.into());
        }
        let unet: UnetConfig = serde_json::from_value(value).map_err(parse)?;
        let config = ControlNetConfig {
            unet,
            conditioning_channels: own.conditioning_channels,
            conditioning_embedding_out_channels: own.conditioning_embedding_out_channels,
            bgr: match own.controlnet_conditioning_channel_order.as_str() {
                "rgb" => false,
                "bgr" => true,
                other => {
                    return Err(Error::shape(
                        OP,
                        format!("controlnet_conditioning_channel_order {other:?}: expected \"rgb\" or \"bgr\""),
                    ))
                }
            },
            global_pool_conditions: own.global_pool_conditions,
        };
        config.resolve()?;
        Ok(config)
    }

    pub fn from_file(path: impl AsRef<Path>) -> Result<ControlNetConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::load(path, e.to_string()))?;
        ControlNetConfig::from_json(&text).map_err(|e| Error::load(path, e.to_string()))
    }

    /// The encoder's levels, after the ControlNet's own checks.
    pub fn resolve(&self) -> Result<Resolved> {
        let resolved = self.unet.resolve()?;
        if self.conditioning_channels == 0 || self.conditioning_embedding_out_channels.is_empty() {
            return Err(Error::shape(
                OP,
                "conditioning_channels and conditioning_embedding_out_channels must be non-empty",
            ));
        }
        Ok(resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// lllyasviel/control_v11p_sd15_canny's config.json fields that differ from the defaults.
    #[test]
    fn sd15_controlnet_config() {
        let cfg = ControlNetConfig::from_json(
            r#"{"_class_name": "ControlNetModel", "attention_head_dim": 8,
            "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768,
            "conditioning_embedding_out_channels": [16, 32, 96, 256]}"#,
        )
        .unwrap();
        let r = cfg.resolve().unwrap();
        assert_eq!(r.levels.len(), 4);
        assert_eq!(r.up_attention, [false, true, true, true]);
        assert_eq!(crate::unet::skip_count(&r), 12);
        assert!(!cfg.bgr && !cfg.global_pool_conditions);
        assert_eq!(cfg.conditioning_channels, 3);
    }

    #[test]
    fn refuses_bad_channel_order() {
        let err =
            ControlNetConfig::from_json(r#"{"controlnet_conditioning_channel_order": "xyz"}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("channel_order"), "{err}");
    }
}
