//! diffusers' VAE `Decoder`: latents -> image, 2^(levels - 1) times larger.

use kiln_runtime::{Result, Tensor};

use super::blocks::{MidBlock, UpDecoderBlock};
use super::resnet::VAE_NORM_EPS;
use super::VaeConfig;
use kiln_nn::weights::Weights;
use kiln_nn::{Conv2d, GroupNorm};

pub struct Decoder {
    conv_in: Conv2d,
    mid: MidBlock,
    up: Vec<UpDecoderBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    /// `w` is the `decoder` prefix.
    pub fn new(w: &Weights, cfg: &VaeConfig) -> Result<Decoder> {
        let groups = cfg.norm_num_groups;
        // The up path walks the widths deepest first.
        let rev: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let up = rev
            .iter()
            .enumerate()
            .map(|(i, &cout)| {
                let cin = if i == 0 { rev[0] } else { rev[i - 1] };
                let last = i + 1 == rev.len();
                UpDecoderBlock::new(
                    &w.pp(format!("up_blocks.{i}")),
                    cin,
                    cout,
                    cfg.layers_per_block + 1,
                    groups,
                    !last,
                )
            })
            .collect::<Result<_>>()?;
        let widest = rev[rev.len() - 1];
        Ok(Decoder {
            conv_in: Conv2d::new(&w.pp("conv_in"), cfg.latent_channels, rev[0], 3, 1, 1)?,
            mid: MidBlock::new(
                &w.pp("mid_block"),
                rev[0],
                groups,
                cfg.mid_block_add_attention,
            )?,
            up,
            norm_out: GroupNorm::new(&w.pp("conv_norm_out"), groups, widest, VAE_NORM_EPS)?,
            conv_out: Conv2d::new(&w.pp("conv_out"), widest, cfg.out_channels, 3, 1, 1)?,
        })
    }

    pub fn forward(&self, latents: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(latents)?;
        h = self.mid.forward(&h)?;
        for block in &self.up {
            h = block.forward(&h)?;
        }
        self.conv_out.forward(&self.norm_out.forward(&h, true)?)
    }
}
