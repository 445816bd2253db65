//! diffusers' `ControlNetModel` (SD 1.x / 2.x and SDXL): a copy of the UNet's encoder (conv_in,
//! time embedding with SDXL's added conditioning, down blocks, mid block: `unet::Encoder`, the same
//! code the UNet runs) that also takes a control image through `controlnet_cond_embedding`, and
//! hands one zero-conv'd residual per skip connection plus one for the mid block to the UNet
//! (`unet::ControlResiduals`), scaled by the conditioning scale.
//!
//! Files: a diffusers folder (`config.json` + `diffusion_pytorch_model.safetensors`, `load.rs`) or
//! lllyasviel's original single file (`single_file/controlnet_file.rs`).

mod config;
mod embedding;
mod load;
mod scales;

use kiln_kernels::elementwise::{add, cast, scale};
use kiln_kernels::layout::{concat, narrow};
use kiln_runtime::{DType, Device, Error, Result, Tensor};

use crate::unet::{skip_count, AddedCond, AddedSpec, Common, ControlResiduals, Encoder, Resolved};
use embedding::CondEmbedding;
use kiln_nn::weights::{Tally, Weights};
use kiln_nn::Conv2d;
use std::sync::Arc;

pub use config::ControlNetConfig;
pub use load::{check_base, ControlNetLoad};
pub use scales::{guess_scales, residual_scales, soft_scales, ResidualCurve};

const OP: &str = "controlnet";

pub struct ControlNetModel {
    config: ControlNetConfig,
    resolved: Resolved,
    encoder: Encoder,
    cond_embedding: CondEmbedding,
    /// One 1x1 zero conv per skip connection (`controlnet_down_blocks.N`).
    down_convs: Vec<Conv2d>,
    /// `controlnet_mid_block`.
    mid_conv: Conv2d,
    dtype: DType,
    device: Device,
    /// Each weight's device bytes, for a zero-weight ControlNet loaded for `--plan`.
    tally: Option<Arc<Tally>>,
    /// Whether the encoder's blocks stream their weights from host memory.
    streamed: bool,
}

/// One ControlNet evaluation's inputs.
#[derive(Clone, Copy)]
pub struct ControlInputs<'a> {
    /// `[B, 4, h, w]` latents (already through `scale_model_input`).
    pub sample: &'a Tensor,
    /// `[B]` or `[1]` timesteps.
    pub timesteps: &'a Tensor,
    /// `[B, L, cross_attention_dim]` text embeddings.
    pub context: &'a Tensor,
    pub added: Option<AddedCond<'a>>,
    /// `[B, conditioning_channels, H, W]` control image in [0, 1], H and W the pixel size.
    pub cond: &'a Tensor,
    /// `controlnet_conditioning_scale` (times `controlnet_keep`).
    pub scale: f32,
    /// The per-residual factors applied on top of `scale`.
    pub curve: ResidualCurve,
}

impl ControlNetModel {
    /// Builds the model from `config` and the weights under `w` (diffusers names), checking every
    /// tensor's shape.
    pub fn new(config: &ControlNetConfig, w: &Weights) -> Result<ControlNetModel> {
        let resolved = config.resolve()?;
        let common = Common::new(&config.unet, &resolved);
        let encoder = Encoder::new(&config.unet, &resolved, &common, w)?;
        let c0 = resolved.levels[0].channels;
        let cond_embedding = CondEmbedding::new(
            &w.pp("controlnet_cond_embedding"),
            config.conditioning_channels,
            &config.conditioning_embedding_out_channels,
            c0,
        )?;
        let mut widths = vec![c0];
        let n = resolved.levels.len();
        for (i, level) in resolved.levels.iter().enumerate() {
            widths.extend(std::iter::repeat_n(level.channels, level.layers));
            if i + 1 < n {
                widths.push(level.channels);
            }
        }
        debug_assert_eq!(widths.len(), skip_count(&resolved));
        let down_convs = widths
            .iter()
            .enumerate()
            .map(|(i, &c)| Conv2d::new(&w.pp(format!("controlnet_down_blocks.{i}")), c, c, 1, 1, 0))
            .collect::<Result<Vec<_>>>()?;
        let last = resolved.levels[n - 1].channels;
        let mid_conv = Conv2d::new(&w.pp("controlnet_mid_block"), last, last, 1, 1, 0)?;
        Ok(ControlNetModel {
            config: config.clone(),
            resolved,
            encoder,
            cond_embedding,
            down_convs,
            mid_conv,
            dtype: w.dtype(),
            device: w.device().clone(),
            tally: None,
            streamed: w.is_streamed(),
        })
    }

    /// Whether the down / mid blocks stream their weights from host memory, as a streamed UNet's.
    pub fn is_streamed(&self) -> bool {
        self.streamed
    }

    pub(crate) fn with_tally(self, tally: Option<Arc<Tally>>) -> ControlNetModel {
        ControlNetModel { tally, ..self }
    }

    /// What a zero-weight ControlNet ([`ControlNetLoad::zero_weights`]) loaded, by weight name,
    /// for the memory plan; `None` for a real one.
    pub fn planned_weights(&self) -> Option<&Tally> {
        self.tally.as_deref()
    }

    pub fn config(&self) -> &ControlNetConfig {
        &self.config
    }

    pub fn resolved(&self) -> &Resolved {
        &self.resolved
    }

    /// The text-embedding width its cross-attention takes.
    pub fn cross_attention_dim(&self) -> usize {
        self.resolved.levels[0].cross_attention_dim
    }

    /// SDXL's added conditioning, if the ControlNet takes it.
    pub fn added_conditioning(&self) -> Option<AddedSpec> {
        self.resolved.added
    }

    /// Whether guess mode is forced (`global_pool_conditions`, as diffusers' pipelines do).
    pub fn forces_guess_mode(&self) -> bool {
        self.config.global_pool_conditions
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The residuals for one UNet evaluation, each in the model dtype.
    pub fn forward(&self, x: &ControlInputs) -> Result<ControlResiduals> {
        self.check(x)?;
        let b = x.sample.dim(0);
        let temb = self.encoder.embed(OP, x.timesteps, x.added, b)?;
        let sample = cast(x.sample, self.dtype)?;
        let context = cast(x.context, self.dtype)?;
        let mut cond = cast(x.cond, self.dtype)?;
        if self.config.bgr {
            let c = cond.dim(1);
            let planes = (0..c)
                .rev()
                .map(|k| narrow(&cond, 1, k, 1))
                .collect::<Result<Vec<_>>>()?;
            cond = concat(&planes.iter().collect::<Vec<_>>(), 1)?;
        }
        let h = self.encoder.conv_in(&sample)?;
        let h = add(&h, &self.cond_embedding.forward(&cond)?)?;
        let (h, skips) = self.encoder.encode(h, &temb, &context)?;
        let n = skips.len();
        let scales = residual_scales(x.curve, n + 1, x.scale, self.config.global_pool_conditions);
        let mut down = Vec::with_capacity(n);
        for (i, (conv, s)) in self.down_convs.iter().zip(&skips).enumerate() {
            down.push(self.finish(scale(&conv.forward(s)?, scales[i])?)?);
        }
        let mid = self.finish(scale(&self.mid_conv.forward(&h)?, scales[n])?)?;
        Ok(ControlResiduals { down, mid })
    }

    /// `global_pool_conditions`: each residual averaged over its plane (`[B, C, 1, 1]`).
    fn finish(&self, r: Tensor) -> Result<Tensor> {
        if !self.config.global_pool_conditions {
            return Ok(r);
        }
        let (b, c, plane) = (r.dim(0), r.dim(1), r.dim(2) * r.dim(3));
        let values = r.to_vec_f32()?;
        let means: Vec<f32> = values
            .chunks(plane)
            .map(|p| p.iter().sum::<f32>() / plane as f32)
            .collect();
        Tensor::from_f32(&self.device, &[b, c, 1, 1], r.dtype(), &means)
    }

    fn check(&self, x: &ControlInputs) -> Result<()> {
        let cfg = &self.config.unet;
        let s = x.sample;
        let fail = |msg: String| Err(Error::shape(OP, msg));
        if s.rank() != 4 || s.dim(1) != cfg.in_channels {
            return fail(format!(
                "`sample` must be [B, {}, h, w], got {:?}",
                cfg.in_channels,
                s.shape()
            ));
        }
        let f = 1 << self.cond_embedding.downsamples();
        let want = [
            s.dim(0),
            self.config.conditioning_channels,
            s.dim(2) * f,
            s.dim(3) * f,
        ];
        if x.cond.shape() != want {
            return fail(format!(
                "the control image must be {want:?} (batch, conditioning_channels, latents x {f}) \
                 for latents {:?}, got {:?}",
                s.shape(),
                x.cond.shape()
            ));
        }
        let dim = self.cross_attention_dim();
        if x.context.rank() != 3 || x.context.dim(0) != s.dim(0) || x.context.dim(2) != dim {
            return fail(format!(
                "`encoder_hidden_states` must be [{}, L, {dim}], got {:?}",
                s.dim(0),
                x.context.shape()
            ));
        }
        for (name, t) in [
            ("sample", x.sample),
            ("timesteps", x.timesteps),
            ("encoder_hidden_states", x.context),
            ("controlnet_cond", x.cond),
        ] {
            if t.device() != &self.device {
                return Err(Error::Device(format!(
                    "{OP}: `{name}` is on {} but the weights are on {}",
                    t.device().name(),
                    self.device.name()
                )));
            }
        }
        Ok(())
    }
}
