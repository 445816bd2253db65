//! Real-ESRGAN's SRVGGNetCompact (realesr-general-x4v3, realesr-animevideov3): `body.0` conv,
//! then PReLU + conv pairs, the last conv giving `out * upscale^2` channels, `pixel_shuffle`, and the
//! nearest-upsampled input added (the network learns the residual). Convs are the even `body.N`,
//! PReLUs (weight [num_feat]) the odd ones.

use kiln_kernels::elementwise::add;
use kiln_kernels::upsample::upsample_nearest2d;
use kiln_nn::weights::Weights;
use kiln_nn::Conv2d;
use kiln_runtime::{Error, Result, Tensor};

use super::ops::{pixel_shuffle, prelu};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SrvggConfig {
    pub in_ch: usize,
    pub out_ch: usize,
    pub num_feat: usize,
    pub num_conv: usize,
    pub upscale: usize,
}

impl SrvggConfig {
    pub fn infer(w: &Weights) -> Result<SrvggConfig> {
        let err = |msg: String| Error::load(w.origin(), format!("SRVGGNetCompact: {msg}"));
        let first = w.shape_of("body.0.weight").unwrap_or_default();
        let &[num_feat, in_ch, 3, 3] = &first[..] else {
            return Err(err(format!(
                "body.0.weight has shape {first:?}, expected [F, C, 3, 3]"
            )));
        };
        if w.shape_of("body.1.weight").as_deref() != Some(&[num_feat]) {
            return Err(err(
                "body.1 is not a PReLU with one slope per feature (only the PReLU activation, \
                 which every published compact model uses, is supported)"
                    .into(),
            ));
        }
        // Convs at body.0, 2, 4, ...: the last one is the one with no PReLU after it.
        let convs = (0..)
            .take_while(|i| w.contains(&format!("body.{}.weight", 2 * i)))
            .count();
        let last = w
            .shape_of(&format!("body.{}.weight", 2 * (convs - 1)))
            .unwrap_or_default();
        let shuffled = last.first().copied().unwrap_or(0);
        let upscale = (1..=8).find(|u| u * u * in_ch == shuffled);
        let (Some(upscale), true) = (upscale, convs >= 2) else {
            return Err(err(format!(
                "the last conv (body.{}) gives {shuffled} channels: not {in_ch} * upscale^2",
                2 * (convs - 1)
            )));
        };
        Ok(SrvggConfig {
            in_ch,
            out_ch: in_ch,
            num_feat,
            num_conv: convs - 2,
            upscale,
        })
    }
}

pub struct SrvggNet {
    pub config: SrvggConfig,
    /// (conv, PReLU slope [1, F, 1, 1]) pairs; the last conv has none.
    layers: Vec<(Conv2d, Option<Tensor>)>,
}

impl SrvggNet {
    pub fn new(w: &Weights, config: SrvggConfig) -> Result<SrvggNet> {
        let SrvggConfig {
            in_ch,
            out_ch,
            num_feat: nf,
            num_conv,
            upscale,
        } = config;
        let mut layers = Vec::new();
        for i in 0..num_conv + 2 {
            let (cin, last) = (if i == 0 { in_ch } else { nf }, i == num_conv + 1);
            let cout = if last { out_ch * upscale * upscale } else { nf };
            let conv = Conv2d::new(&w.pp(format!("body.{}", 2 * i)), cin, cout, 3, 1, 1)?;
            let slope = if last {
                None
            } else {
                let s = w.pp(format!("body.{}", 2 * i + 1)).get("weight", &[nf])?;
                Some(s.reshape(&[1, nf, 1, 1])?)
            };
            layers.push((conv, slope));
        }
        Ok(SrvggNet { config, layers })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (conv, slope) in &self.layers {
            h = conv.forward(&h)?;
            if let Some(s) = slope {
                h = prelu(&h, s)?;
            }
        }
        let up = self.config.upscale;
        add(&pixel_shuffle(&h, up)?, &upsample_nearest2d(x, up)?)
    }
}
