//! One UNet evaluation per step with classifier-free guidance, as diffusers' pipelines do it: the
//! latents are doubled (unconditional half first), run in one UNet batch, and recombined as
//! `uncond + scale * (cond - uncond)`. For a 9-channel inpainting UNet the mask and the
//! masked-image latents are appended to the scaled latents along the channels. An SDXL UNet also
//! gets each row's pooled text embedding and time ids (`sdxl::time_ids`).

use kiln_runtime::{DType, Tensor};

use super::control::{Controls, StepInputs};
use super::error::{PipelineError, Result};
use super::load::StableDiffusion;
use super::sdxl::time_ids;
use super::text::Conditioning;
use crate::unet::{AddedCond, UnetInputs};

/// The inpainting UNet's extra input channels.
pub struct InpaintInputs {
    /// One latent-sized plane, shared by the batch (1 = repaint).
    pub mask: Vec<f32>,
    /// `[batch, C, h, w]` UNet-scale latents of the masked image, one per image.
    pub masked_latents: Vec<f32>,
}

pub struct Denoiser<'a> {
    model: &'a StableDiffusion,
    /// `[2B, L, D]` (unconditional first) with guidance, else `[B, L, D]`, on the model's device.
    context: Tensor,
    /// SDXL: `text_embeds` [rows, P] and `time_ids` [rows, K], in the context's row order.
    added: Option<(Tensor, Tensor)>,
    guidance: Option<f32>,
    /// `[B, C, h, w]` of the latents.
    shape: [usize; 4],
    inpaint: Option<InpaintInputs>,
    /// ControlNet units (`with_controls`).
    controls: Option<Controls>,
}

impl<'a> Denoiser<'a> {
    /// `image_size` (height, width) in pixels sets SDXL's time ids.
    pub fn new(
        model: &'a StableDiffusion,
        cond: &Conditioning,
        uncond: Option<(&Conditioning, f32)>,
        shape: [usize; 4],
        image_size: (usize, usize),
        inpaint: Option<InpaintInputs>,
    ) -> Result<Denoiser<'a>> {
        let b = shape[0];
        let mut values = Vec::new();
        if let Some((u, _)) = uncond {
            if u.chunks != cond.chunks {
                return Err(PipelineError::invalid(format!(
                    "prompt ({} chunks) and negative prompt ({} chunks) were not padded to one length",
                    cond.chunks, u.chunks
                )));
            }
            for _ in 0..b {
                values.extend_from_slice(&u.values);
            }
        }
        for _ in 0..b {
            values.extend_from_slice(&cond.values);
        }
        let rows = if uncond.is_some() { 2 * b } else { b };
        let context = Tensor::from_f32(
            model.device(),
            &[rows, cond.tokens(), cond.dim],
            DType::F32,
            &values,
        )?;
        let added = match &model.sdxl {
            None => None,
            Some(x) => {
                let (height, width) = image_size;
                let mut pooled = Vec::new();
                let mut ids = Vec::new();
                let mut rows_of = |c: &Conditioning, negative: bool| -> Result<()> {
                    let p = c.pooled.as_ref().ok_or_else(|| {
                        PipelineError::invalid("SDXL conditioning without a pooled embedding")
                    })?;
                    for _ in 0..b {
                        pooled.extend_from_slice(p);
                        ids.extend(time_ids(x, height, width, negative));
                    }
                    Ok(())
                };
                if let Some((u, _)) = uncond {
                    rows_of(u, true)?;
                }
                rows_of(cond, false)?;
                let (p, k) = (pooled.len() / rows, ids.len() / rows);
                let device = model.device();
                Some((
                    Tensor::from_f32(device, &[rows, p], DType::F32, &pooled)?,
                    Tensor::from_f32(device, &[rows, k], DType::F32, &ids)?,
                ))
            }
        };
        Ok(Denoiser {
            model,
            context,
            added,
            guidance: uncond.map(|(_, g)| g),
            shape,
            inpaint,
            controls: None,
        })
    }

    /// Runs these ControlNets before each UNet evaluation.
    pub fn with_controls(mut self, controls: Controls) -> Denoiser<'a> {
        self.controls = Some(controls);
        self
    }

    /// The guided model output for `x` (already through `scale_model_input`) at timestep `t`,
    /// step `index` of the `count` this run denoises (which decides which ControlNet units act).
    pub fn predict(&self, x: &[f32], t: f32, index: usize, count: usize) -> Result<Vec<f32>> {
        let [b, c, h, w] = self.shape;
        let copies = if self.guidance.is_some() { 2 } else { 1 };
        let n = copies * b;
        let per = c * h * w;
        let mut input = Vec::new();
        let in_channels = match &self.inpaint {
            None => {
                for _ in 0..copies {
                    input.extend_from_slice(x);
                }
                c
            }
            Some(inp) => {
                for i in 0..n {
                    let img = i % b;
                    input.extend_from_slice(&x[img * per..(img + 1) * per]);
                    input.extend_from_slice(&inp.mask);
                    input.extend_from_slice(&inp.masked_latents[img * per..(img + 1) * per]);
                }
                2 * c + 1
            }
        };
        let device = self.model.device();
        let sample = Tensor::from_f32(device, &[n, in_channels, h, w], DType::F32, &input)?;
        let timestep = Tensor::from_f32(device, &[1], DType::F32, &[t])?;
        let added = self.added.as_ref().map(|(t, i)| (t, i));
        let control = match &self.controls {
            Some(controls) => controls.residuals(&StepInputs {
                x,
                shape: self.shape,
                timestep: &timestep,
                context: &self.context,
                added,
                index,
                count,
            })?,
            None => None,
        };
        let out = self
            .model
            .unet
            .run(&UnetInputs {
                sample: &sample,
                timesteps: &timestep,
                context: &self.context,
                added: added.map(|(text_embeds, time_ids)| AddedCond {
                    text_embeds,
                    time_ids,
                }),
                control: control.as_ref(),
            })?
            .to_vec_f32()?;
        Ok(match self.guidance {
            None => out,
            Some(g) => {
                let (uncond, cond) = out.split_at(b * per);
                uncond
                    .iter()
                    .zip(cond)
                    .map(|(&u, &c)| u + g * (c - u))
                    .collect()
            }
        })
    }
}
