//! txt2img, img2img and inpainting: diffusers' StableDiffusionPipeline, Img2ImgPipeline and
//! InpaintPipeline step for step, with A1111's prompt handling and per-image seeds.
//!
//! Noise is drawn on the host from one stream per image (see `noise`), in diffusers' order:
//! img2img: VAE sample of the init image, then the initial noise, then any ancestral step noise;
//! inpainting: VAE sample of the init image (4-channel UNet, or strength < 1), the initial noise,
//! the VAE sample of the masked image, then step noise.

use kiln_runtime::{trace, DType, Tensor};

use super::control::{check_units, Controls};
use super::denoise::{Denoiser, InpaintInputs};
use super::error::{PipelineError, Result};
use super::inpaint::{binarize, fit_mask, masked_image, nearest};
use super::latents::{encode_sampled, image_to_tensor, unscale};
use super::load::StableDiffusion;
use super::noise::BatchNoise;
use super::params::{GeneratedImage, GenerationParams, Progress, Step, StepControl};
use super::plan::{PHASE_TEXT, PHASE_UNET, PHASE_VAE_DECODE, PHASE_VAE_ENCODE};
use super::text::encode_pair;
use crate::image::resize;
use crate::lora::with_loras;
use crate::rng::NoiseSource;
use crate::schedulers::{build_scheduler, img2img_start, Scheduler};
use crate::vae::VaeTiling;

/// Runs every batch of `params` and returns the images in seed order. `progress` is called after
/// each denoising step.
pub fn generate(
    model: &StableDiffusion,
    params: &GenerationParams,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<GeneratedImage>> {
    generate_controlled(model, params, &mut |step| {
        progress(step.progress);
        StepControl::Continue
    })
}

/// [`generate`] with a callback that sees each step's latents and can end a batch early (skip)
/// or the whole run (interrupt); either way the images of the batch in progress are decoded from
/// its current latents and returned, as A1111 does.
pub fn generate_controlled(
    model: &StableDiffusion,
    params: &GenerationParams,
    control: &mut dyn FnMut(&Step) -> StepControl,
) -> Result<Vec<GeneratedImage>> {
    check(model, params)?;
    // Set for this generation only: the guard clears the adapters however it ends.
    let (_loras, prompt, negative) = with_loras(model, params)?;
    enter_phase(model, PHASE_TEXT);
    let guidance = params.cfg_scale > 1.0;
    let (cond, uncond) = encode_pair(
        model,
        &prompt,
        guidance.then_some(negative.as_str()),
        params.clip_skip,
        params.embeddings.as_deref(),
    )?;
    let inputs = Inputs::prepare(model, params)?;

    let steps = params.steps;
    let start = match &params.init {
        Some(init) => img2img_start(steps, init.strength)?,
        None => 0,
    };
    let total = params.batch_count * (steps - start);
    let seeds = params.seeds();
    let mut images = Vec::with_capacity(seeds.len());
    for (k, batch_seeds) in seeds.chunks(params.batch_size).enumerate() {
        let mut noise = BatchNoise::new(params.rng, batch_seeds);
        let mut scheduler = build_scheduler(&model.scheduler_config, &params.sampler, steps)?;
        scheduler.set_noise_seeds(batch_seeds);
        let f = model.vae_scale_factor();
        let shape = [
            batch_seeds.len(),
            model.vae.config().latent_channels,
            params.height / f,
            params.width / f,
        ];
        if params.init.is_some() {
            enter_phase(model, PHASE_VAE_ENCODE);
        }
        let tiling = params.vae_tiling.as_ref();
        // Heun and DPM2 lay out two entries per step: img2img skips `order` entries per step.
        let order = scheduler.order();
        let first = start * order;
        let init = inputs.initial(model, scheduler.as_ref(), first, shape, &mut noise, tiling)?;
        enter_phase(model, PHASE_UNET);
        let denoiser = Denoiser::new(
            model,
            &cond,
            uncond.as_ref().map(|u| (u, params.cfg_scale)),
            shape,
            (params.height, params.width),
            init.inpaint,
        )?;
        let denoiser = if params.controls.is_empty() {
            denoiser
        } else {
            denoiser.with_controls(Controls::prepare(
                &params.controls,
                model.unet.device(),
                params.width,
                params.height,
                shape[0],
                guidance,
            )?)
        };
        let mut latents = init.latents;
        let mut stop = StepControl::Continue;
        let n = scheduler.timesteps().len();
        for i in first..n {
            let t = scheduler.timesteps()[i];
            let x = scheduler.scale_model_input(&latents, i)?;
            let eps = denoiser.predict(&x, t, i - first, n - first)?;
            latents = scheduler.step(&eps, i, &latents, &mut noise)?;
            if let Some(blend) = &init.blend {
                latents = blend.apply(scheduler.as_ref(), &latents, i)?;
            }
            // Progress, previews and interrupts come at whole steps, not between a step's stages.
            let done = i + 1 - first;
            if done % order != 0 && i + 1 != n {
                continue;
            }
            stop = control(&Step {
                progress: Progress {
                    step: k * (steps - start) + done.div_ceil(order),
                    total,
                },
                latents: &latents,
                shape,
            });
            if stop != StepControl::Continue {
                break;
            }
        }
        enter_phase(model, PHASE_VAE_DECODE);
        images.extend(decode(model, &latents, shape, batch_seeds, tiling)?);
        if stop == StepControl::Interrupt {
            break;
        }
    }
    Ok(images)
}

fn check(model: &StableDiffusion, p: &GenerationParams) -> Result<()> {
    let m = model.size_multiple();
    if p.width == 0 || p.height == 0 || !p.width.is_multiple_of(m) || !p.height.is_multiple_of(m) {
        return Err(PipelineError::invalid(format!(
            "width and height must be positive multiples of {m} for this model, got {}x{}",
            p.width, p.height
        )));
    }
    if p.steps == 0 {
        return Err(PipelineError::invalid("steps must be at least 1"));
    }
    if p.batch_size == 0 || p.batch_count == 0 {
        return Err(PipelineError::invalid(
            "batch size and batch count must be at least 1",
        ));
    }
    if !p.cfg_scale.is_finite() {
        return Err(PipelineError::invalid(format!(
            "CFG scale {} is not a finite number",
            p.cfg_scale
        )));
    }
    let max = model.max_clip_skip();
    if p.clip_skip == 0 || p.clip_skip > max {
        return Err(PipelineError::invalid(format!(
            "clip skip {} must be between 1 and {max} for this model's text encoder{}",
            p.clip_skip,
            if model.sdxl.is_some() { "s" } else { "" }
        )));
    }
    check_units(&p.controls)?;
    for u in &p.controls {
        crate::controlnet::check_base(&u.name, u.model.model(), model.unet.resolved())?;
    }
    let has_mask = p.init.as_ref().is_some_and(|i| i.mask.is_some());
    if model.is_inpainting() && !has_mask {
        return Err(PipelineError::invalid(
            "this is an inpainting model (its UNet takes latents, mask and masked image): give \
             it an init image and a mask",
        ));
    }
    Ok(())
}

/// The per-run inputs that do not depend on the seed.
enum Inputs {
    Txt2Img,
    Img2Img {
        image: Tensor,
    },
    Inpaint {
        image: Tensor,
        /// Latent-resolution mask, 1 = repaint.
        mask: Vec<f32>,
        /// The masked image in [-1, 1], [1, 3, H, W].
        masked: Tensor,
        strength: f64,
    },
}

/// What a batch starts from.
struct Initial {
    latents: Vec<f32>,
    inpaint: Option<InpaintInputs>,
    blend: Option<Blend>,
}

impl Inputs {
    fn prepare(model: &StableDiffusion, p: &GenerationParams) -> Result<Inputs> {
        let Some(init) = &p.init else {
            return Ok(Inputs::Txt2Img);
        };
        let img = resize(&init.image, p.width, p.height)?;
        let image = image_to_tensor(model, &img)?;
        let Some(mask) = &init.mask else {
            return Ok(Inputs::Img2Img { image });
        };
        let mask = binarize(&fit_mask(mask, p.width, p.height)?);
        let masked = Tensor::from_f32(
            model.vae.device(),
            &[1, 3, p.height, p.width],
            DType::F32,
            &masked_image(&img, &mask),
        )?;
        let f = model.vae_scale_factor();
        let latent_mask = nearest(&mask, (p.height, p.width), (p.height / f, p.width / f));
        Ok(Inputs::Inpaint {
            image,
            mask: latent_mask,
            masked,
            strength: init.strength,
        })
    }

    /// Each batch's starting latents (and inpainting inputs), drawing noise in diffusers' order.
    fn initial(
        &self,
        model: &StableDiffusion,
        scheduler: &dyn Scheduler,
        start: usize,
        [b, c, h, w]: [usize; 4],
        noise: &mut dyn NoiseSource,
        tiling: Option<&VaeTiling>,
    ) -> Result<Initial> {
        let len = b * c * h * w;
        let sigma = scheduler.init_noise_sigma();
        match self {
            Inputs::Txt2Img => Ok(Initial {
                latents: noise.randn(len).iter().map(|v| v * sigma).collect(),
                inpaint: None,
                blend: None,
            }),
            Inputs::Img2Img { image } => {
                let image_latents = encode_sampled(model, image, b, noise, tiling)?;
                let eps = noise.randn(len);
                Ok(Initial {
                    latents: scheduler.add_noise(&image_latents, &eps, start)?,
                    inpaint: None,
                    blend: None,
                })
            }
            Inputs::Inpaint {
                image,
                mask,
                masked,
                strength,
            } => {
                let blending = !model.is_inpainting();
                let from_noise = *strength == 1.0;
                let image_latents = if blending || !from_noise {
                    Some(encode_sampled(model, image, b, noise, tiling)?)
                } else {
                    None
                };
                let eps = noise.randn(len);
                let latents = match (&image_latents, from_noise) {
                    (Some(z), false) => scheduler.add_noise(z, &eps, start)?,
                    _ => eps.iter().map(|v| v * sigma).collect(),
                };
                if blending {
                    // diffusers encodes the masked image even when the UNet does not take it;
                    // its draw is made (and discarded) so the step noise that follows matches.
                    noise.randn(len);
                    Ok(Initial {
                        latents,
                        inpaint: None,
                        blend: Some(Blend {
                            image_latents: image_latents.unwrap_or_default(),
                            noise: eps,
                            mask: mask.clone(),
                        }),
                    })
                } else {
                    Ok(Initial {
                        latents,
                        inpaint: Some(InpaintInputs {
                            mask: mask.clone(),
                            masked_latents: encode_sampled(model, masked, b, noise, tiling)?,
                        }),
                        blend: None,
                    })
                }
            }
        }
    }
}

/// Latent blending for inpainting with an ordinary UNet: after each step, the unmasked area is
/// replaced by the init image's latents noised to the next step's level (the clean latents after
/// the last step).
struct Blend {
    image_latents: Vec<f32>,
    noise: Vec<f32>,
    /// Latent-resolution mask plane, 1 = repaint.
    mask: Vec<f32>,
}

impl Blend {
    fn apply(&self, scheduler: &dyn Scheduler, latents: &[f32], step: usize) -> Result<Vec<f32>> {
        let proper = if step + 1 < scheduler.timesteps().len() {
            scheduler.add_noise(&self.image_latents, &self.noise, step + 1)?
        } else {
            self.image_latents.clone()
        };
        let plane = self.mask.len();
        Ok(latents
            .iter()
            .zip(&proper)
            .enumerate()
            .map(|(i, (&l, &p))| {
                let m = self.mask[i % plane];
                (1.0 - m) * p + m * l
            })
            .collect())
    }
}

/// VAE-decodes each image's latents (in tiles when `tiling` is given) and maps them to [0, 1].
fn decode(
    model: &StableDiffusion,
    latents: &[f32],
    [b, c, h, w]: [usize; 4],
    seeds: &[u64],
    tiling: Option<&VaeTiling>,
) -> Result<Vec<GeneratedImage>> {
    let per = c * h * w;
    let mut out = Vec::with_capacity(b);
    for (i, &seed) in seeds.iter().enumerate().take(b) {
        let z = unscale(model, &latents[i * per..(i + 1) * per]);
        let z = Tensor::from_f32(model.vae.device(), &[1, c, h, w], DType::F32, &z)?;
        let x = match tiling {
            Some(t) => model.vae.decode_tiled(&z, t)?,
            None => model.vae.decode(&z)?,
        };
        let (height, width) = (x.dim(2), x.dim(3));
        let chw = x.to_vec_f32()?;
        let plane = height * width;
        let mut pixels = Vec::with_capacity(3 * plane);
        for p in 0..plane {
            for ch in 0..3 {
                pixels.push((chw[ch * plane + p] / 2.0 + 0.5).clamp(0.0, 1.0));
            }
        }
        out.push(GeneratedImage {
            seed,
            width,
            height,
            pixels,
        });
    }
    Ok(out)
}

/// Marks the start of a phase for `--plan`'s trace and gives the device the buffers the previous
/// phase left cached: the next phase's tensors have other sizes, so keeping them would only raise
/// the reserved peak (for SD 1.5 at 512x512 on a GPU, by several hundred MiB). The plan's replay
/// does the same at each mark.
fn enter_phase(model: &StableDiffusion, name: &str) {
    trace::phase(name);
    for device in [
        model.unet.device(),
        model.vae.device(),
        model.text_encoder.device(),
    ] {
        device.release_cached_memory();
    }
}
