//! diffusers' VAE `Encoder`: image -> 2 x latent_channels moments (mean and log-variance, stacked on
//! the channel axis), at 1 / 2^(levels - 1) of the image size.

use kiln_runtime::{Result, Tensor};

use super::blocks::{DownEncoderBlock, MidBlock};
use super::resnet::VAE_NORM_EPS;
use super::VaeConfig;
use kiln_nn::weights::Weights;
use kiln_nn::{Conv2d, GroupNorm};

pub struct Encoder {
    conv_in: Conv2d,
    down: Vec<DownEncoderBlock>,
    mid: MidBlock,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    /// `w` is the `encoder` prefix.
    pub fn new(w: &Weights, cfg: &VaeConfig) -> Result<Encoder> {
        let ch = &cfg.block_out_channels;
        let groups = cfg.norm_num_groups;
        let deepest = ch[ch.len() - 1];
        let down = ch
            .iter()
            .enumerate()
            .map(|(i, &cout)| {
                let cin = if i == 0 { ch[0] } else { ch[i - 1] };
                let last = i + 1 == ch.len();
                DownEncoderBlock::new(
                    &w.pp(format!("down_blocks.{i}")),
                    cin,
                    cout,
                    cfg.layers_per_block,
                    groups,
                    !last,
                )
            })
            .collect::<Result<_>>()?;
        Ok(Encoder {
            conv_in: Conv2d::new(&w.pp("conv_in"), cfg.in_channels, ch[0], 3, 1, 1)?,
            down,
            mid: MidBlock::new(
                &w.pp("mid_block"),
                deepest,
                groups,
                cfg.mid_block_add_attention,
            )?,
            norm_out: GroupNorm::new(&w.pp("conv_norm_out"), groups, deepest, VAE_NORM_EPS)?,
            // double_z: the mean and the log-variance.
            conv_out: Conv2d::new(&w.pp("conv_out"), deepest, 2 * cfg.latent_channels, 3, 1, 1)?,
        })
    }

    pub fn forward(&self, image: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(image)?;
        for block in &self.down {
            h = block.forward(&h)?;
        }
        h = self.mid.forward(&h)?;
        self.conv_out.forward(&self.norm_out.forward(&h, true)?)
    }
}
