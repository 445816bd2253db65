//! diffusers' `ResnetBlock2D` as the SD UNet configures it: pre-norm, SiLU, the time embedding added
//! per channel between the two convolutions ("default" time_embedding_norm), and a 1x1
//! `conv_shortcut` when the channel count changes.

use kiln_kernels::elementwise::{add, scale};
use kiln_runtime::{Result, Tensor};

use kiln_nn::weights::Weights;
use kiln_nn::{Conv2d, GroupNorm, Linear};

pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    out_channels: usize,
    /// The sum is divided by this (`output_scale_factor`; 1 except where a config sets
    /// `mid_block_scale_factor`).
    output_scale: f32,
}

/// Sizes of one resnet.
#[derive(Clone, Copy)]
pub struct ResnetSpec {
    pub cin: usize,
    pub cout: usize,
    pub temb: usize,
    pub groups: usize,
    pub eps: f32,
    pub output_scale: f32,
}

impl ResnetBlock {
    pub fn new(w: &Weights, s: &ResnetSpec) -> Result<ResnetBlock> {
        let conv_shortcut = if s.cin != s.cout {
            Some(Conv2d::new(&w.pp("conv_shortcut"), s.cin, s.cout, 1, 1, 0)?)
        } else {
            None
        };
        Ok(ResnetBlock {
            norm1: GroupNorm::new(&w.pp("norm1"), s.groups, s.cin, s.eps)?,
            conv1: Conv2d::new(&w.pp("conv1"), s.cin, s.cout, 3, 1, 1)?,
            time_emb_proj: Linear::new(&w.pp("time_emb_proj"), s.temb, s.cout, true)?,
            norm2: GroupNorm::new(&w.pp("norm2"), s.groups, s.cout, s.eps)?,
            conv2: Conv2d::new(&w.pp("conv2"), s.cout, s.cout, 3, 1, 1)?,
            conv_shortcut,
            out_channels: s.cout,
            output_scale: s.output_scale,
        })
    }

    /// `x` [B, Cin, H, W]; `temb_silu` is SiLU(time embedding) [B or 1, T], computed once per forward
    /// since every resnet applies the same activation to the same embedding.
    pub fn forward(&self, x: &Tensor, temb_silu: &Tensor) -> Result<Tensor> {
        let h = self.norm1.forward(x, true)?;
        let h = self.conv1.forward(&h)?;
        let t = self.time_emb_proj.forward(temb_silu)?;
        let t = t.reshape(&[t.dim(0), self.out_channels, 1, 1])?;
        let h = add(&h, &t)?;
        let h = self.norm2.forward(&h, true)?;
        // Dropout sits here in diffusers; it is the identity at inference.
        let h = self.conv2.forward(&h)?;
        let out = match &self.conv_shortcut {
            Some(conv) => add(&conv.forward(x)?, &h)?,
            None => add(x, &h)?,
        };
        if self.output_scale == 1.0 {
            Ok(out)
        } else {
            scale(&out, 1.0 / self.output_scale)
        }
    }
}
