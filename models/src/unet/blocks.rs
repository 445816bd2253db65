//! The UNet's blocks: `CrossAttnDownBlock2D` / `DownBlock2D`, `UNetMidBlock2DCrossAttn`, and
//! `CrossAttnUpBlock2D` / `UpBlock2D`. A block without attention is the same block with an empty
//! transformer list, so each pair shares one struct.
//!
//! Skip connections: the UNet keeps one stack. Every down resnet (after its transformer, if any) and
//! every downsampler pushes its output; every up resnet pops one and concatenates it after its input
//! along channels, as diffusers' `res_hidden_states_tuple[-1]`.

use kiln_kernels::layout::concat;
use kiln_kernels::upsample::upsample_nearest2d_to;
use kiln_runtime::{Error, Result, Tensor};

use super::resnet::{ResnetBlock, ResnetSpec};
use super::transformer::{SpatialTransformer, TransformerSpec};
use crate::nn::Conv2d;
use crate::weights::Weights;

/// Sizes shared by every block of one UNet.
#[derive(Clone)]
pub struct Common {
    pub temb: usize,
    pub groups: usize,
    pub eps: f32,
    pub linear_projection: bool,
}

impl Common {
    fn resnet(&self, cin: usize, cout: usize) -> ResnetSpec {
        ResnetSpec {
            cin,
            cout,
            temb: self.temb,
            groups: self.groups,
            eps: self.eps,
            output_scale: 1.0,
        }
    }

    fn transformer(&self, channels: usize, level: &super::config::Level) -> TransformerSpec {
        TransformerSpec {
            channels,
            heads: level.heads,
            depth: level.depth,
            cross_attention_dim: level.cross_attention_dim,
            groups: self.groups,
            linear_projection: self.linear_projection,
        }
    }
}

/// Resnets interleaved with transformers (none for the attention-free block kinds).
struct Layers {
    resnets: Vec<ResnetBlock>,
    attentions: Vec<SpatialTransformer>,
}

impl Layers {
    fn new(
        w: &Weights,
        resnets: Vec<ResnetSpec>,
        transformer: Option<TransformerSpec>,
    ) -> Result<Layers> {
        let n = resnets.len();
        let resnets = resnets
            .iter()
            .enumerate()
            .map(|(j, s)| ResnetBlock::new(&w.pp(format!("resnets.{j}")), s))
            .collect::<Result<Vec<_>>>()?;
        let attentions = match transformer {
            Some(spec) => (0..n)
                .map(|j| SpatialTransformer::new(&w.pp(format!("attentions.{j}")), &spec))
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        Ok(Layers {
            resnets,
            attentions,
        })
    }

    /// Resnet `j`, then transformer `j` if there is one.
    fn layer(&self, j: usize, x: &Tensor, temb: &Tensor, context: &Tensor) -> Result<Tensor> {
        let h = self.resnets[j].forward(x, temb)?;
        match self.attentions.get(j) {
            Some(attn) => attn.forward(&h, context),
            None => Ok(h),
        }
    }
}

pub struct DownBlock {
    layers: Layers,
    /// 3x3 stride-2 conv (`downsamplers.0.conv`); absent on the last level.
    downsampler: Option<Conv2d>,
}

impl DownBlock {
    pub fn new(
        w: &Weights,
        c: &Common,
        level: &super::config::Level,
        cin: usize,
        attention: bool,
        downsample: bool,
    ) -> Result<DownBlock> {
        let cout = level.channels;
        let resnets = (0..level.layers)
            .map(|j| c.resnet(if j == 0 { cin } else { cout }, cout))
            .collect();
        let transformer = attention.then(|| c.transformer(cout, level));
        let downsampler = if downsample {
            Some(Conv2d::new(
                &w.pp("downsamplers.0.conv"),
                cout,
                cout,
                3,
                2,
                1,
            )?)
        } else {
            None
        };
        Ok(DownBlock {
            layers: Layers::new(w, resnets, transformer)?,
            downsampler,
        })
    }

    pub fn forward(
        &self,
        x: Tensor,
        temb: &Tensor,
        context: &Tensor,
        skips: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        let mut h = x;
        for j in 0..self.layers.resnets.len() {
            h = self.layers.layer(j, &h, temb, context)?;
            skips.push(h.clone());
        }
        if let Some(conv) = &self.downsampler {
            h = conv.forward(&h)?;
            skips.push(h.clone());
        }
        Ok(h)
    }
}

/// resnet -> transformer -> resnet at the lowest resolution.
pub struct MidBlock {
    resnet0: ResnetBlock,
    attention: SpatialTransformer,
    resnet1: ResnetBlock,
}

impl MidBlock {
    pub fn new(
        w: &Weights,
        c: &Common,
        level: &super::config::Level,
        output_scale: f32,
    ) -> Result<MidBlock> {
        let ch = level.channels;
        let spec = ResnetSpec {
            output_scale,
            ..c.resnet(ch, ch)
        };
        Ok(MidBlock {
            resnet0: ResnetBlock::new(&w.pp("resnets.0"), &spec)?,
            attention: SpatialTransformer::new(&w.pp("attentions.0"), &c.transformer(ch, level))?,
            resnet1: ResnetBlock::new(&w.pp("resnets.1"), &spec)?,
        })
    }

    pub fn forward(&self, x: &Tensor, temb: &Tensor, context: &Tensor) -> Result<Tensor> {
        let h = self.resnet0.forward(x, temb)?;
        let h = self.attention.forward(&h, context)?;
        self.resnet1.forward(&h, temb)
    }
}

pub struct UpBlock {
    layers: Layers,
    /// Nearest x2 then a 3x3 conv (`upsamplers.0.conv`); absent on the last block.
    upsampler: Option<Conv2d>,
}

/// Channel bookkeeping of one up block, named as in diffusers' `get_up_block` call.
#[derive(Clone, Copy)]
pub struct UpChannels {
    /// Channels arriving from the block below (`prev_output_channel`).
    pub prev_output: usize,
    /// Channels of this level (`out_channels`).
    pub out: usize,
    /// Channels of the level above in the down path (`in_channels`): the last skip of this block
    /// comes from there.
    pub input: usize,
}

impl UpBlock {
    pub fn new(
        w: &Weights,
        c: &Common,
        level: &super::config::Level,
        ch: &UpChannels,
        attention: bool,
        upsample: bool,
    ) -> Result<UpBlock> {
        // One resnet more than the down path had: it also takes the downsampler's (or conv_in's) skip.
        let n = level.layers + 1;
        let resnets = (0..n)
            .map(|j| {
                let skip = if j == n - 1 { ch.input } else { ch.out };
                let from_below = if j == 0 { ch.prev_output } else { ch.out };
                c.resnet(from_below + skip, ch.out)
            })
            .collect();
        let transformer = attention.then(|| c.transformer(ch.out, level));
        let upsampler = if upsample {
            Some(Conv2d::new(
                &w.pp("upsamplers.0.conv"),
                ch.out,
                ch.out,
                3,
                1,
                1,
            )?)
        } else {
            None
        };
        Ok(UpBlock {
            layers: Layers::new(w, resnets, transformer)?,
            upsampler,
        })
    }

    pub fn forward(
        &self,
        x: Tensor,
        temb: &Tensor,
        context: &Tensor,
        skips: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        let mut h = x;
        for j in 0..self.layers.resnets.len() {
            let skip = skips.pop().ok_or_else(|| {
                Error::shape("unet", "skip connection stack ran out in an up block")
            })?;
            // Each skip is used once: concatenating drops the last reference to it.
            let joined = concat(&[&h, &skip], 1)?;
            drop((h, skip));
            h = self.layers.layer(j, &joined, temb, context)?;
        }
        if let Some(conv) = &self.upsampler {
            // Up to the next skip's size: twice this one, or one less where the way down halved an
            // odd size (diffusers' `upsample_size`).
            let next = skips.last().ok_or_else(|| {
                Error::shape(
                    "unet",
                    "an up block upsamples but no skip connection is left",
                )
            })?;
            let (height, width) = (next.dim(2), next.dim(3));
            h = conv.forward(&upsample_nearest2d_to(&h, height, width)?)?;
        }
        Ok(h)
    }
}
