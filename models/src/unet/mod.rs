//! diffusers' `UNet2DConditionModel` as Stable Diffusion 1.x, 2.x, SDXL and their inpainting variants
//! use it: the noise (or v) predictor that denoises latents conditioned on a timestep and text
//! embeddings (and, for SDXL, a pooled text embedding and size numbers: `added.rs`).
//!
//! Layout: conv_in -> down blocks (resnets, spatial transformers, stride-2 convs) -> mid block ->
//! up blocks (each resnet takes a skip from the down path) -> GroupNorm + SiLU -> conv_out. Every size
//! comes from config.json; weight names are diffusers' state-dict names, built with `Weights::pp` in
//! the `new` of each part (a loader for CompVis single-file checkpoints can rename into them).

mod added;
mod attention;
mod blocks;
mod config;
mod control;
mod encoder;
mod resnet;
mod slot;
mod time;
mod transformer;

use std::path::Path;
use std::sync::Arc;

use kiln_kernels::elementwise::{cast, unary, Unary};
use kiln_runtime::loader::WeightFile;
use kiln_runtime::{DType, Device, Error, Result, Tensor};

use blocks::{UpBlock, UpChannels};
use kiln_nn::lora::LoraRegistry;
use kiln_nn::weights::Weights;
use kiln_nn::{Conv2d, GroupNorm};

pub use added::{AddedCond, AddedSpec};
pub use blocks::Common;
pub use config::{Level, PerBlock, Resolved, UnetConfig};
pub use control::{ControlResiduals, UnetInputs};
pub use encoder::{skip_count, Encoder};

const OP: &str = "unet";

/// Weight file names of a diffusers `unet/` folder, in order of preference.
const WEIGHT_FILES: [&str; 2] = [
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
];

pub struct Unet {
    config: UnetConfig,
    resolved: Resolved,
    /// conv_in, time embedding, down and mid blocks: the part a ControlNet shares.
    encoder: Encoder,
    up_blocks: Vec<UpBlock>,
    /// Whether the blocks' layers stream their weights (`Weights::streamed`).
    streamed: bool,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    dtype: DType,
    device: Device,
    /// Every Linear / Conv2d by diffusers module name, for LoRA adapters.
    lora: Arc<LoraRegistry>,
}

impl Unet {
    /// The UNet's layers by diffusers module name, where LoRA adapters are set per generation.
    pub fn lora(&self) -> &Arc<LoraRegistry> {
        &self.lora
    }

    /// Builds the model from `config` and the weights under `w` (diffusers names, no prefix for a
    /// `unet/diffusion_pytorch_model.safetensors`), checking every tensor's shape. From a streamed
    /// view (`Weights::streamed`), every resnet, transformer and resampling conv of the down, mid
    /// and up blocks is streamed on its own (`Slot`); conv_in, the time embedding and the output
    /// layers stay resident.
    pub fn new(config: &UnetConfig, w: &Weights) -> Result<Unet> {
        let lora = LoraRegistry::new();
        let w = &w.with_lora(lora.clone());
        let resolved = config.resolve()?;
        let levels = &resolved.levels;
        let n = levels.len();
        let c0 = levels[0].channels;
        let common = Common::new(config, &resolved);
        let encoder = Encoder::new(config, &resolved, &common, w)?;

        // Up block i works at level n-1-i; diffusers' `reversed_*` lists.
        let mut up_blocks = Vec::with_capacity(n);
        let mut out = levels[n - 1].channels;
        for i in 0..n {
            let level = levels[n - 1 - i].clone();
            let ch = UpChannels {
                prev_output: out,
                out: level.channels,
                input: levels[(n - 1 - i).saturating_sub(1)].channels,
            };
            out = ch.out;
            let common = common.clone();
            let attention = resolved.up_attention[i];
            up_blocks.push(UpBlock::new(
                &w.pp(format!("up_blocks.{i}")),
                &common,
                &level,
                &ch,
                attention,
                i + 1 < n,
            )?);
        }

        Ok(Unet {
            conv_norm_out: GroupNorm::new(
                &w.pp("conv_norm_out"),
                resolved.groups,
                c0,
                config.norm_eps,
            )?,
            conv_out: Conv2d::new(
                &w.pp("conv_out"),
                c0,
                config.out_channels,
                config.conv_out_kernel,
                1,
                config.conv_out_kernel / 2,
            )?,
            config: config.clone(),
            resolved,
            encoder,
            up_blocks,
            streamed: w.is_streamed(),
            dtype: w.dtype(),
            device: w.device().clone(),
            lora,
        })
    }

    /// Loads a diffusers `unet/` folder: config.json and diffusion_pytorch_model[.fp16].safetensors.
    /// `dtype` is the compute dtype (a device without it gets f32).
    pub fn load(dir: impl AsRef<Path>, device: &Device, dtype: DType) -> Result<Unet> {
        let dir = dir.as_ref();
        let config = UnetConfig::from_file(dir.join("config.json"))?;
        let Some(file) = WEIGHT_FILES
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.exists())
        else {
            return Err(Error::load(
                dir,
                format!("no UNet weights: expected one of {WEIGHT_FILES:?}"),
            ));
        };
        let weights = Weights::new(vec![WeightFile::open(file)?], device, dtype);
        Unet::new(&config, &weights)
    }

    pub fn config(&self) -> &UnetConfig {
        &self.config
    }

    /// The config resolved into levels (what a ControlNet must match).
    pub fn resolved(&self) -> &Resolved {
        &self.resolved
    }

    /// Whether the blocks stream their weights from host memory (`Weights::streamed`).
    pub fn is_streamed(&self) -> bool {
        self.streamed
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The compute dtype: inputs are cast to it and the output comes back in it.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Predicts the noise (or v, for v-prediction checkpoints) in `sample`.
    ///
    /// - `sample` [B, in_channels, H, W] latents (for inpainting: latents, mask and masked-image
    ///   latents concatenated, 9 channels), any H and W: odd sizes round up on the way down and
    ///   are restored on the way up, as diffusers does.
    /// - `timesteps` [B] (or [1], shared by the batch) float timesteps, f32 or f16, on the model's device.
    /// - `encoder_hidden_states` [B, L, cross_attention_dim] text embeddings.
    ///
    /// Returns [B, out_channels, H, W] in the model dtype. An SDXL UNet (one with added
    /// conditioning) needs [`Unet::forward_with`].
    pub fn forward(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        encoder_hidden_states: &Tensor,
    ) -> Result<Tensor> {
        self.forward_with(sample, timesteps, encoder_hidden_states, None)
    }

    /// Whether the model takes added conditioning (SDXL's pooled text embedding and time ids).
    pub fn added_conditioning(&self) -> Option<AddedSpec> {
        self.resolved.added
    }

    /// [`Unet::forward`] with SDXL's added conditioning (`text_embeds` [B, P], `time_ids` [B, K]),
    /// which a UNet with `addition_embed_type: "text_time"` requires and any other refuses.
    pub fn forward_with(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        encoder_hidden_states: &Tensor,
        added: Option<AddedCond>,
    ) -> Result<Tensor> {
        self.run(&UnetInputs {
            sample,
            timesteps,
            context: encoder_hidden_states,
            added,
            control: None,
        })
    }

    /// The full forward pass: [`Unet::forward_with`]'s inputs plus ControlNet residuals, added to
    /// the skip connections and the mid block's output as diffusers' `down_block_additional_residuals`
    /// and `mid_block_additional_residual`.
    pub fn run(&self, inputs: &UnetInputs) -> Result<Tensor> {
        let UnetInputs {
            sample,
            timesteps,
            context,
            added,
            control,
        } = *inputs;
        self.check_inputs(sample, timesteps, context)?;
        if let Some(cond) = &added {
            for (name, t) in [
                ("text_embeds", cond.text_embeds),
                ("time_ids", cond.time_ids),
            ] {
                self.check_device(name, t)?;
            }
        }
        let temb = self.encoder.embed(OP, timesteps, added, sample.dim(0))?;
        let mut sample = cast(sample, self.dtype)?;
        let context = cast(context, self.dtype)?;
        if self.config.center_input_sample {
            sample = unary(
                &sample,
                Unary::Scale {
                    mul: 2.0,
                    add: -1.0,
                },
            )?;
        }

        let h = self.encoder.conv_in(&sample)?;
        drop(sample);
        let (mut h, mut skips) = self.encoder.encode(h, &temb, &context)?;
        if let Some(control) = control {
            (h, skips) = control.apply(h, skips)?;
        }
        for block in &self.up_blocks {
            h = block.forward(h, &temb, &context, &mut skips)?;
        }
        debug_assert!(skips.is_empty(), "every skip connection is consumed");
        let h = self.conv_norm_out.forward(&h, true)?;
        self.conv_out.forward(&h)
    }

    /// Shape checks up front, so a wrong input is reported in the caller's terms rather than as a
    /// kernel error deep inside a block.
    fn check_inputs(&self, sample: &Tensor, timesteps: &Tensor, context: &Tensor) -> Result<()> {
        let fail = |msg: String| Err(Error::shape(OP, msg));
        let cfg = &self.config;
        if sample.rank() != 4 || sample.dim(1) != cfg.in_channels {
            return fail(format!(
                "`sample` must be [B, {}, H, W] (in_channels from config.json), got {:?}",
                cfg.in_channels,
                sample.shape()
            ));
        }
        let b = sample.dim(0);
        if sample.dim(2) == 0 || sample.dim(3) == 0 {
            return fail(format!(
                "`sample` {:?}: height and width must be positive",
                sample.shape()
            ));
        }
        if timesteps.rank() != 1 || (timesteps.dim(0) != b && timesteps.dim(0) != 1) {
            return fail(format!(
                "`timesteps` must be [{b}] or [1] for a batch of {b}, got {:?}",
                timesteps.shape()
            ));
        }
        let dims: Vec<usize> = self
            .resolved
            .levels
            .iter()
            .map(|l| l.cross_attention_dim)
            .collect();
        let uses_context = self.resolved.down_attention.contains(&true)
            || self.resolved.up_attention.contains(&true)
            || self.resolved.mid_block;
        if uses_context
            && (context.rank() != 3
                || context.dim(0) != b
                || dims.iter().any(|&d| d != context.dim(2)))
        {
            return fail(format!(
                "`encoder_hidden_states` must be [{b}, L, {}] (cross_attention_dim), got {:?}",
                dims[0],
                context.shape()
            ));
        }
        for (name, t) in [
            ("sample", sample),
            ("timesteps", timesteps),
            ("encoder_hidden_states", context),
        ] {
            self.check_device(name, t)?;
        }
        Ok(())
    }

    fn check_device(&self, name: &str, t: &Tensor) -> Result<()> {
        if t.device() != &self.device {
            return Err(Error::Device(format!(
                "{OP}: `{name}` is on {} but the weights are on {}",
                t.device().name(),
                self.device.name()
            )));
        }
        Ok(())
    }
}
