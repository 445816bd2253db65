//! txt2img, img2img and inpainting: diffusers' StableDiffusionPipeline, Img2ImgPipeline and
//! InpaintPipeline step for step, with A1111's prompt handling and per-image seeds.
//!
//! Noise is drawn on the host from one stream per image (see `noise`), in diffusers' order:
//! img2img: VAE sample of the init image, then the initial noise, then any ancestral step noise;
//! inpainting: VAE sample of the init image (4-channel UNet, or strength < 1), the initial noise,
//! the VAE sample of the masked image, then step noise. With a refiner (`refiner.rs`) the main
//! model runs the first part of the schedule and the refiner the rest, on the same latents.

use kiln_runtime::{trace, DType, Tensor};

use super::control::{check_units, Controls};
use super::denoise::{Denoiser, InpaintInputs};
use super::error::{PipelineError, Result};
use super::inpaint::{binarize, fit_mask, masked_image, nearest};
use super::latents::{encode_each, encode_sampled, image_to_tensor, unscale};
use super::load::StableDiffusion;
use super::noise::BatchNoise;
use super::params::{GeneratedImage, GenerationParams, Progress, Step, StepControl};
use super::plan::{PHASE_REFINER, PHASE_TEXT, PHASE_UNET, PHASE_VAE_DECODE, PHASE_VAE_ENCODE};
use super::refiner;
use super::text::encode_pair;
use crate::image::{resize, RgbImage};
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
    if let Some(hires) = &params.hires {
        return super::hires::generate(model, params, hires, control);
    }
    let mut images = Vec::new();
    sample(model, params, None, control, &mut |batch| {
        images.extend(batch.decode(params.vae_tiling.as_ref())?);
        Ok(())
    })?;
    Ok(images)
}

/// One batch's latents when its sampling ended.
pub(crate) struct Sampled<'a> {
    pub latents: Vec<f32>,
    pub shape: [usize; 4],
    pub seeds: &'a [u64],
    /// `Continue` when every step ran.
    pub stop: StepControl,
    /// The model whose VAE decodes: the refiner's once it ran, as in diffusers' second pipeline
    /// and in A1111, which has the refiner loaded at the end (for SDXL both share one VAE).
    pub decoder: &'a StableDiffusion,
}

impl Sampled<'_> {
    pub fn decode(&self, tiling: Option<&VaeTiling>) -> Result<Vec<GeneratedImage>> {
        enter_phase(self.decoder, PHASE_VAE_DECODE);
        decode(self.decoder, &self.latents, self.shape, self.seeds, tiling)
    }
}

/// Where a hires-fix second pass starts: its own starting point (upscaled latents, or the
/// upscaled images to encode) and the schedule steps it skips.
pub(crate) struct SecondPass {
    pub from: SecondPassInput,
    pub start: usize,
}

pub(crate) enum SecondPassInput {
    /// UNet-scale latents, `[B, C, h, w]` for the batch.
    Latents(Vec<f32>),
    /// One image per seed, already at the output size.
    Images(Vec<RgbImage>),
}

/// Samples every batch of `params` and hands each batch's latents to `on_batch`; stops after a
/// batch that was interrupted. `second` replaces `params.init` as the starting point.
pub(crate) fn sample<'m>(
    model: &'m StableDiffusion,
    params: &'m GenerationParams,
    second: Option<SecondPass>,
    control: &mut dyn FnMut(&Step) -> StepControl,
    on_batch: &mut dyn FnMut(Sampled) -> Result<()>,
) -> Result<()> {
    check(model, params)?;
    // Set for this generation only: the guard clears the adapters however it ends.
    let (_loras, prompt, negative) = with_loras(model, params)?;
    enter_phase(model, PHASE_TEXT);
    let guidance = params.cfg_scale > 1.0;
    let embeddings = params.embeddings.as_deref();
    let negative = guidance.then_some(negative.as_str());
    let (cond, uncond) = encode_pair(model, &prompt, negative, params.clip_skip, embeddings)?;
    // The refiner's own conditioning (bigG alone, aesthetic-score time ids).
    let refiner = match &params.refiner {
        Some(r) => {
            let (c, u) = encode_pair(&r.model, &prompt, negative, params.clip_skip, embeddings)?;
            Some((r, c, u))
        }
        None => None,
    };
    let hires_pass = second.is_some();
    let (inputs, start) = match second {
        Some(SecondPass { from, start }) => (Inputs::second_pass(model, from)?, start),
        None => {
            let start = match &params.init {
                Some(init) => img2img_start(params.steps, init.strength)?,
                None => 0,
            };
            (Inputs::prepare(model, params)?, start)
        }
    };

    let steps = params.steps;
    let stages = Stages::new(model, params, start)?;
    let per_batch = stages.steps();
    let total = params.batch_count * per_batch;
    let seeds = params.seeds();
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
        let first = stages.main.0;
        let init = inputs.initial(
            model,
            scheduler.as_ref(),
            first,
            shape,
            &mut noise,
            tiling,
            k,
        )?;
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
                (params.width, params.height),
                shape[0],
                guidance,
                hires_pass,
            )?)
        };
        let mut latents = init.latents;
        let mut run = Run {
            control: &mut *control,
            noise: &mut noise,
            schedule: (stages.main.0, scheduler.timesteps().len()),
            shape,
            batch_done: k * per_batch,
            done: 0,
            total,
        };
        let mut stop = run.stage(
            scheduler.as_mut(),
            &denoiser,
            stages.main,
            init.blend.as_ref(),
            &mut latents,
        )?;
        drop(denoiser);
        let mut decoder = model;
        if let (Some((r, c, u)), Some(range), StepControl::Continue) =
            (&refiner, stages.refiner, stop)
        {
            decoder = &r.model;
            enter_phase(&r.model, PHASE_REFINER);
            // The refiner's sampler, a fresh one over the same schedule, as diffusers' second
            // pipeline builds it.
            let mut scheduler = build_scheduler(&r.model.scheduler_config, &params.sampler, steps)?;
            scheduler.set_noise_seeds(batch_seeds);
            let denoiser = Denoiser::new(
                &r.model,
                c,
                u.as_ref().map(|u| (u, params.cfg_scale)),
                shape,
                (params.height, params.width),
                None,
            )?;
            stop = run.stage(scheduler.as_mut(), &denoiser, range, None, &mut latents)?;
        }
        on_batch(Sampled {
            latents,
            shape,
            seeds: batch_seeds,
            stop,
            decoder,
        })?;
        if stop == StepControl::Interrupt {
            break;
        }
    }
    Ok(())
}

/// Which schedule entries each model runs, `[from, to)`: all of them for the main model alone,
/// else split at the refiner switch (`refiner.rs`).
struct Stages {
    main: (usize, usize),
    refiner: Option<(usize, usize)>,
    order: usize,
}

impl Stages {
    /// `start`: the first step (img2img's strength skips some).
    fn new(model: &StableDiffusion, p: &GenerationParams, start: usize) -> Result<Stages> {
        // A throwaway scheduler: the schedule depends on the settings, not the seeds.
        let s = build_scheduler(&model.scheduler_config, &p.sampler, p.steps)?;
        // Heun and DPM2 lay out two entries per step: img2img skips `order` entries per step.
        let order = s.order();
        let first = start * order;
        let n = s.timesteps().len();
        let Some(r) = &p.refiner else {
            return Ok(Stages {
                main: (first, n),
                refiner: None,
                order,
            });
        };
        let end = refiner::main_end(model, s.as_ref(), r.switch_at).max(first);
        let rs = build_scheduler(&r.model.scheduler_config, &p.sampler, p.steps)?;
        let from = refiner::refiner_start(&r.model, rs.as_ref(), r.switch_at).max(first);
        let rn = rs.timesteps().len();
        Ok(Stages {
            main: (first, end.min(n)),
            refiner: (from < rn).then_some((from, rn)),
            order,
        })
    }

    /// Whole steps per batch, as progress counts them.
    fn steps(&self) -> usize {
        let len = |(a, b): (usize, usize)| (b - a).div_ceil(self.order);
        len(self.main) + self.refiner.map_or(0, len)
    }
}

/// Whether a txt2img run of `p` steps both the main model and its refiner at least once.
pub(super) fn steps_both_models(model: &StableDiffusion, p: &GenerationParams) -> Result<bool> {
    let stages = Stages::new(model, p, 0)?;
    Ok(stages.main.0 < stages.main.1 && stages.refiner.is_some())
}

/// One batch's sampling state shared by its stages.
struct Run<'a> {
    control: &'a mut dyn FnMut(&Step) -> StepControl,
    noise: &'a mut BatchNoise,
    /// The schedule entries the run covers, `[first, n)`: a ControlNet's guidance start / end are
    /// fractions of it (diffusers' `controlnet_keep`).
    schedule: (usize, usize),
    shape: [usize; 4],
    /// Steps of the batches before this one.
    batch_done: usize,
    /// Whole steps of this batch so far.
    done: usize,
    total: usize,
}

impl Run<'_> {
    /// Steps `latents` through schedule entries `[from, to)` with one model.
    fn stage(
        &mut self,
        scheduler: &mut dyn Scheduler,
        denoiser: &Denoiser,
        (from, to): (usize, usize),
        blend: Option<&Blend>,
        latents: &mut Vec<f32>,
    ) -> Result<StepControl> {
        let order = scheduler.order();
        for i in from..to {
            let t = scheduler.timesteps()[i];
            let x = scheduler.scale_model_input(latents, i)?;
            let (first, n) = self.schedule;
            let eps = denoiser.predict(&x, t, i.saturating_sub(first), n - first)?;
            *latents = scheduler.step(&eps, i, latents, &mut *self.noise)?;
            if let Some(blend) = blend {
                *latents = blend.apply(scheduler, latents, i)?;
            }
            // Progress, previews and interrupts come at whole steps, not between a step's stages.
            let done = i + 1 - from;
            if done % order != 0 && i + 1 != to {
                continue;
            }
            let stop = (self.control)(&Step {
                progress: Progress {
                    step: self.batch_done + self.done + done.div_ceil(order),
                    total: self.total,
                },
                latents,
                shape: self.shape,
            });
            if stop != StepControl::Continue {
                return Ok(stop);
            }
        }
        self.done += (to.saturating_sub(from)).div_ceil(order);
        Ok(StepControl::Continue)
    }
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
    if model.is_refiner() && p.init.is_none() {
        return Err(PipelineError::invalid(format!(
            "{} is an SDXL refiner: it refines an image rather than drawing one from noise. Give \
             it an init image (img2img), or give it as the refiner of an SDXL base model \
             (--refiner)",
            model.source.name
        )));
    }
    if let Some(r) = &p.refiner {
        refiner::check(model, r)?;
        if has_mask {
            return Err(PipelineError::invalid(
                "inpainting with a refiner is not supported yet: run the refiner without a mask",
            ));
        }
        let max = r.model.max_clip_skip();
        if p.clip_skip > max {
            return Err(PipelineError::invalid(format!(
                "clip skip {} must be at most {max} for the refiner {}",
                p.clip_skip, r.model.source.name
            )));
        }
    }
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
    /// A hires-fix second pass from upscaled latents: `[B, C, h, w]`, one batch.
    Latents(Vec<f32>),
    /// A hires-fix second pass from upscaled images, one `[1, 3, H, W]` tensor per image.
    Images(Vec<Tensor>),
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

    fn second_pass(model: &StableDiffusion, from: SecondPassInput) -> Result<Inputs> {
        Ok(match from {
            SecondPassInput::Latents(latents) => Inputs::Latents(latents),
            SecondPassInput::Images(images) => Inputs::Images(
                images
                    .iter()
                    .map(|img| image_to_tensor(model, img))
                    .collect::<Result<_>>()?,
            ),
        })
    }

    /// Each batch's starting latents (and inpainting inputs), drawing noise in diffusers' order.
    #[allow(clippy::too_many_arguments)]
    fn initial(
        &self,
        model: &StableDiffusion,
        scheduler: &dyn Scheduler,
        start: usize,
        [b, c, h, w]: [usize; 4],
        noise: &mut dyn NoiseSource,
        tiling: Option<&VaeTiling>,
        batch: usize,
    ) -> Result<Initial> {
        let len = b * c * h * w;
        let sigma = scheduler.init_noise_sigma();
        match self {
            Inputs::Txt2Img => Ok(Initial {
                latents: noise.randn(len).iter().map(|v| v * sigma).collect(),
                inpaint: None,
                blend: None,
            }),
            Inputs::Latents(latents) => {
                if latents.len() != len || batch > 0 {
                    return Err(PipelineError::invalid(format!(
                        "second pass: {} latent values for a batch of shape {:?}",
                        latents.len(),
                        [b, c, h, w]
                    )));
                }
                let eps = noise.randn(len);
                Ok(Initial {
                    latents: scheduler.add_noise(latents, &eps, start)?,
                    inpaint: None,
                    blend: None,
                })
            }
            Inputs::Images(images) => {
                if images.len() != b || batch > 0 {
                    return Err(PipelineError::invalid(format!(
                        "second pass: {} images for a batch of {b}",
                        images.len()
                    )));
                }
                let image_latents = encode_each(model, images, noise, tiling)?;
                let eps = noise.randn(len);
                Ok(Initial {
                    latents: scheduler.add_noise(&image_latents, &eps, start)?,
                    inpaint: None,
                    blend: None,
                })
            }
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
    let text = model.text_encoder.as_ref().map(|t| t.device());
    for device in [model.unet.device(), model.vae.device()]
        .into_iter()
        .chain(text)
    {
        device.release_cached_memory();
    }
}
