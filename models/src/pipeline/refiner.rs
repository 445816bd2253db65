//! The SDXL refiner as a second stage (A1111's "Refiner" / "Switch at"), cut as diffusers cuts it:
//! the base pipeline with `denoising_end = switch`, `output_type="latent"`, then
//! StableDiffusionXLImg2ImgPipeline on those latents with `denoising_start = switch`.
//!
//! With T = `num_train_timesteps`, the cut is the timestep value `round(T - switch * T)`: the main
//! model runs the schedule's entries with timestep >= cut, the refiner those below (a second-order
//! sampler's refiner takes one entry more when the count is even, so it does not start between a
//! step's two stages). The refiner gets a scheduler of its own over the same schedule and starts at
//! its index, as diffusers' second pipeline does; the noise streams carry on. So a multistep
//! sampler (DPM++ 2M) restarts at first order at the switch, as in diffusers; A1111 swaps the model
//! under a running sampler and keeps its history.
//!
//! A1111 switches by how far the schedule has come (the timestep, or optionally the step count)
//! rather than by this exact rule; on the evenly spaced schedules they agree: 20 steps of SDXL's
//! "leading" schedule are 951, 901, .., 1, the cut at 0.8 is 200, and the base runs 16 steps,
//! A1111's 20 x 0.8.

use std::path::Path;
use std::sync::Arc;

use kiln_runtime::Device;

use super::error::{PipelineError, Result};
use super::load::{LoadOptions, StableDiffusion};
use super::params::Refiner;
use crate::schedulers::Scheduler;
use crate::tally::ModelTally;

/// Opens the refiner at `path` for `base`. For a real base: on `device` as `options` say, the UNet
/// streamed when the base's streams (both models stay loaded through a run, so a budget that
/// needs one streamed needs both). For `--plan`'s zero-weight base: zeros on the CPU backend,
/// loaded as the base was but with a tally of its own that the refiner keeps, so the plan (and a
/// re-plan with the same parameters) counts the refiner's weights.
pub fn open_refiner(
    path: &Path,
    base: &StableDiffusion,
    device: &Device,
    options: &LoadOptions,
) -> Result<StableDiffusion> {
    if let Some(zero) = &base.planned {
        let zero = LoadOptions {
            tally: Some(Arc::new(ModelTally::default())),
            ..zero.clone()
        };
        return StableDiffusion::load_with(path, &Device::Cpu, &zero);
    }
    let options = LoadOptions {
        stream_unet: base.unet.is_streamed(),
        ..options.clone()
    };
    StableDiffusion::load_with(path, device, &options)
}

/// The switch must leave both models something to do.
pub fn check_switch(switch_at: f64) -> Result<()> {
    if switch_at > 0.0 && switch_at < 1.0 {
        Ok(())
    } else {
        Err(PipelineError::invalid(format!(
            "refiner switch {switch_at} must be between 0 and 1 (exclusive): the fraction of the \
             steps the main model runs before the refiner takes over"
        )))
    }
}

/// A refiner must take the main model's latents: an SDXL model with the same latent channels and
/// VAE downsampling.
pub(super) fn check(model: &StableDiffusion, refiner: &Refiner) -> Result<()> {
    check_switch(refiner.switch_at)?;
    let r = &refiner.model;
    let name = &r.source.name;
    if r.sdxl.is_none() {
        return Err(PipelineError::invalid(format!(
            "refiner {name} is not an SDXL model (an SD 1.x / 2.x model cannot refine); use an \
             SDXL refiner such as stable-diffusion-xl-refiner-1.0"
        )));
    }
    if model.sdxl.is_none() {
        return Err(PipelineError::invalid(format!(
            "the refiner {name} continues an SDXL model's latents, but the main model {} is not \
             SDXL",
            model.source.name
        )));
    }
    if r.is_inpainting() {
        return Err(PipelineError::invalid(format!(
            "refiner {name} is an inpainting model; a refiner takes plain latents"
        )));
    }
    let (a, b) = (model.vae.config(), r.vae.config());
    if a.latent_channels != b.latent_channels || model.vae_scale_factor() != r.vae_scale_factor() {
        return Err(PipelineError::invalid(format!(
            "refiner {name} works on {} latent channels at 1/{} scale, the main model on {} at \
             1/{}",
            b.latent_channels,
            r.vae_scale_factor(),
            a.latent_channels,
            model.vae_scale_factor()
        )));
    }
    Ok(())
}

/// diffusers' `discrete_timestep_cutoff`: `int(round(T - switch * T))`, Python's round (ties to
/// even).
fn cutoff(model: &StableDiffusion, switch_at: f64) -> f64 {
    let t = model.scheduler_config.num_train_timesteps.unwrap_or(1000) as f64;
    (t - switch_at * t).round_ties_even()
}

/// How many schedule entries the main model runs (the base pipeline's `denoising_end` cut):
/// those with timestep >= the cut.
pub(super) fn main_end(
    model: &StableDiffusion,
    scheduler: &dyn Scheduler,
    switch_at: f64,
) -> usize {
    let cut = cutoff(model, switch_at);
    scheduler
        .timesteps()
        .iter()
        .filter(|&&t| t as f64 >= cut)
        .count()
}

/// The schedule entry the refiner starts at (Img2ImgPipeline's `get_timesteps` with
/// `denoising_start`): the entries below the cut, one more for a second-order sampler when their
/// count is even.
pub(super) fn refiner_start(
    refiner: &StableDiffusion,
    scheduler: &dyn Scheduler,
    switch_at: f64,
) -> usize {
    let cut = cutoff(refiner, switch_at);
    let ts = scheduler.timesteps();
    let mut n = ts.iter().filter(|&&t| (t as f64) < cut).count();
    if scheduler.order() == 2 && n % 2 == 0 {
        n += 1;
    }
    ts.len().saturating_sub(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_must_be_inside_the_schedule() {
        for bad in [0.0, 1.0, 1.5, -0.2, f64::NAN] {
            let e = check_switch(bad).unwrap_err().to_string();
            assert!(e.contains("between 0 and 1"), "{e}");
        }
        check_switch(0.8).unwrap();
    }
}
