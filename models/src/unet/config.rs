//! diffusers' `UNet2DConditionModel` config.json, read with its own field names and defaults, checked,
//! and resolved into one plain description per resolution level.

use std::path::Path;

use kiln_runtime::{Error, Result};

use super::added::AddedSpec;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

const OP: &str = "unet config";

/// A config value diffusers accepts either once for every block or as one entry per down block.
#[derive(Clone, Debug, PartialEq)]
pub enum PerBlock<T> {
    One(T),
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// The value for each of `n` blocks; `field` names the config entry in the error.
    pub fn expand(&self, n: usize, field: &str) -> Result<Vec<T>> {
        match self {
            PerBlock::One(v) => Ok(vec![v.clone(); n]),
            PerBlock::Each(list) if list.len() == n => Ok(list.clone()),
            PerBlock::Each(list) => Err(Error::shape(
                OP,
                format!(
                    "`{field}` has {} entries but there are {n} down blocks",
                    list.len()
                ),
            )),
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for PerBlock<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        // Decide on the JSON shape first so a wrong value gets a plain message rather than serde's
        // "data did not match any variant of untagged enum".
        let value = serde_json::Value::deserialize(d)?;
        let parsed = match value {
            serde_json::Value::Array(items) => items
                .into_iter()
                .map(serde_json::from_value)
                .collect::<std::result::Result<Vec<T>, _>>()
                .map(PerBlock::Each),
            other => serde_json::from_value(other).map(PerBlock::One),
        };
        parsed.map_err(|e| {
            serde::de::Error::custom(format!(
                "expected one value or a flat list with one per down block: {e}"
            ))
        })
    }
}

/// A config error (generic, unlike a closure, so every caller can use it whatever it returns).
fn bad<T>(msg: String) -> Result<T> {
    Err(Error::shape(OP, msg))
}

macro_rules! default_fn {
    ($name:ident, $ty:ty, $value:expr) => {
        fn $name() -> $ty {
            $value
        }
    };
}

default_fn!(four, usize, 4);
default_fn!(three, usize, 3);
default_fn!(one, usize, 1);
default_fn!(yes, bool, true);
default_fn!(one_f32, f32, 1.0);
default_fn!(eps_1e5, f32, 1e-5);
default_fn!(groups_32, Option<usize>, Some(32));
default_fn!(block_out, Vec<usize>, vec![320, 640, 1280, 1280]);
default_fn!(layers_2, PerBlock<usize>, PerBlock::One(2));
default_fn!(heads_8, PerBlock<usize>, PerBlock::One(8));
default_fn!(cross_1280, PerBlock<usize>, PerBlock::One(1280));
default_fn!(depth_1, PerBlock<usize>, PerBlock::One(1));
default_fn!(no_bool, PerBlock<bool>, PerBlock::One(false));
default_fn!(silu, String, "silu".into());
default_fn!(default_str, String, "default".into());
default_fn!(positional, String, "positional".into());
default_fn!(
    mid_cross,
    Option<String>,
    Some("UNetMidBlock2DCrossAttn".into())
);
default_fn!(
    down_types,
    Vec<String>,
    [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D"
    ]
    .map(String::from)
    .to_vec()
);
default_fn!(
    up_types,
    Vec<String>,
    [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D"
    ]
    .map(String::from)
    .to_vec()
);

/// The fields of diffusers' `UNet2DConditionModel` config that SD 1.x / 2.x (and inpainting)
/// checkpoints use, with diffusers' defaults. Fields for features kiln does not implement yet are
/// read only so `validate` can refuse a config that sets them, instead of silently ignoring them.
/// Unknown fields (`_class_name`, `sample_size`, `dropout`, ...) are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct UnetConfig {
    #[serde(default = "four")]
    pub in_channels: usize,
    #[serde(default = "four")]
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f32,
    #[serde(default = "down_types")]
    pub down_block_types: Vec<String>,
    #[serde(default = "mid_cross")]
    pub mid_block_type: Option<String>,
    #[serde(default = "up_types")]
    pub up_block_types: Vec<String>,
    #[serde(default = "no_bool")]
    pub only_cross_attention: PerBlock<bool>,
    #[serde(default = "block_out")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "layers_2")]
    pub layers_per_block: PerBlock<usize>,
    #[serde(default = "one")]
    pub downsample_padding: usize,
    #[serde(default = "one_f32")]
    pub mid_block_scale_factor: f32,
    #[serde(default = "silu")]
    pub act_fn: String,
    #[serde(default = "groups_32")]
    pub norm_num_groups: Option<usize>,
    #[serde(default = "eps_1e5")]
    pub norm_eps: f32,
    #[serde(default = "cross_1280")]
    pub cross_attention_dim: PerBlock<usize>,
    #[serde(default = "depth_1")]
    pub transformer_layers_per_block: PerBlock<usize>,
    /// In SD configs this is the number of heads, not their width (diffusers issue #2011): diffusers
    /// uses it as the head count whenever `num_attention_heads` is absent.
    #[serde(default = "heads_8")]
    pub attention_head_dim: PerBlock<usize>,
    /// The head count under its correct name; wins over `attention_head_dim` when set.
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    #[serde(default)]
    pub use_linear_projection: bool,
    /// Attention in f32 for f16 models (SD 2.1 sets it; SDXL's config has null). kiln's attention
    /// kernel always computes scores and softmax in f32, so this needs no separate path.
    #[serde(default)]
    pub upcast_attention: Option<bool>,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default = "three")]
    pub conv_in_kernel: usize,
    #[serde(default = "three")]
    pub conv_out_kernel: usize,

    // Features of other UNet2DConditionModel variants, refused by `validate` when set.
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    /// SDXL's `"text_time"`: the pooled text embedding and size numbers added to the time
    /// embedding (`added.rs`); other kinds are refused.
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    /// Sinusoid width per added time number (SDXL: 256).
    #[serde(default)]
    pub addition_time_embed_dim: Option<usize>,
    /// Input width of `add_embedding` (SDXL base: 2816 = 1280 + 6 x 256; refiner 2560 = 1280 + 5 x 256).
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<usize>,
    #[serde(default)]
    pub encoder_hid_dim_type: Option<String>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    #[serde(default)]
    pub time_embedding_act_fn: Option<String>,
    #[serde(default)]
    pub timestep_post_act: Option<String>,
    #[serde(default)]
    pub cross_attention_norm: Option<String>,
    #[serde(default)]
    pub reverse_transformer_layers_per_block: Option<serde_json::Value>,
    #[serde(default)]
    pub class_embeddings_concat: bool,
    #[serde(default = "default_str")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "positional")]
    pub time_embedding_type: String,
    #[serde(default = "default_str")]
    pub attention_type: String,
}

/// One resolution level of the down path (the up path visits them in reverse).
#[derive(Clone, Debug, PartialEq)]
pub struct Level {
    pub channels: usize,
    pub layers: usize,
    pub heads: usize,
    /// Transformer blocks per Transformer2DModel.
    pub depth: usize,
    pub cross_attention_dim: usize,
}

/// Which block kinds are used where, and the sizes each needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub levels: Vec<Level>,
    /// Per down block: CrossAttnDownBlock2D (true) or DownBlock2D.
    pub down_attention: Vec<bool>,
    /// Per up block, in the order of `up_block_types`: CrossAttnUpBlock2D (true) or UpBlock2D.
    pub up_attention: Vec<bool>,
    pub mid_block: bool,
    pub groups: usize,
    /// Width of the sinusoidal timestep features (`block_out_channels[0]`).
    pub time_proj_dim: usize,
    /// Width of the time embedding every resnet receives.
    pub time_embed_dim: usize,
    /// SDXL's added conditioning (`addition_embed_type: "text_time"`).
    pub added: Option<AddedSpec>,
}

impl UnetConfig {
    /// Parses and validates a config.json text.
    pub fn from_json(text: &str) -> Result<UnetConfig> {
        let cfg: UnetConfig = serde_json::from_str(text)
            .map_err(|e| Error::shape(OP, format!("cannot parse UNet config.json: {e}")))?;
        cfg.resolve()?;
        Ok(cfg)
    }

    /// Reads and validates `path` (a diffusers `unet/config.json`).
    pub fn from_file(path: impl AsRef<Path>) -> Result<UnetConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::load(path, e.to_string()))?;
        UnetConfig::from_json(&text).map_err(|e| Error::load(path, e.to_string()))
    }

    /// Checks every field kiln relies on and expands per-block values, as diffusers'
    /// `UNet2DConditionModel.__init__` does.
    pub fn resolve(&self) -> Result<Resolved> {
        self.refuse_unsupported()?;
        let n = self.down_block_types.len();
        if n == 0 {
            return bad("`down_block_types` is empty".into());
        }
        if self.block_out_channels.len() != n || self.up_block_types.len() != n {
            return bad(format!(
                "`block_out_channels` ({}), `down_block_types` ({n}) and `up_block_types` ({}) must have the same length",
                self.block_out_channels.len(),
                self.up_block_types.len()
            ));
        }
        let Some(groups) = self.norm_num_groups else {
            return bad("`norm_num_groups` null (no output GroupNorm) is not supported".into());
        };
        let heads = self
            .num_attention_heads
            .as_ref()
            .unwrap_or(&self.attention_head_dim);
        let heads_field = if self.num_attention_heads.is_some() {
            "num_attention_heads"
        } else {
            "attention_head_dim"
        };
        let layers = self.layers_per_block.expand(n, "layers_per_block")?;
        let heads = heads.expand(n, heads_field)?;
        let depth = self
            .transformer_layers_per_block
            .expand(n, "transformer_layers_per_block")?;
        let cross = self.cross_attention_dim.expand(n, "cross_attention_dim")?;
        if self
            .only_cross_attention
            .expand(n, "only_cross_attention")?
            .contains(&true)
        {
            return bad("`only_cross_attention` true is not supported".into());
        }
        let mut levels = Vec::with_capacity(n);
        for i in 0..n {
            let channels = self.block_out_channels[i];
            if channels == 0 || !channels.is_multiple_of(groups) {
                return bad(format!(
                    "block_out_channels[{i}] = {channels} does not split into norm_num_groups = {groups}"
                ));
            }
            if heads[i] == 0 || !channels.is_multiple_of(heads[i]) {
                return bad(format!(
                    "block_out_channels[{i}] = {channels} does not split into {heads_field}[{i}] = {} heads",
                    heads[i]
                ));
            }
            if layers[i] == 0 || depth[i] == 0 || cross[i] == 0 {
                return bad(format!(
                    "block {i}: layers_per_block, transformer_layers_per_block and cross_attention_dim must be positive"
                ));
            }
            levels.push(Level {
                channels,
                layers: layers[i],
                heads: heads[i],
                depth: depth[i],
                cross_attention_dim: cross[i],
            });
        }
        let down_attention = self
            .down_block_types
            .iter()
            .enumerate()
            .map(|(i, t)| match t.as_str() {
                "CrossAttnDownBlock2D" => Ok(true),
                "DownBlock2D" => Ok(false),
                other => bad(format!(
                    "down_block_types[{i}] = {other:?}: kiln implements CrossAttnDownBlock2D and DownBlock2D"
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let up_attention = self
            .up_block_types
            .iter()
            .enumerate()
            .map(|(i, t)| match t.as_str() {
                "CrossAttnUpBlock2D" => Ok(true),
                "UpBlock2D" => Ok(false),
                other => bad(format!(
                    "up_block_types[{i}] = {other:?}: kiln implements CrossAttnUpBlock2D and UpBlock2D"
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let mid_block = match self.mid_block_type.as_deref() {
            Some("UNetMidBlock2DCrossAttn") => true,
            None => false,
            Some(other) => {
                return bad(format!(
                    "mid_block_type {other:?}: kiln implements UNetMidBlock2DCrossAttn (or null)"
                ))
            }
        };
        for (field, k) in [
            ("conv_in_kernel", self.conv_in_kernel),
            ("conv_out_kernel", self.conv_out_kernel),
        ] {
            if k % 2 == 0 {
                return bad(format!(
                    "`{field}` = {k}: only odd kernel sizes keep the size"
                ));
            }
        }
        let time_proj_dim = self.block_out_channels[0];
        let added = self.added_spec()?;
        Ok(Resolved {
            levels,
            down_attention,
            up_attention,
            mid_block,
            groups,
            time_proj_dim,
            time_embed_dim: self.time_embedding_dim.unwrap_or(4 * time_proj_dim),
            added,
        })
    }

    /// `addition_embed_type` "text_time" with both of its sizes, or nothing.
    fn added_spec(&self) -> Result<Option<AddedSpec>> {
        match self.addition_embed_type.as_deref() {
            None => Ok(None),
            Some("text_time") => {
                match (self.addition_time_embed_dim, self.projection_class_embeddings_input_dim) {
                    (Some(time_dim), Some(input_dim)) if time_dim > 0 && input_dim > 0 => {
                        Ok(Some(AddedSpec { time_dim, input_dim }))
                    }
                    (t, p) => bad(format!(
                        "addition_embed_type \"text_time\" needs positive `addition_time_embed_dim` \
                         and `projection_class_embeddings_input_dim`, found {t:?} and {p:?}"
                    )),
                }
            }
            Some(other) => bad(format!(
                "`addition_embed_type` = {other:?} is not supported by kiln's UNet yet (it runs \"text_time\", SDXL's)"
            )),
        }
    }

    fn refuse_unsupported(&self) -> Result<()> {
        let set = |field: &str, value: &dyn std::fmt::Debug| {
            Err(Error::shape(
                OP,
                format!("`{field}` = {value:?} is not supported by kiln's UNet yet"),
            ))
        };
        let options: [(&str, &Option<String>); 5] = [
            ("class_embed_type", &self.class_embed_type),
            ("encoder_hid_dim_type", &self.encoder_hid_dim_type),
            ("time_embedding_act_fn", &self.time_embedding_act_fn),
            ("timestep_post_act", &self.timestep_post_act),
            ("cross_attention_norm", &self.cross_attention_norm),
        ];
        for (field, value) in options {
            if let Some(v) = value {
                return set(field, v);
            }
        }
        if let Some(v) = self.num_class_embeds {
            return set("num_class_embeds", &v);
        }
        if let Some(v) = self.time_cond_proj_dim {
            // LCM-distilled UNets embed the guidance scale through this projection.
            return set("time_cond_proj_dim", &v);
        }
        if let Some(v) = &self.reverse_transformer_layers_per_block {
            return set("reverse_transformer_layers_per_block", v);
        }
        if self.dual_cross_attention {
            return set("dual_cross_attention", &true);
        }
        if self.class_embeddings_concat {
            return set("class_embeddings_concat", &true);
        }
        let names: [(&str, &str, &[&str]); 4] = [
            ("act_fn", &self.act_fn, &["silu", "swish"]),
            (
                "resnet_time_scale_shift",
                &self.resnet_time_scale_shift,
                &["default"],
            ),
            (
                "time_embedding_type",
                &self.time_embedding_type,
                &["positional"],
            ),
            ("attention_type", &self.attention_type, &["default"]),
        ];
        for (field, value, allowed) in names {
            if !allowed.contains(&value) {
                return set(field, &value);
            }
        }
        if self.downsample_padding != 1 {
            // 0 means an asymmetric (0, 1, 0, 1) pad before the stride-2 conv; no SD model uses it.
            return set("downsample_padding", &self.downsample_padding);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_sd15() {
        let cfg = UnetConfig::from_json("{}").unwrap();
        let r = cfg.resolve().unwrap();
        assert_eq!(r.levels.len(), 4);
        assert_eq!(r.levels[0].heads, 8);
        assert_eq!(r.levels[3].channels, 1280);
        assert_eq!(r.down_attention, [true, true, true, false]);
        assert_eq!(r.up_attention, [false, true, true, true]);
        assert_eq!((r.time_proj_dim, r.time_embed_dim), (320, 1280));
    }

    #[test]
    fn head_lists_and_num_attention_heads() {
        let cfg = UnetConfig::from_json(r#"{"attention_head_dim": [5, 10, 20, 20]}"#).unwrap();
        let heads: Vec<_> = cfg
            .resolve()
            .unwrap()
            .levels
            .iter()
            .map(|l| l.heads)
            .collect();
        assert_eq!(heads, [5, 10, 20, 20]);
        let cfg = UnetConfig::from_json(r#"{"attention_head_dim": 64, "num_attention_heads": 4}"#)
            .unwrap();
        assert_eq!(cfg.resolve().unwrap().levels[0].heads, 4);
    }

    /// stabilityai/stable-diffusion-xl-base-1.0's and -refiner-1.0's unet/config.json (the fields
    /// that differ from diffusers' defaults, `upcast_attention: null` included).
    #[test]
    fn sdxl_base_and_refiner_configs_resolve() {
        let base = r#"{"addition_embed_type": "text_time", "addition_embed_type_num_heads": 64,
            "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20],
            "block_out_channels": [320, 640, 1280], "cross_attention_dim": 2048,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "encoder_hid_dim": null, "mid_block_only_cross_attention": null,
            "projection_class_embeddings_input_dim": 2816, "resnet_out_scale_factor": 1.0,
            "resnet_skip_time_act": false, "sample_size": 128,
            "transformer_layers_per_block": [1, 2, 10],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            "upcast_attention": null, "use_linear_projection": true}"#;
        let r = UnetConfig::from_json(base).unwrap().resolve().unwrap();
        let depth: Vec<_> = r.levels.iter().map(|l| l.depth).collect();
        assert_eq!(depth, [1, 2, 10]);
        assert_eq!(r.down_attention, [false, true, true]);
        assert_eq!(
            r.added,
            Some(AddedSpec {
                time_dim: 256,
                input_dim: 2816
            })
        );
        let refiner = r#"{"addition_embed_type": "text_time", "addition_time_embed_dim": 256,
            "attention_head_dim": [6, 12, 24, 24], "block_out_channels": [384, 768, 1536, 1536],
            "cross_attention_dim": 1280,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            "projection_class_embeddings_input_dim": 2560, "sample_size": 128,
            "transformer_layers_per_block": 4,
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            "upcast_attention": null, "use_linear_projection": true}"#;
        let r = UnetConfig::from_json(refiner).unwrap().resolve().unwrap();
        assert_eq!(r.levels[0].heads, 6);
        assert_eq!(r.down_attention, [false, true, true, false]);
        assert_eq!(r.up_attention, [false, true, true, false]);
        assert_eq!(
            r.added,
            Some(AddedSpec {
                time_dim: 256,
                input_dim: 2560
            })
        );
    }

    #[test]
    fn refuses_what_it_cannot_run() {
        for (json, needle) in [
            (r#"{"attention_head_dim": [8, 8]}"#, "attention_head_dim"),
            (r#"{"addition_embed_type": "text"}"#, "addition_embed_type"),
            (
                r#"{"addition_embed_type": "text_time"}"#,
                "addition_time_embed_dim",
            ),
            (r#"{"time_cond_proj_dim": 256}"#, "time_cond_proj_dim"),
            (r#"{"attention_head_dim": 7}"#, "does not split"),
            (
                r#"{"transformer_layers_per_block": [[1], [2]]}"#,
                "flat list",
            ),
            (
                r#"{"mid_block_type": "UNetMidBlock2DSimpleCrossAttn"}"#,
                "mid_block_type",
            ),
        ] {
            let err = UnetConfig::from_json(json).unwrap_err().to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
