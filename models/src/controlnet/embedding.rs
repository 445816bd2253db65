//! diffusers' `ControlNetConditioningEmbedding`: the control image (full pixel resolution) down to
//! the latent size through 3x3 convs with SiLU, the stride-2 ones halving it once per step of
//! `conditioning_embedding_out_channels`, ending in a (zero-initialised) conv to the UNet's first
//! width, which is added to conv_in's output.

use kiln_kernels::elementwise::silu;
use kiln_runtime::{Result, Tensor};

use kiln_nn::weights::Weights;
use kiln_nn::Conv2d;

pub struct CondEmbedding {
    conv_in: Conv2d,
    /// Pairs of (same-width conv, stride-2 conv to the next width), flattened as diffusers'
    /// `blocks`.
    blocks: Vec<Conv2d>,
    conv_out: Conv2d,
}

impl CondEmbedding {
    /// `w` is `controlnet_cond_embedding`; `widths` the `conditioning_embedding_out_channels`.
    pub fn new(w: &Weights, cin: usize, widths: &[usize], cout: usize) -> Result<CondEmbedding> {
        let conv_in = Conv2d::new(&w.pp("conv_in"), cin, widths[0], 3, 1, 1)?;
        let mut blocks = Vec::with_capacity(2 * widths.len());
        for (i, pair) in widths.windows(2).enumerate() {
            let (a, b) = (pair[0], pair[1]);
            blocks.push(Conv2d::new(
                &w.pp(format!("blocks.{}", 2 * i)),
                a,
                a,
                3,
                1,
                1,
            )?);
            blocks.push(Conv2d::new(
                &w.pp(format!("blocks.{}", 2 * i + 1)),
                a,
                b,
                3,
                2,
                1,
            )?);
        }
        let last = widths[widths.len() - 1];
        let conv_out = Conv2d::new(&w.pp("conv_out"), last, cout, 3, 1, 1)?;
        Ok(CondEmbedding {
            conv_in,
            blocks,
            conv_out,
        })
    }

    /// How many times the embedding halves the image (the latent size is the image size over
    /// `2^downsamples`).
    pub fn downsamples(&self) -> usize {
        self.blocks.len() / 2
    }

    pub fn forward(&self, cond: &Tensor) -> Result<Tensor> {
        let mut h = silu(&self.conv_in.forward(cond)?)?;
        for block in &self.blocks {
            h = silu(&block.forward(&h)?)?;
        }
        self.conv_out.forward(&h)
    }
}
