//! diffusers' `AutoencoderKL`: encoder + quant_conv to a latent distribution, post_quant_conv +
//! decoder back to an image.

use kiln_kernels::elementwise::{cast, unary, Unary};
use kiln_runtime::{DType, Device, Error, Result, Tensor};

use super::decoder::Decoder;
use super::encoder::Encoder;
use super::latent::LatentDist;
use super::tiling::{run_tiled, VaeTiling};
use super::VaeConfig;
use kiln_nn::weights::Weights;
use kiln_nn::Conv2d;

pub struct AutoencoderKL {
    config: VaeConfig,
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    device: Device,
    dtype: DType,
}

impl AutoencoderKL {
    /// Builds the model from diffusers' state-dict names (`encoder.*`, `decoder.*`, `quant_conv`,
    /// `post_quant_conv`) under `weights`' prefix, checking every shape against `cfg`.
    pub fn new(cfg: &VaeConfig, weights: &Weights) -> Result<AutoencoderKL> {
        cfg.validate()
            .map_err(|msg| Error::shape("AutoencoderKL", format!("config: {msg}")))?;
        let moments = 2 * cfg.latent_channels;
        let latent = cfg.latent_channels;
        Ok(AutoencoderKL {
            encoder: Encoder::new(&weights.pp("encoder"), cfg)?,
            decoder: Decoder::new(&weights.pp("decoder"), cfg)?,
            quant_conv: if cfg.use_quant_conv {
                Some(Conv2d::new(
                    &weights.pp("quant_conv"),
                    moments,
                    moments,
                    1,
                    1,
                    0,
                )?)
            } else {
                None
            },
            post_quant_conv: if cfg.use_post_quant_conv {
                Some(Conv2d::new(
                    &weights.pp("post_quant_conv"),
                    latent,
                    latent,
                    1,
                    1,
                    0,
                )?)
            } else {
                None
            },
            config: cfg.clone(),
            device: weights.device().clone(),
            dtype: weights.dtype(),
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// The dtype the weights were loaded in; inputs are cast to it and outputs come in it.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The latent distribution of `image` [N, in_channels, H, W] (values in [-1, 1]): mean and
    /// clamped log-variance, each [N, latent_channels, H / f, W / f] with f the `downsample_factor`
    /// (each level halves the size, rounding down). Unscaled, as diffusers' `encode(..).latent_dist`: multiply by
    /// `scale_latents` before handing latents to a UNet.
    pub fn encode(&self, image: &Tensor) -> Result<LatentDist> {
        LatentDist::from_moments(&self.encode_moments(image)?)
    }

    /// The encoder's raw output [N, 2 * latent_channels, h, w] (mean channels, then log-variance),
    /// left on the device.
    pub fn encode_moments(&self, image: &Tensor) -> Result<Tensor> {
        let image = self.input("image", image, self.config.in_channels, "in_channels")?;
        let moments = self.encoder.forward(&image)?;
        match &self.quant_conv {
            Some(conv) => conv.forward(&moments),
            None => Ok(moments),
        }
    }

    /// The image [N, out_channels, h * f, w * f] for `latents` [N, latent_channels, h, w], roughly in
    /// [-1, 1] and not clamped. As diffusers' `decode`, the latents are the VAE's own: a UNet's
    /// latents go through `unscale_latents` first.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let z = self.input(
            "latents",
            latents,
            self.config.latent_channels,
            "latent_channels",
        )?;
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(&z)?,
            None => z,
        };
        self.decoder.forward(&z)
    }

    /// `decode` tile by tile when the latents span more than one tile (else exactly `decode`):
    /// the device holds one tile's activations at a time. The result differs slightly from
    /// `decode` (each tile's convolutions and mid-block attention see only the tile); the linear
    /// blend across the overlaps leaves no seam.
    pub fn decode_tiled(&self, latents: &Tensor, tiling: &VaeTiling) -> Result<Tensor> {
        let z = self.input(
            "latents",
            latents,
            self.config.latent_channels,
            "latent_channels",
        )?;
        let (h, w) = (z.dim(2), z.dim(3));
        if !tiling.splits(h, w) {
            return self.decode(&z);
        }
        let f = self.config.downsample_factor();
        run_tiled(tiling, &z, (h, w), 1, f, |tile| self.decode(tile))
    }

    /// `encode_moments` tile by tile (tiles of `tiling.tile * f` image pixels) with the moments
    /// blended across the overlaps; exactly `encode_moments` when one tile covers the image.
    /// Tiling needs the image sides to be multiples of the downsample factor f.
    pub fn encode_moments_tiled(&self, image: &Tensor, tiling: &VaeTiling) -> Result<Tensor> {
        let image = self.input("image", image, self.config.in_channels, "in_channels")?;
        let f = self.config.downsample_factor();
        let (h, w) = (image.dim(2), image.dim(3));
        if !tiling.splits(h / f, w / f) {
            return self.encode_moments(&image);
        }
        if !h.is_multiple_of(f) || !w.is_multiple_of(f) {
            return Err(Error::shape(
                "AutoencoderKL tiled encode",
                format!(
                    "`image` {:?}: tiled encoding needs height and width that are multiples of                      the downsample factor {f}",
                    image.shape()
                ),
            ));
        }
        run_tiled(tiling, &image, (h / f, w / f), f, 1, |tile| {
            self.encode_moments(tile)
        })
    }

    /// `encode` through `encode_moments_tiled`.
    pub fn encode_tiled(&self, image: &Tensor, tiling: &VaeTiling) -> Result<LatentDist> {
        LatentDist::from_moments(&self.encode_moments_tiled(image, tiling)?)
    }

    /// VAE latents -> the UNet's: `(z - shift_factor) * scaling_factor`.
    pub fn scale_latents(&self, z: &Tensor) -> Result<Tensor> {
        let (s, shift) = self.factors();
        unary(
            z,
            Unary::Scale {
                mul: s,
                add: -shift * s,
            },
        )
    }

    /// The UNet's latents -> the VAE's: `z / scaling_factor + shift_factor` (what diffusers'
    /// pipelines do before `vae.decode`).
    pub fn unscale_latents(&self, z: &Tensor) -> Result<Tensor> {
        let (s, shift) = self.factors();
        unary(
            z,
            Unary::Scale {
                mul: 1.0 / s,
                add: shift,
            },
        )
    }

    fn factors(&self) -> (f32, f32) {
        (
            self.config.scaling_factor,
            self.config.shift_factor.unwrap_or(0.0),
        )
    }

    /// Checks an [N, C, H, W] input against the config and casts it to the model's dtype.
    fn input(&self, name: &str, x: &Tensor, channels: usize, field: &str) -> Result<Tensor> {
        if x.rank() != 4 || x.dim(1) != channels {
            return Err(Error::shape(
                "AutoencoderKL",
                format!(
                    "`{name}` {:?} must be [N, {channels}, H, W] (`{field}` is {channels})",
                    x.shape()
                ),
            ));
        }
        if x.dtype() == self.dtype {
            Ok(x.clone())
        } else {
            cast(x, self.dtype)
        }
    }
}
