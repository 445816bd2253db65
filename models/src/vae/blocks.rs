//! The encoder's and decoder's blocks: `DownEncoderBlock2D`, `UpDecoderBlock2D` and `UNetMidBlock2D`
//! (resnet, attention, resnet), with their `Downsample2D` / `Upsample2D`.

use kiln_kernels::conv::Padding2d;
use kiln_kernels::upsample::upsample_nearest2d;
use kiln_runtime::{Result, Tensor};

use super::attention::MidAttention;
use super::resnet::ResnetBlock;
use kiln_nn::weights::Weights;
use kiln_nn::Conv2d;

/// diffusers' `Downsample2D` with `padding=0`, as the VAE encoder builds it: `F.pad(x, (0, 1, 0, 1))`
/// (one zero row at the bottom, one zero column at the right) then a 3x3 stride-2 unpadded conv. This
/// is not the UNet's symmetric padding 1: the windows start at row 0, not row -1.
pub struct Downsample {
    conv: Conv2d,
}

const ENCODER_DOWNSAMPLE_PADDING: Padding2d = Padding2d {
    top: 0,
    bottom: 1,
    left: 0,
    right: 1,
};

impl Downsample {
    pub fn new(w: &Weights, channels: usize) -> Result<Downsample> {
        Ok(Downsample {
            conv: Conv2d::new(&w.pp("conv"), channels, channels, 3, 2, 0)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward_padded(x, ENCODER_DOWNSAMPLE_PADDING)
    }
}

/// diffusers' `Upsample2D` with a conv: nearest-neighbour x2, then a 3x3 conv with padding 1.
pub struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    pub fn new(w: &Weights, channels: usize) -> Result<Upsample> {
        Ok(Upsample {
            conv: Conv2d::new(&w.pp("conv"), channels, channels, 3, 1, 1)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(&upsample_nearest2d(x, 2)?)
    }
}

/// `DownEncoderBlock2D`: `layers` resnets (the first changes `cin` to `cout`), then a downsampler
/// unless it is the last block.
pub struct DownEncoderBlock {
    resnets: Vec<ResnetBlock>,
    downsample: Option<Downsample>,
}

impl DownEncoderBlock {
    pub fn new(
        w: &Weights,
        cin: usize,
        cout: usize,
        layers: usize,
        groups: usize,
        downsample: bool,
    ) -> Result<DownEncoderBlock> {
        let resnets = (0..layers)
            .map(|i| {
                let c = if i == 0 { cin } else { cout };
                ResnetBlock::new(&w.pp(format!("resnets.{i}")), c, cout, groups)
            })
            .collect::<Result<_>>()?;
        let downsample = if downsample {
            Some(Downsample::new(&w.pp("downsamplers.0"), cout)?)
        } else {
            None
        };
        Ok(DownEncoderBlock {
            resnets,
            downsample,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for r in &self.resnets {
            h = r.forward(&h)?;
        }
        match &self.downsample {
            Some(d) => d.forward(&h),
            None => Ok(h),
        }
    }
}

/// `UpDecoderBlock2D`: `layers` resnets (the decoder passes layers_per_block + 1), then an upsampler
/// unless it is the last block.
pub struct UpDecoderBlock {
    resnets: Vec<ResnetBlock>,
    upsample: Option<Upsample>,
}

impl UpDecoderBlock {
    pub fn new(
        w: &Weights,
        cin: usize,
        cout: usize,
        layers: usize,
        groups: usize,
        upsample: bool,
    ) -> Result<UpDecoderBlock> {
        let resnets = (0..layers)
            .map(|i| {
                let c = if i == 0 { cin } else { cout };
                ResnetBlock::new(&w.pp(format!("resnets.{i}")), c, cout, groups)
            })
            .collect::<Result<_>>()?;
        let upsample = if upsample {
            Some(Upsample::new(&w.pp("upsamplers.0"), cout)?)
        } else {
            None
        };
        Ok(UpDecoderBlock { resnets, upsample })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for r in &self.resnets {
            h = r.forward(&h)?;
        }
        match &self.upsample {
            Some(u) => u.forward(&h),
            None => Ok(h),
        }
    }
}

/// `UNetMidBlock2D` with one layer: resnet, self-attention (unless `mid_block_add_attention` is
/// false), resnet, all at the deepest width.
pub struct MidBlock {
    first: ResnetBlock,
    attention: Option<MidAttention>,
    second: ResnetBlock,
}

impl MidBlock {
    pub fn new(w: &Weights, channels: usize, groups: usize, attention: bool) -> Result<MidBlock> {
        Ok(MidBlock {
            first: ResnetBlock::new(&w.pp("resnets.0"), channels, channels, groups)?,
            attention: if attention {
                Some(MidAttention::new(&w.pp("attentions.0"), channels, groups)?)
            } else {
                None
            },
            second: ResnetBlock::new(&w.pp("resnets.1"), channels, channels, groups)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.first.forward(x)?;
        if let Some(a) = &self.attention {
            h = a.forward(&h)?;
        }
        self.second.forward(&h)
    }
}
