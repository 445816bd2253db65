//! A1111's "hires fix" for txt2img: a first pass at the requested size, its result upscaled (the
//! latents by interpolation, or the decoded image by an upscaler), then an img2img pass at the
//! larger size from those upscaled latents / that image, with fresh noise from the same seeds.
//!
//! The second pass runs exactly `steps` steps as A1111 does when given a step count: a schedule of
//! `int(steps / min(denoising, 0.999))` steps of which the last `steps` run (diffusers' img2img
//! with that many inference steps and the same strength cuts the schedule at the same place).
//! Each batch runs both passes before the next batch starts, as in A1111.
//!
//! With an SDXL refiner, the refiner acts in the second pass only, A1111's default
//! (`hires_fix_refiner_pass` "second pass"): the first pass is the main model's alone, and the
//! second pass hands over to the refiner where its schedule reaches the switch (the timestep cut
//! of `refiner.rs`; a second pass that starts below the cut is the refiner's throughout).

use std::sync::Arc;

use kiln_runtime::Device;

use super::error::{PipelineError, Result};
use super::generate::{sample, SecondPass, SecondPassInput};
use super::latent_upscale::LatentUpscale;
use super::load::StableDiffusion;
use super::params::{GeneratedImage, GenerationParams, Progress, Step, StepControl};
use crate::image::{resize, RgbImage};
use crate::schedulers::SamplerSpec;
use crate::upscale::resize_nearest;

/// An image upscaler a hires fix can use (a resampling filter, or an upscaler model).
pub trait ImageUpscaler: Send + Sync {
    /// The name A1111 lists it under (`hr_upscaler`).
    fn name(&self) -> &str;
    /// `image` resized to exactly `width` x `height`; a model upscaler runs on `device` (the
    /// UNet's).
    fn upscale_to(
        &self,
        image: &RgbImage,
        width: usize,
        height: usize,
        device: &Device,
    ) -> Result<RgbImage>;
}

/// A1111's "Lanczos" (and "None", which A1111 also resizes with Lanczos).
pub struct LanczosUpscaler;

impl ImageUpscaler for LanczosUpscaler {
    fn name(&self) -> &str {
        "Lanczos"
    }
    fn upscale_to(
        &self,
        image: &RgbImage,
        width: usize,
        height: usize,
        _: &Device,
    ) -> Result<RgbImage> {
        Ok(resize(image, width, height)?)
    }
}

/// A1111's "Nearest": PIL's nearest-neighbour resize (`upscale::resize_nearest`).
pub struct NearestUpscaler;

impl ImageUpscaler for NearestUpscaler {
    fn name(&self) -> &str {
        "Nearest"
    }
    fn upscale_to(
        &self,
        image: &RgbImage,
        width: usize,
        height: usize,
        _: &Device,
    ) -> Result<RgbImage> {
        Ok(resize_nearest(image, width, height)?)
    }
}

#[derive(Clone)]
pub enum HiresUpscaler {
    Latent(LatentUpscale),
    Image(Arc<dyn ImageUpscaler>),
}

impl HiresUpscaler {
    /// The upscalers kiln has without a model file, by A1111's names (case-insensitive): the
    /// latent modes, "Lanczos", "Nearest", and "None" (which A1111 resizes with Lanczos).
    pub fn builtin(name: &str) -> Option<HiresUpscaler> {
        if let Some(mode) = LatentUpscale::from_name(name) {
            return Some(HiresUpscaler::Latent(mode));
        }
        match name.trim().to_ascii_lowercase().as_str() {
            "lanczos" | "none" => Some(HiresUpscaler::Image(Arc::new(LanczosUpscaler))),
            "nearest" => Some(HiresUpscaler::Image(Arc::new(NearestUpscaler))),
            _ => None,
        }
    }

    /// The names [`HiresUpscaler::builtin`] knows, in A1111's list order.
    pub fn builtin_names() -> Vec<&'static str> {
        let mut names: Vec<&str> = LatentUpscale::names().collect();
        names.extend(["None", "Lanczos", "Nearest"]);
        names
    }

    pub fn name(&self) -> &str {
        match self {
            HiresUpscaler::Latent(m) => m.name(),
            HiresUpscaler::Image(u) => u.name(),
        }
    }
}

impl std::fmt::Debug for HiresUpscaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HiresUpscaler({:?})", self.name())
    }
}

/// The second pass of a txt2img generation (A1111's `enable_hr` fields).
#[derive(Clone, Debug)]
pub struct HiresFix {
    pub upscaler: HiresUpscaler,
    /// The final size (see [`hires_size`]).
    pub width: usize,
    pub height: usize,
    /// Steps the second pass runs; 0 = as many as the first pass (`hr_second_pass_steps`).
    pub steps: usize,
    /// How far the upscaled latents are noised back (`denoising_strength`), in (0, 1].
    pub denoising_strength: f64,
    /// `hr_prompt` / `hr_negative_prompt`; `None` = the first pass's.
    pub prompt: Option<String>,
    pub negative_prompt: Option<String>,
    /// `hr_sampler_name`; `None` = the first pass's sampler.
    pub sampler: Option<SamplerSpec>,
    /// How the request gave the size, for the infotext: `Hires upscale: 2` or
    /// `Hires resize: 1024x768`.
    pub size_label: HiresSize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HiresSize {
    Scale(f64),
    Resize(usize, usize),
}

/// A1111's second-pass size: `hr_scale` times the first pass's, or `hr_resize_x` / `hr_resize_y`
/// (one of them 0 keeps the aspect ratio); rounded down to a multiple of `multiple`, which is
/// what A1111's latents come out at.
pub fn hires_size(
    (width, height): (usize, usize),
    size: HiresSize,
    multiple: usize,
) -> Result<(usize, usize)> {
    let (w, h) = match size {
        HiresSize::Scale(s) => {
            if !(s.is_finite() && s > 0.0) {
                return Err(PipelineError::invalid(format!(
                    "hr_scale must be a positive number, got {s}"
                )));
            }
            ((width as f64 * s) as usize, (height as f64 * s) as usize)
        }
        HiresSize::Resize(0, 0) => (width, height),
        HiresSize::Resize(x, 0) => (x, x * height / width),
        HiresSize::Resize(0, y) => (y * width / height, y),
        HiresSize::Resize(x, y) => (x, y),
    };
    let round = |v: usize| v / multiple * multiple;
    let (w, h) = (round(w), round(h));
    if w == 0 || h == 0 {
        return Err(PipelineError::invalid(format!(
            "hires fix: the second pass would be {w}x{h}; it must be at least {multiple}x{multiple}"
        )));
    }
    Ok((w, h))
}

/// A1111's second-pass schedule: the total step count and how many entries are skipped.
fn second_pass_schedule(steps: usize, denoising: f64) -> (usize, usize) {
    let total = ((steps as f64 / denoising.min(0.999)) as usize).max(steps);
    (total, total - steps)
}

pub(crate) fn generate(
    model: &StableDiffusion,
    params: &GenerationParams,
    hires: &HiresFix,
    control: &mut dyn FnMut(&Step) -> StepControl,
) -> Result<Vec<GeneratedImage>> {
    if params.init.is_some() {
        return Err(PipelineError::invalid(
            "hires fix is for txt2img: it cannot be combined with an init image",
        ));
    }
    let d = hires.denoising_strength;
    if !(d > 0.0 && d <= 1.0) {
        return Err(PipelineError::invalid(format!(
            "hires fix: denoising strength must be in (0, 1], got {d}"
        )));
    }
    let m = model.size_multiple();
    if !hires.width.is_multiple_of(m)
        || !hires.height.is_multiple_of(m)
        || hires.width == 0
        || hires.height == 0
    {
        return Err(PipelineError::invalid(format!(
            "hires fix: the second pass size {}x{} must be a positive multiple of {m}",
            hires.width, hires.height
        )));
    }
    let second_steps = if hires.steps == 0 {
        params.steps
    } else {
        hires.steps
    };
    let (total2, start2) = second_pass_schedule(second_steps, d);
    let per_batch = params.steps + second_steps;
    let total = params.batch_count * per_batch;
    let mut images = Vec::new();
    for k in 0..params.batch_count {
        let mut first = params.clone();
        first.hires = None;
        first.batch_count = 1;
        first.seed = params.seed.wrapping_add((k * params.batch_size) as u64);
        let mut second = first.clone();
        first.refiner = None;
        second.steps = total2;
        second.width = hires.width;
        second.height = hires.height;
        if let Some(p) = &hires.prompt {
            second.prompt = p.clone();
        }
        if let Some(n) = &hires.negative_prompt {
            second.negative_prompt = n.clone();
        }
        if let Some(s) = &hires.sampler {
            second.sampler = *s;
        }

        let offset = k * per_batch;
        let mut stop = StepControl::Continue;
        let mut upscaled = None;
        sample(
            model,
            &first,
            None,
            &mut |step| relabel(control, step, offset, total),
            &mut |batch| {
                stop = batch.stop;
                if batch.stop != StepControl::Continue {
                    images.extend(batch.decode(params.vae_tiling.as_ref())?);
                    return Ok(());
                }
                upscaled = Some(upscale(model, params, hires, &batch)?);
                Ok(())
            },
        )?;
        let Some(from) = upscaled else {
            if stop == StepControl::Interrupt {
                break;
            }
            continue;
        };
        sample(
            model,
            &second,
            Some(SecondPass {
                from,
                start: start2,
            }),
            &mut |step| relabel(control, step, offset + params.steps, total),
            &mut |batch| {
                stop = batch.stop;
                images.extend(batch.decode(params.vae_tiling.as_ref())?);
                Ok(())
            },
        )?;
        if stop == StepControl::Interrupt {
            break;
        }
    }
    Ok(images)
}

/// Progress across both passes of every batch.
fn relabel(
    control: &mut dyn FnMut(&Step) -> StepControl,
    step: &Step,
    offset: usize,
    total: usize,
) -> StepControl {
    control(&Step {
        progress: Progress {
            step: offset + step.progress.step,
            total,
        },
        latents: step.latents,
        shape: step.shape,
    })
}

fn upscale(
    model: &StableDiffusion,
    params: &GenerationParams,
    hires: &HiresFix,
    batch: &super::generate::Sampled,
) -> Result<SecondPassInput> {
    let f = model.vae_scale_factor();
    let [_, _, h, w] = batch.shape;
    match &hires.upscaler {
        HiresUpscaler::Latent(mode) => Ok(SecondPassInput::Latents(mode.resize(
            &batch.latents,
            (h, w),
            (hires.height / f, hires.width / f),
        )?)),
        HiresUpscaler::Image(upscaler) => {
            // A1111 hands the upscaler the 8-bit image, as it would save it.
            let images = batch.decode(params.vae_tiling.as_ref())?;
            let upscaled = images
                .iter()
                .map(|img| {
                    upscaler.upscale_to(
                        &img.to_rgb8(),
                        hires.width,
                        hires.height,
                        model.unet.device(),
                    )
                })
                .collect::<Result<_>>()?;
            Ok(SecondPassInput::Images(upscaled))
        }
    }
}

/// A1111's infotext fields for a hires fix (its `extra_generation_params`, written after `RNG`;
/// `Denoising strength` goes in its usual place).
pub fn hires_fields(hires: &HiresFix, first_pass: &GenerationParams) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    match hires.size_label {
        HiresSize::Scale(s) => fields.push(("Hires upscale".into(), s.to_string())),
        HiresSize::Resize(x, y) => fields.push(("Hires resize".into(), format!("{x}x{y}"))),
    }
    if hires.steps != 0 {
        fields.push(("Hires steps".into(), hires.steps.to_string()));
    }
    fields.push(("Hires upscaler".into(), hires.upscaler.name().to_string()));
    if let Some(s) = &hires.sampler {
        if s.kind != first_pass.sampler.kind {
            fields.push(("Hires sampler".into(), s.kind.name().to_string()));
        }
    }
    if let Some(p) = hires.prompt.as_ref().filter(|p| **p != first_pass.prompt) {
        fields.push(("Hires prompt".into(), p.clone()));
    }
    if let Some(n) = hires
        .negative_prompt
        .as_ref()
        .filter(|n| **n != first_pass.negative_prompt)
    {
        fields.push(("Hires negative prompt".into(), n.clone()));
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_a1111() {
        assert_eq!(
            hires_size((512, 512), HiresSize::Scale(2.0), 8).unwrap(),
            (1024, 1024)
        );
        // 512 * 1.3 = 665.6: A1111's int() then latents of 665 // 8 = 83 -> 664.
        assert_eq!(
            hires_size((512, 512), HiresSize::Scale(1.3), 8).unwrap(),
            (664, 664)
        );
        assert_eq!(
            hires_size((512, 768), HiresSize::Resize(1024, 0), 8).unwrap(),
            (1024, 1536)
        );
        assert_eq!(
            hires_size((512, 768), HiresSize::Resize(0, 1024), 8).unwrap(),
            (680, 1024)
        );
        assert!(hires_size((512, 512), HiresSize::Scale(-1.0), 8).is_err());
        assert!(hires_size((64, 64), HiresSize::Scale(0.01), 8).is_err());
    }

    #[test]
    fn the_second_pass_runs_exactly_its_steps() {
        assert_eq!(second_pass_schedule(10, 0.7), (14, 4));
        assert_eq!(second_pass_schedule(3, 0.6), (5, 2));
        // Denoising 1 is capped at 0.999 as A1111 does: one extra schedule entry, skipped.
        assert_eq!(second_pass_schedule(20, 1.0), (20, 0));
    }
}
