//! Samplers that reproduce diffusers' schedulers step for step on host `f32` latents:
//! Euler, Euler a, Heun, DPM2, DDIM, DDPM, DPM++ 2M (SDE), DPM++ SDE, UniPC and LCM, with the Karras,
//! exponential and SGM Uniform schedules where diffusers' class offers them.
//!
//! A scheduler is built from a `scheduler_config.json` ([`SchedulerConfig`]), a sampler name
//! ([`SamplerSpec::parse`]) and a step count ([`build_scheduler`]). A txt2img loop is
//!
//! ```text
//! latents = noise.randn(len) * init_noise_sigma()
//! for i in 0..timesteps().len():
//!     x = scale_model_input(latents, i)
//!     eps = unet(x, timesteps()[i])
//!     latents = step(eps, i, latents, noise)
//! ```
//!
//! and img2img starts at [`img2img_start`] times [`Scheduler::order`] with `add_noise` applied to
//! the encoded image. The
//! numerics follow diffusers' float32/float64 choices operation by operation (see each module),
//! so results agree with diffusers to float32 rounding.

mod brownian;
mod common;
mod config;
mod ddim;
mod ddpm;
mod defaults;
mod dpm_sde;
mod dpm_solver;
mod error;
mod euler;
mod euler_ancestral;
mod heun;
mod img2img;
mod karras;
mod kdpm2;
mod lcm;
mod names;
mod noise_schedule;
mod numpy;
mod sigma_grid;
mod timesteps;
mod two_stage;
mod unipc;

pub use config::{
    BetaSchedule, FinalSigmas, PredictionType, SchedulerConfig, SolverType, TimestepSpacing,
};
pub use ddim::Ddim;
pub use ddpm::Ddpm;
pub use dpm_sde::{BrownianNoise, BrownianTrees, DpmSde};
pub use dpm_solver::DpmSolverMultistep;
pub use error::SchedulerError;
pub use euler::Euler;
pub use euler_ancestral::EulerAncestral;
pub use heun::Heun;
pub use img2img::img2img_start;
pub use kdpm2::Dpm2;
pub use lcm::Lcm;
pub use names::{parse_schedule, SamplerKind, SamplerSpec, SigmaSchedule};
pub use unipc::UniPc;

use crate::rng::NoiseSource;

/// One sampler with its schedule fixed by the step count. Step indices count from 0 over
/// `timesteps()`; latents are flat `f32` buffers of any shape (the batch included).
pub trait Scheduler: Send + std::fmt::Debug {
    fn kind(&self) -> SamplerKind;

    /// The model's timestep at each step, largest first. Fractional only for Euler with Karras
    /// sigmas or "linspace" spacing, as in diffusers.
    fn timesteps(&self) -> &[f32];

    /// diffusers' `scheduler.sigmas` for the samplers that work in sigma space (Euler, Euler a,
    /// Heun, DPM2, DPM++ 2M, UniPC): the noise level before each entry of `timesteps()` plus the
    /// final one; DPM2's repeats each step's sigma as diffusers' does (2N+2 entries).
    fn sigmas(&self) -> Option<&[f32]>;

    /// Model evaluations per step as diffusers counts them (`scheduler.order`): 2 for Heun and
    /// DPM2, whose `timesteps()` hold 2N-1 entries for N steps (the last step is a single
    /// evaluation). img2img starts at entry `img2img_start(..) * order()`.
    fn order(&self) -> usize {
        1
    }

    /// The images' seeds, for samplers whose noise is not the run's generator (DPM++ SDE seeds
    /// a Brownian tree per image with them); the sample's images are in seed order.
    fn set_noise_seeds(&mut self, _seeds: &[u64]) {}

    /// The factor for unit-variance initial noise in txt2img.
    fn init_noise_sigma(&self) -> f32;

    /// The model input at step `step` (Euler-type samplers divide by sqrt(sigma^2 + 1)).
    fn scale_model_input(&self, sample: &[f32], step: usize) -> Result<Vec<f32>, SchedulerError>;

    /// One denoising step: the sample for step `step + 1` from the model output at `step`.
    /// Ancestral and consistency samplers draw their noise from `noise`.
    fn step(
        &mut self,
        model_output: &[f32],
        step: usize,
        sample: &[f32],
        noise: &mut dyn NoiseSource,
    ) -> Result<Vec<f32>, SchedulerError>;

    /// The clean `original` noised to the level of step `step` (img2img's starting latents).
    fn add_noise(
        &self,
        original: &[f32],
        noise: &[f32],
        step: usize,
    ) -> Result<Vec<f32>, SchedulerError>;
}

/// Builds the named sampler for `steps` inference steps. The spec's schedule and spacing
/// override the config, as choosing "DPM++ 2M Karras" in A1111 does.
pub fn build_scheduler(
    config: &SchedulerConfig,
    spec: &SamplerSpec,
    steps: usize,
) -> Result<Box<dyn Scheduler>, SchedulerError> {
    let mut cfg = config.clone();
    if !spec.kind.supports(spec.schedule) {
        return Err(SchedulerError::ScheduleNotSupported {
            sampler: spec.kind.name(),
            schedule: spec.schedule.label(),
            class: spec.kind.diffusers_class(),
        });
    }
    // A schedule chosen by name replaces whichever the config turned on.
    let (karras, exponential, spacing) = match spec.schedule {
        SigmaSchedule::Default => (cfg.use_karras_sigmas, cfg.use_exponential_sigmas, None),
        SigmaSchedule::Karras => (Some(true), None, None),
        SigmaSchedule::Exponential => (None, Some(true), Some(TimestepSpacing::Linspace)),
        SigmaSchedule::SgmUniform => (None, None, Some(TimestepSpacing::Trailing)),
    };
    cfg.use_karras_sigmas = karras;
    cfg.use_exponential_sigmas = exponential;
    if spacing.is_some() {
        cfg.timestep_spacing = spacing;
    }
    if let Some(spacing) = spec.timestep_spacing {
        cfg.timestep_spacing = Some(spacing);
    }
    Ok(match spec.kind {
        SamplerKind::Euler => Box::new(Euler::new(&cfg, steps)?),
        SamplerKind::EulerAncestral => Box::new(EulerAncestral::new(&cfg, steps)?),
        SamplerKind::Ddim => Box::new(Ddim::new(&cfg, steps, spec.eta)?),
        SamplerKind::Ddpm => Box::new(Ddpm::new(&cfg, steps)?),
        // The sampler's name picks the algorithm, whatever the model's scheduler config says (as
        // A1111's sampler menu does).
        SamplerKind::DpmPp2m => {
            cfg.algorithm_type = Some("dpmsolver++".into());
            Box::new(DpmSolverMultistep::new(&cfg, steps)?)
        }
        SamplerKind::DpmPp2mSde => {
            cfg.algorithm_type = Some("sde-dpmsolver++".into());
            Box::new(DpmSolverMultistep::new(&cfg, steps)?)
        }
        SamplerKind::Lcm => Box::new(Lcm::new(&cfg, steps)?),
        SamplerKind::Heun => Box::new(Heun::new(&cfg, steps)?),
        SamplerKind::Dpm2 => Box::new(Dpm2::new(&cfg, steps)?),
        SamplerKind::UniPc => Box::new(UniPc::new(&cfg, steps)?),
        SamplerKind::DpmPpSde => Box::new(DpmSde::new(&cfg, steps)?),
    })
}
