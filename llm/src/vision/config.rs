//! The vision half of a `mistral3` config.json: the Pixtral encoder's `vision_config` and the
//! projector's top-level fields. Nothing about sizes is assumed: Small 3.1's are in the file.

use serde_json::Value;

/// Pixtral (transformers `PixtralVisionConfig`).
#[derive(Clone, Debug, PartialEq)]
pub struct PixtralConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub head_dim: usize,
    pub num_channels: usize,
    pub patch_size: usize,
    /// Longest image side in pixels; `image_size / patch_size` patches per side at most.
    pub image_size: usize,
    pub rope_theta: f32,
    /// The gated MLP's activation: `silu` or `gelu`.
    pub hidden_act: Activation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// The exact (erf) GELU, transformers' "gelu".
    Gelu,
}

impl Activation {
    fn parse(name: &str, field: &str) -> Result<Activation, String> {
        match name {
            "silu" | "swish" => Ok(Activation::Silu),
            "gelu" => Ok(Activation::Gelu),
            other => Err(format!("{field} `{other}` is not supported (silu or gelu)")),
        }
    }
}

/// `Mistral3ForConditionalGeneration`'s vision settings.
#[derive(Clone, Debug, PartialEq)]
pub struct VisionConfig {
    pub encoder: PixtralConfig,
    /// Neighbouring patches merged into one token per side (2: a token covers 28x28 pixels).
    pub spatial_merge_size: usize,
    pub image_token_index: u32,
    pub projector_hidden_act: Activation,
    pub projector_bias: bool,
    /// How many encoder layers run: `vision_feature_layer` -1 is the last hidden state (all),
    /// -2 the one before, 0 the embeddings after `ln_pre`.
    pub feature_layers: usize,
    /// The text model's width (the projector's output) and RMSNorm epsilon (the projector's norm).
    pub text_hidden_size: usize,
    pub text_rms_norm_eps: f32,
}

impl PixtralConfig {
    /// Patches per side at most (`image_size / patch_size`): the RoPE position of patch
    /// `(row, col)` is `row * max_patches_per_side + col`.
    pub fn max_patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    pub fn parameter_count(&self) -> u64 {
        let (h, f) = (self.hidden_size as u64, self.intermediate_size as u64);
        let q = (self.num_attention_heads * self.head_dim) as u64;
        let layer = 4 * h * q + 3 * h * f + 2 * h;
        let patch = h * (self.num_channels * self.patch_size * self.patch_size) as u64;
        patch + h + layer * self.num_hidden_layers as u64
    }
}

impl VisionConfig {
    /// The preprocessing this model expects: its patch and merge sizes, the longest side its
    /// RoPE table covers, mistral-common's rounding.
    pub fn processor(&self) -> super::ImageProcessor {
        super::ImageProcessor {
            patch_size: self.encoder.patch_size,
            merge: self.spatial_merge_size,
            longest_edge: self.encoder.image_size,
            rounding: super::SizeRounding::MistralCommon,
        }
    }

    /// The vision settings of a config.json, `None` when it has no `vision_config` (a text model).
    pub fn from_json(json: &Value) -> Result<Option<VisionConfig>, String> {
        let Some(vision) = json.get("vision_config").filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let model_type = json.get("model_type").and_then(Value::as_str).unwrap_or("");
        if model_type != "mistral3" {
            return Err(format!(
                "a vision_config in a `{model_type}` config: kiln reads images for mistral3 models"
            ));
        }
        let inner = vision
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("pixtral");
        if inner != "pixtral" {
            return Err(format!(
                "vision_config model_type `{inner}`: kiln's vision encoder is pixtral"
            ));
        }
        let encoder = parse_pixtral(vision)?;
        let text = json
            .get("text_config")
            .ok_or("mistral3 without text_config")?;
        let spatial_merge_size = opt_usize(json, "spatial_merge_size")?.unwrap_or(2);
        let feature_layer = match json.get("vision_feature_layer") {
            None | Some(Value::Null) => -1,
            Some(v) => v
                .as_i64()
                .ok_or("vision_feature_layer must be one integer (lists are not supported)")?,
        };
        let total = encoder.num_hidden_layers as i64 + 1;
        let index = if feature_layer < 0 {
            total + feature_layer
        } else {
            feature_layer
        };
        if !(0..total).contains(&index) {
            return Err(format!(
                "vision_feature_layer {feature_layer} is outside the encoder's {total} hidden states"
            ));
        }
        Ok(Some(VisionConfig {
            spatial_merge_size,
            image_token_index: opt_usize(json, "image_token_index")?
                .or(opt_usize(json, "image_token_id")?)
                .unwrap_or(10) as u32,
            projector_hidden_act: Activation::parse(
                json.get("projector_hidden_act")
                    .and_then(Value::as_str)
                    .unwrap_or("gelu"),
                "projector_hidden_act",
            )?,
            projector_bias: json
                .get("multimodal_projector_bias")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            feature_layers: index as usize,
            text_hidden_size: usize_field(text, "hidden_size")?,
            text_rms_norm_eps: text
                .get("rms_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-5) as f32,
            encoder,
        }))
    }
}

fn opt_usize(json: &Value, key: &str) -> Result<Option<usize>, String> {
    match json.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|&v| v > 0)
            .map(|v| Some(v as usize))
            .ok_or_else(|| format!("`{key}` is not a positive integer")),
    }
}

fn usize_field(json: &Value, key: &str) -> Result<usize, String> {
    opt_usize(json, key)?.ok_or_else(|| format!("`{key}` is missing"))
}

fn parse_pixtral(v: &Value) -> Result<PixtralConfig, String> {
    let field = |key: &str| usize_field(v, key).map_err(|e| format!("vision_config: {e}"));
    let hidden_size = field("hidden_size")?;
    let num_attention_heads = field("num_attention_heads")?;
    let head_dim = match opt_usize(v, "head_dim")? {
        Some(d) => d,
        None if hidden_size.is_multiple_of(num_attention_heads) => {
            hidden_size / num_attention_heads
        }
        None => {
            return Err("vision_config: no head_dim and hidden_size not a multiple of heads".into())
        }
    };
    if !head_dim.is_multiple_of(4) {
        return Err(format!(
            "vision_config: head_dim {head_dim} must be a multiple of 4 for 2-D RoPE"
        ));
    }
    let rope = v.get("rope_parameters").filter(|r| !r.is_null());
    let rope_theta = v
        .get("rope_theta")
        .or_else(|| rope.and_then(|r| r.get("rope_theta")))
        .and_then(Value::as_f64)
        .unwrap_or(10000.0) as f32;
    let patch_size = field("patch_size")?;
    let image_size = field("image_size")?;
    if image_size < patch_size {
        return Err(format!(
            "vision_config: image_size {image_size} is smaller than patch_size {patch_size}"
        ));
    }
    Ok(PixtralConfig {
        hidden_size,
        intermediate_size: field("intermediate_size")?,
        num_hidden_layers: field("num_hidden_layers")?,
        num_attention_heads,
        head_dim,
        num_channels: opt_usize(v, "num_channels")?.unwrap_or(3),
        patch_size,
        image_size,
        rope_theta,
        hidden_act: Activation::parse(
            v.get("hidden_act")
                .and_then(Value::as_str)
                .unwrap_or("silu"),
            "vision_config hidden_act",
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/llm/mistral3/config.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn reads_the_fixture_folder_as_transformers_wrote_it() {
        let c = VisionConfig::from_json(&fixture()).unwrap().unwrap();
        assert_eq!(c.encoder.hidden_size, 32);
        assert_eq!(c.encoder.head_dim, 16);
        assert_eq!(c.encoder.max_patches_per_side(), 4);
        assert_eq!(c.encoder.rope_theta, 10000.0);
        assert_eq!(c.feature_layers, 1);
        assert_eq!(c.text_hidden_size, 64);
        assert_eq!(c.image_token_index, 10);
        assert_eq!(c.projector_hidden_act, Activation::Gelu);
    }

    #[test]
    fn text_configs_have_no_vision_and_bad_fields_are_named() {
        let text = serde_json::json!({"model_type": "mistral", "hidden_size": 8});
        assert_eq!(VisionConfig::from_json(&text).unwrap(), None);
        let mut earlier = fixture();
        earlier["vision_feature_layer"] = serde_json::json!(-2);
        let c = VisionConfig::from_json(&earlier).unwrap().unwrap();
        assert_eq!(
            c.feature_layers, 0,
            "-2 of 1 layer: the embeddings after ln_pre"
        );
        earlier["vision_feature_layer"] = serde_json::json!(1);
        assert_eq!(
            VisionConfig::from_json(&earlier)
                .unwrap()
                .unwrap()
                .feature_layers,
            1
        );
        let mut bad = fixture();
        bad["vision_feature_layer"] = serde_json::json!(-5);
        let err = VisionConfig::from_json(&bad).unwrap_err();
        assert!(err.contains("vision_feature_layer -5"), "{err}");
        let mut bad = fixture();
        bad["vision_config"]["hidden_act"] = serde_json::json!("relu");
        let err = VisionConfig::from_json(&bad).unwrap_err();
        assert!(err.contains("relu"), "{err}");
    }
}
