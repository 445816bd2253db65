//! BasicSR's RRDBNet (ESRGAN, Real-ESRGAN x4plus / x2plus): `conv_first`, `num_block` RRDBs of three
//! residual dense blocks each, `conv_body`, nearest x2 upsampling + conv per `conv_upK`, `conv_hr`,
//! `conv_last`; LeakyReLU(0.2) and residual scale 0.2 throughout. Scale 2 and 1 models first
//! `pixel_unshuffle` the image (by 2, 4), which shows in `conv_first`'s input channels.

use kiln_kernels::elementwise::{add, leaky_relu, scale};
use kiln_kernels::layout::concat;
use kiln_kernels::upsample::upsample_nearest2d;
use kiln_nn::weights::Weights;
use kiln_nn::Conv2d;
use kiln_runtime::{Error, Result, Tensor};

use super::ops::pixel_unshuffle;

const SLOPE: f32 = 0.2;
const RESIDUAL: f32 = 0.2;

/// RRDBNet's sizes, read from a file's shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RrdbConfig {
    pub in_ch: usize,
    pub out_ch: usize,
    pub num_feat: usize,
    pub num_block: usize,
    pub num_grow_ch: usize,
    /// How many nearest-x2 + conv steps (BasicSR: always 2; old ESRGAN files: log2 of the scale).
    pub num_up: usize,
    /// The `pixel_unshuffle` factor applied to the input (1: none).
    pub unshuffle: usize,
}

impl RrdbConfig {
    pub fn infer(w: &Weights) -> Result<RrdbConfig> {
        let shape = |name: &str| {
            w.shape_of(name)
                .ok_or_else(|| Error::load(w.origin(), format!("RRDBNet: no tensor `{name}`")))
        };
        let first = shape("conv_first.weight")?;
        let last = shape("conv_last.weight")?;
        let grow = shape("body.0.rdb1.conv1.weight")?;
        let (&[num_feat, in_ch, 3, 3], &[out_ch, _, 3, 3], &[num_grow_ch, _, 3, 3]) =
            (&first[..], &last[..], &grow[..])
        else {
            return Err(Error::load(
                w.origin(),
                format!(
                    "RRDBNet: conv_first {first:?}, conv_last {last:?}, body.0.rdb1.conv1 {grow:?} \
                     are not 3x3 convolutions"
                ),
            ));
        };
        let num_block = (0..)
            .take_while(|i| w.contains(&format!("body.{i}.rdb1.conv1.weight")))
            .count();
        let num_up = (1..)
            .take_while(|i| w.contains(&format!("conv_up{i}.weight")))
            .count();
        let ratio = in_ch / out_ch.max(1);
        let unshuffle = (1..=4).find(|f| f * f == ratio && in_ch == out_ch * f * f);
        let Some(unshuffle) = unshuffle.filter(|f| (1usize << num_up).is_multiple_of(*f)) else {
            return Err(Error::load(
                w.origin(),
                format!(
                    "RRDBNet: conv_first takes {in_ch} channels and conv_last gives {out_ch}, with \
                     {num_up} upsampling convs: not a scale kiln knows (in = out * f^2 for an \
                     unshuffle factor f dividing 2^{num_up})"
                ),
            ));
        };
        Ok(RrdbConfig {
            in_ch,
            out_ch,
            num_feat,
            num_block,
            num_grow_ch,
            num_up,
            unshuffle,
        })
    }

    pub fn scale(&self) -> usize {
        (1 << self.num_up) / self.unshuffle
    }
}

struct DenseBlock {
    convs: [Conv2d; 5],
}

impl DenseBlock {
    fn new(w: &Weights, nf: usize, gc: usize) -> Result<DenseBlock> {
        let conv = |i: usize, cout| {
            Conv2d::new(&w.pp(format!("conv{}", i + 1)), nf + i * gc, cout, 3, 1, 1)
        };
        Ok(DenseBlock {
            convs: [
                conv(0, gc)?,
                conv(1, gc)?,
                conv(2, gc)?,
                conv(3, gc)?,
                conv(4, nf)?,
            ],
        })
    }

    /// Each conv sees the block input and every earlier output, concatenated on channels.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut feats = vec![x.clone()];
        for conv in &self.convs[..4] {
            let input = concat(&feats.iter().collect::<Vec<_>>(), 1)?;
            feats.push(leaky_relu(&conv.forward(&input)?, SLOPE)?);
        }
        let input = concat(&feats.iter().collect::<Vec<_>>(), 1)?;
        drop(feats);
        add(&scale(&self.convs[4].forward(&input)?, RESIDUAL)?, x)
    }
}

struct Rrdb {
    blocks: [DenseBlock; 3],
}

impl Rrdb {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for b in &self.blocks {
            h = b.forward(&h)?;
        }
        add(&scale(&h, RESIDUAL)?, x)
    }
}

pub struct RrdbNet {
    pub config: RrdbConfig,
    conv_first: Conv2d,
    body: Vec<Rrdb>,
    conv_body: Conv2d,
    ups: Vec<Conv2d>,
    conv_hr: Conv2d,
    conv_last: Conv2d,
}

impl RrdbNet {
    pub fn new(w: &Weights, config: RrdbConfig) -> Result<RrdbNet> {
        let RrdbConfig {
            in_ch,
            out_ch,
            num_feat: nf,
            num_grow_ch: gc,
            ..
        } = config;
        let conv = |name: &str, cin, cout| Conv2d::new(&w.pp(name), cin, cout, 3, 1, 1);
        let body = (0..config.num_block)
            .map(|i| {
                let b = w.pp(format!("body.{i}"));
                let rdb = |k: usize| DenseBlock::new(&b.pp(format!("rdb{k}")), nf, gc);
                Ok(Rrdb {
                    blocks: [rdb(1)?, rdb(2)?, rdb(3)?],
                })
            })
            .collect::<Result<_>>()?;
        Ok(RrdbNet {
            config,
            conv_first: conv("conv_first", in_ch, nf)?,
            body,
            conv_body: conv("conv_body", nf, nf)?,
            ups: (1..=config.num_up)
                .map(|i| conv(&format!("conv_up{i}"), nf, nf))
                .collect::<Result<_>>()?,
            conv_hr: conv("conv_hr", nf, nf)?,
            conv_last: conv("conv_last", nf, out_ch)?,
        })
    }

    /// [1, C, H, W] with H and W multiples of the unshuffle factor -> [1, C, H * s, W * s].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let f = self.config.unshuffle;
        let feat = if f > 1 {
            pixel_unshuffle(x, f)?
        } else {
            x.clone()
        };
        let feat = self.conv_first.forward(&feat)?;
        let mut h = feat.clone();
        for block in &self.body {
            h = block.forward(&h)?;
        }
        let mut feat = add(&feat, &self.conv_body.forward(&h)?)?;
        drop(h);
        for up in &self.ups {
            feat = leaky_relu(&up.forward(&upsample_nearest2d(&feat, 2)?)?, SLOPE)?;
        }
        let feat = leaky_relu(&self.conv_hr.forward(&feat)?, SLOPE)?;
        self.conv_last.forward(&feat)
    }
}
