//! The UNet's blocks: `CrossAttnDownBlock2D` / `DownBlock2D`, `UNetMidBlock2DCrossAttn`, and
//! `CrossAttnUpBlock2D` / `UpBlock2D`. A block without attention is the same block with an empty
//! transformer list, so each pair shares one struct.
//!
//! Each resnet, transformer and resampling conv is a `Slot`: resident, or streamed from host memory
//! one at a time (`--max-vram`), so a streamed UNet holds one layer's weights at a time, not a
//! block's.
//!
//! Skip connections: the UNet keeps one stack. Every down resnet (after its transformer, if any) and
//! every downsampler pushes its output; every up resnet pops one and concatenates it after its input
//! along channels, as diffusers' `res_hidden_states_tuple[-1]`.

use kiln_kernels::layout::concat;
use kiln_kernels::upsample::upsample_nearest2d_to;
use kiln_runtime::{Error, Result, Tensor};

use super::resnet::{ResnetBlock, ResnetSpec};
use super::slot::Slot;
use super::transformer::{SpatialTransformer, TransformerSpec};
use kiln_nn::weights::Weights;
use kiln_nn::Conv2d;

/// Sizes shared by every block of one UNet.
#[derive(Clone)]
pub struct Common {
    pub temb: usize,
    pub groups: usize,
    pub eps: f32,
    pub linear_projection: bool,
}

impl Common {
    pub fn new(config: &super::config::UnetConfig, resolved: &super::config::Resolved) -> Common {
        Common {
            temb: resolved.time_embed_dim,
            groups: resolved.groups,
            eps: config.norm_eps,
            linear_projection: config.use_linear_projection,
        }
    }

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
    resnets: Vec<Slot<ResnetBlock>>,
    attentions: Vec<Slot<SpatialTransformer>>,
}

fn resnet(w: &Weights, spec: ResnetSpec) -> Result<Slot<ResnetBlock>> {
    Slot::new(w.clone(), move |w| ResnetBlock::new(w, &spec))
}

fn transformer(w: &Weights, spec: TransformerSpec) -> Result<Slot<SpatialTransformer>> {
    Slot::new(w.clone(), move |w| SpatialTransformer::new(w, &spec))
}

/// A resampling block's 3x3 conv (`downsamplers.0.conv` / `upsamplers.0.conv`).
fn resampler(w: &Weights, channels: usize, stride: usize) -> Result<Slot<Conv2d>> {
    Slot::new(w.clone(), move |w| {
        Conv2d::new(w, channels, channels, 3, stride, 1)
    })
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
            .map(|(j, &s)| resnet(&w.pp(format!("resnets.{j}")), s))
            .collect::<Result<Vec<_>>>()?;
        let attentions = match transformer {
            Some(spec) => (0..n)
                .map(|j| self::transformer(&w.pp(format!("attentions.{j}")), spec))
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
        let h = self.resnets[j].with(|r| r.forward(x, temb))?;
        match self.attentions.get(j) {
            Some(attn) => attn.with(|a| a.forward(&h, context)),
            None => Ok(h),
        }
    }
}

pub struct DownBlock {
    layers: Layers,
    /// 3x3 stride-2 conv (`downsamplers.0.conv`); absent on the last level.
    downsampler: Option<Slot<Conv2d>>,
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
            Some(resampler(&w.pp("downsamplers.0.conv"), cout, 2)?)
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
            h = conv.with(|c| c.forward(&h))?;
            skips.push(h.clone());
        }
        Ok(h)
    }
}

/// resnet -> transformer -> resnet at the lowest resolution.
pub struct MidBlock {
    resnet0: Slot<ResnetBlock>,
    attention: Slot<SpatialTransformer>,
    resnet1: Slot<ResnetBlock>,
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
            resnet0: resnet(&w.pp("resnets.0"), spec)?,
            attention: transformer(&w.pp("attentions.0"), c.transformer(ch, level))?,
            resnet1: resnet(&w.pp("resnets.1"), spec)?,
        })
    }

    pub fn forward(&self, x: &Tensor, temb: &Tensor, context: &Tensor) -> Result<Tensor> {
        let h = self.resnet0.with(|r| r.forward(x, temb))?;
        let h = self.attention.with(|a| a.forward(&h, context))?;
        self.resnet1.with(|r| r.forward(&h, temb))
    }
}

pub struct UpBlock {
    layers: Layers,
    /// Nearest x2 then a 3x3 conv (`upsamplers.0.conv`); absent on the last block.
    upsampler: Option<Slot<Conv2d>>,
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
            Some(resampler(&w.pp("upsamplers.0.conv"), ch.out, 1)?)
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
            let up = upsample_nearest2d_to(&h, height, width)?;
            h = conv.with(|c| c.forward(&up))?;
        }
        Ok(h)
    }
}
