//! The Pixtral vision encoder (transformers `PixtralVisionModel`): patches of `patch_size`
//! pixels embedded by a bias-free convolution whose kernel equals its stride (run as a patch
//! reshape plus one GEMM, so nothing is duplicated as im2col would), `ln_pre`, then pre-norm
//! layers of non-causal attention with 2-D RoPE and a gated MLP. One image at a time: patches
//! of different images never attend to each other, which is what transformers' block-diagonal
//! mask gives, and activations stay bounded by the largest image.

use kiln_kernels::elementwise::{gelu, mul, swiglu};
use kiln_kernels::layout::permute;
use kiln_kernels::rope::RopeStyle;
use kiln_nn::weights::Weights;
use kiln_nn::{Attention, AttentionConfig, LayerWeight, Linear, RmsNorm};
use kiln_runtime::{DType, Device, Error, Result, Tensor};

use super::config::{Activation, PixtralConfig};

/// Pixtral's norms all use 1e-5 (hard-coded in transformers, not in the config).
const NORM_EPS: f32 = 1e-5;

pub struct PixtralLayer {
    pub attention_norm: RmsNorm,
    pub attention: Attention,
    pub ffn_norm: RmsNorm,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

pub struct PixtralEncoder {
    pub config: PixtralConfig,
    /// `patch_conv.weight` `[hidden, channels, p, p]` read as `[hidden, channels * p * p]`.
    pub patch_embed: Linear,
    pub ln_pre: RmsNorm,
    pub layers: Vec<PixtralLayer>,
}

impl PixtralEncoder {
    /// Builds the encoder from `w` (at `vision_tower`), with its first `layers` layers only
    /// (`vision_feature_layer`: later ones would be computed and thrown away).
    pub fn new(w: &Weights, config: &PixtralConfig, layers: usize) -> Result<PixtralEncoder> {
        let c = config;
        let p = c.patch_size;
        let conv = w.get("patch_conv.weight", &[c.hidden_size, c.num_channels, p, p])?;
        let patch_embed = Linear {
            weight: LayerWeight::Float(conv.reshape(&[c.hidden_size, c.num_channels * p * p])?),
            bias: None,
            lora: None,
        };
        let attention = AttentionConfig {
            hidden: c.hidden_size,
            heads: c.num_attention_heads,
            kv_heads: c.num_attention_heads,
            head_dim: c.head_dim,
            qkv_bias: false,
            // Rotated by the 2-D table in `forward`, not by 1-D positions.
            rope: None,
            sliding_window: None,
        };
        let layers = (0..layers)
            .map(|i| {
                let l = w.pp(format!("transformer.layers.{i}"));
                let ff = l.pp("feed_forward");
                Ok(PixtralLayer {
                    attention_norm: RmsNorm::new(&l.pp("attention_norm"), c.hidden_size, NORM_EPS)?,
                    attention: Attention::new(&l.pp("attention"), attention)?,
                    ffn_norm: RmsNorm::new(&l.pp("ffn_norm"), c.hidden_size, NORM_EPS)?,
                    gate: Linear::new(
                        &ff.pp("gate_proj"),
                        c.hidden_size,
                        c.intermediate_size,
                        false,
                    )?,
                    up: Linear::new(&ff.pp("up_proj"), c.hidden_size, c.intermediate_size, false)?,
                    down: Linear::new(
                        &ff.pp("down_proj"),
                        c.intermediate_size,
                        c.hidden_size,
                        false,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PixtralEncoder {
            config: config.clone(),
            patch_embed,
            ln_pre: RmsNorm::new(&w.pp("ln_pre"), c.hidden_size, NORM_EPS)?,
            layers,
        })
    }

    /// Encodes one image: `pixels` `[channels, H, W]` (normalised, H and W multiples of the
    /// patch size, at most `image_size`) on the model's device in `dtype`. Returns the hidden
    /// states `[H/p * W/p, hidden]`, patches in row-major order.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let p = c.patch_size;
        let shape = pixels.shape();
        let fits = shape.len() == 3
            && shape[0] == c.num_channels
            && shape[1].is_multiple_of(p)
            && shape[2].is_multiple_of(p)
            && shape[1] > 0
            && shape[2] > 0
            && shape[1] <= c.image_size
            && shape[2] <= c.image_size;
        if !fits {
            return Err(Error::shape(
                "pixtral encoder",
                format!(
                    "pixels {shape:?}: expected [{}, H, W] with H and W whole multiples of {p}, at most {}",
                    c.num_channels, c.image_size
                ),
            ));
        }
        let (rows, cols) = (shape[1] / p, shape[2] / p);
        // [C, R, p, C', p] -> [R, C', C, p, p]: each patch's pixels in the conv weight's order.
        let patches = permute(
            &pixels.reshape(&[c.num_channels, rows, p, cols, p])?,
            &[1, 3, 0, 2, 4],
        )?
        .reshape(&[rows * cols, c.num_channels * p * p])?;
        let mut x = self.ln_pre.forward(&self.patch_embed.forward(&patches)?)?;
        let (cos, sin) = rope_table(c, rows, cols, pixels.device())?;
        for layer in &self.layers {
            let h = layer.attention_norm.forward(&x)?;
            let attn = layer
                .attention
                .forward_table(&h, &cos, &sin, RopeStyle::HalfSplit)?;
            let (residual, h) = layer.ffn_norm.forward_residual(&attn, &x)?;
            let gate = layer.gate.forward(&h)?;
            let up = layer.up.forward(&h)?;
            let act = match c.hidden_act {
                Activation::Silu => swiglu(&gate, &up)?,
                Activation::Gelu => mul(&gelu(&gate)?, &up)?,
            };
            x = kiln_kernels::elementwise::add(&layer.down.forward(&act)?, &residual)?;
        }
        Ok(x)
    }
}

/// Pixtral's 2-D rotary table for a `rows x cols` patch grid, as transformers builds it:
/// `freqs = 1 / theta^(2j / d)`; pair `i < d/4` turns by `row * freqs[2i]`, pair `d/4 + i` by
/// `col * freqs[2i + 1]` (rows take the even, columns the odd frequencies), angles in f32.
/// Returns F32 `cos`, `sin` `[rows * cols, d/2]` on `device`.
pub fn rope_table(
    c: &PixtralConfig,
    rows: usize,
    cols: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let d = c.head_dim;
    let half = d / 2;
    let quarter = d / 4;
    let freqs: Vec<f32> = (0..half)
        .map(|j| 1.0 / c.rope_theta.powf((2 * j) as f32 / d as f32))
        .collect();
    let mut cos = Vec::with_capacity(rows * cols * half);
    let mut sin = Vec::with_capacity(rows * cols * half);
    for r in 0..rows {
        for col in 0..cols {
            for i in 0..half {
                let angle = if i < quarter {
                    r as f32 * freqs[2 * i]
                } else {
                    col as f32 * freqs[2 * (i - quarter) + 1]
                };
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
    }
    let shape = [rows * cols, half];
    Ok((
        Tensor::from_f32(device, &shape, DType::F32, &cos)?,
        Tensor::from_f32(device, &shape, DType::F32, &sin)?,
    ))
}
