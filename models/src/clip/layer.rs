//! `CLIPEncoderLayer`: pre-norm residual attention then pre-norm residual MLP.

use kiln_kernels::elementwise::add;
use kiln_runtime::{Result, Tensor};

use super::attention::ClipAttention;
use super::config::ClipTextConfig;
use super::mlp::ClipMlp;
use kiln_nn::weights::Weights;
use kiln_nn::LayerNorm;

pub struct ClipEncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: ClipAttention,
    layer_norm2: LayerNorm,
    mlp: ClipMlp,
}

impl ClipEncoderLayer {
    /// `w` is `...encoder.layers.N`.
    pub fn new(cfg: &ClipTextConfig, w: &Weights) -> Result<ClipEncoderLayer> {
        let (d, eps) = (cfg.hidden_size, cfg.layer_norm_eps as f32);
        Ok(ClipEncoderLayer {
            layer_norm1: LayerNorm::new(&w.pp("layer_norm1"), d, eps)?,
            self_attn: ClipAttention::new(cfg, &w.pp("self_attn"))?,
            layer_norm2: LayerNorm::new(&w.pp("layer_norm2"), d, eps)?,
            mlp: ClipMlp::new(cfg, &w.pp("mlp"))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.self_attn.forward(&self.layer_norm1.forward(x)?)?;
        let x = add(x, &h)?;
        let h = self.mlp.forward(&self.layer_norm2.forward(&x)?)?;
        add(&x, &h)
    }
}
