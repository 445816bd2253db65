//! `config.json` of a transformers `CLIPTextModel` (the `text_encoder/` folder of a diffusers
//! pipeline). Absent fields take `CLIPTextConfig`'s defaults, as transformers fills them; fields kiln
//! does not use (dropout, initialiser ranges) are ignored. `projection_dim` is read for
//! `CLIPTextModelWithProjection` (SDXL's text_encoder_2).

use std::path::Path;

use kiln_runtime::{Error, Result};
use serde::Deserialize;

/// The MLP's activation, by transformers' `hidden_act` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum ClipActivation {
    /// `x * sigmoid(1.702 x)`: OpenAI CLIP, so SD 1.x (ViT-L/14).
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// Exact erf GELU: OpenCLIP towers converted to transformers, so SD 2.x and SD-Turbo (ViT-H/14).
    #[serde(rename = "gelu")]
    Gelu,
    /// The tanh approximation, under either of transformers' names for it.
    #[serde(rename = "gelu_pytorch_tanh", alias = "gelu_new")]
    GeluTanh,
}

/// `eos_token_id` as transformers allows it: one id, or (in some newer configs) a list.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(i64),
    Many(Vec<i64>),
}

/// transformers' `CLIPTextConfig`, with its defaults.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: ClipActivation,
    pub layer_norm_eps: f64,
    pub pad_token_id: Option<i64>,
    pub bos_token_id: Option<i64>,
    pub eos_token_id: Option<TokenIds>,
    /// Width of `text_projection` (only `CLIPTextModelWithProjection` has one).
    pub projection_dim: usize,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        ClipTextConfig {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: ClipActivation::QuickGelu,
            layer_norm_eps: 1e-5,
            pad_token_id: Some(1),
            bos_token_id: Some(49406),
            eos_token_id: Some(TokenIds::One(49407)),
            projection_dim: 512,
        }
    }
}

impl ClipTextConfig {
    /// Parses and validates `config.json` text; `origin` names it in errors.
    pub fn from_json(text: &str, origin: impl AsRef<Path>) -> Result<ClipTextConfig> {
        let origin = origin.as_ref();
        let cfg: ClipTextConfig = serde_json::from_str(text)
            .map_err(|e| Error::load(origin, format!("not a CLIPTextConfig: {e}")))?;
        cfg.validate()
            .map_err(|msg| Error::load(origin, format!("CLIPTextConfig: {msg}")))?;
        Ok(cfg)
    }

    pub fn from_file(path: impl AsRef<Path>) -> Result<ClipTextConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::load(path, format!("cannot read: {e}")))?;
        ClipTextConfig::from_json(&text, path)
    }

    /// The checks transformers makes (or would fail on later) with the field at fault.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("`{field}` must be positive"));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "`hidden_size` {} is not a multiple of `num_attention_heads` {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(format!(
                "`layer_norm_eps` {} must be positive",
                self.layer_norm_eps
            ));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}
