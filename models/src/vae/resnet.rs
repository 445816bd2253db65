//! diffusers' `ResnetBlock2D` as the VAE builds it: no time embedding, eps 1e-6, SiLU, output scale 1,
//! and a 1x1 `conv_shortcut` only when the channel count changes.

use kiln_kernels::elementwise::add;
use kiln_runtime::{Result, Tensor};

use kiln_nn::weights::Weights;
use kiln_nn::{Conv2d, GroupNorm};

/// GroupNorm eps of every VAE norm (resnets, mid attention, conv_norm_out): diffusers hard-codes it.
pub const VAE_NORM_EPS: f32 = 1e-6;

pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    pub fn new(w: &Weights, cin: usize, cout: usize, groups: usize) -> Result<ResnetBlock> {
        Ok(ResnetBlock {
            norm1: GroupNorm::new(&w.pp("norm1"), groups, cin, VAE_NORM_EPS)?,
            conv1: Conv2d::new(&w.pp("conv1"), cin, cout, 3, 1, 1)?,
            norm2: GroupNorm::new(&w.pp("norm2"), groups, cout, VAE_NORM_EPS)?,
            conv2: Conv2d::new(&w.pp("conv2"), cout, cout, 3, 1, 1)?,
            shortcut: if cin != cout {
                Some(Conv2d::new(&w.pp("conv_shortcut"), cin, cout, 1, 1, 0)?)
            } else {
                None
            },
        })
    }

    /// `x + conv2(silu(norm2(conv1(silu(norm1(x))))))`, with `x` through the shortcut if present.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward(x, true)?)?;
        let h = self.conv2.forward(&self.norm2.forward(&h, true)?)?;
        match &self.shortcut {
            Some(conv) => add(&conv.forward(x)?, &h),
            None => add(x, &h),
        }
    }
}
