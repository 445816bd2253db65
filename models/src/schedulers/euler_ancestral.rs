//! Euler a (diffusers' `EulerAncestralDiscreteScheduler`): an Euler step down to a lower sigma,
//! then fresh noise added back up to the next sigma. It draws noise at every step, the last
//! included (where its scale is zero), so the generator advances as in diffusers.

use super::common::{check_len, check_step, denoised_in_sigma_space, scale_by_sigma};
use super::config::{PredictionType, SchedulerConfig};
use super::defaults::EULER_ANCESTRAL;
use super::error::SchedulerError;
use super::euler::add_noise_sigma;
use super::names::SamplerKind;
use super::sigma_grid::SigmaGrid;
use super::Scheduler;
use crate::rng::NoiseSource;

#[derive(Clone, Debug)]
pub struct EulerAncestral {
    timesteps: Vec<f32>,
    sigmas: Vec<f32>,
    prediction: PredictionType,
    init_noise_sigma: f32,
}

impl EulerAncestral {
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        let d = &EULER_ANCESTRAL;
        let prediction = cfg.prediction_type.unwrap_or(PredictionType::Epsilon);
        if prediction == PredictionType::Sample {
            return Err(d.unsupported("prediction_type", "sample"));
        }
        // The class has no Karras option: diffusers ignores `use_karras_sigmas` here, and so do
        // we (asking for "Euler a Karras" by name is refused in `build_scheduler` instead).
        let grid = SigmaGrid::new(cfg, d, steps)?;
        let (sigmas, init_noise_sigma) = SigmaGrid::finish(&grid.sigmas, 0.0, grid.spacing);
        Ok(EulerAncestral {
            timesteps: grid.timesteps.iter().map(|&t| t as f32).collect(),
            sigmas,
            prediction,
            init_noise_sigma,
        })
    }
}

impl Scheduler for EulerAncestral {
    fn kind(&self) -> SamplerKind {
        SamplerKind::EulerAncestral
    }

    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.sigmas)
    }

    fn init_noise_sigma(&self) -> f32 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &[f32], step: usize) -> Result<Vec<f32>, SchedulerError> {
        check_step(step, self.timesteps.len())?;
        Ok(scale_by_sigma(sample, self.sigmas[step]))
    }

    fn step(
        &mut self,
        model_output: &[f32],
        step: usize,
        sample: &[f32],
        noise: &mut dyn NoiseSource,
    ) -> Result<Vec<f32>, SchedulerError> {
        check_step(step, self.timesteps.len())?;
        check_len("model_output", model_output.len(), sample.len())?;
        let sigma = self.sigmas[step];
        let next = self.sigmas[step + 1];
        // Split the move to `next` into a deterministic part down to sigma_down and fresh noise
        // of scale sigma_up, with sigma_down^2 + sigma_up^2 = next^2.
        let sigma_up = (next * next * (sigma * sigma - next * next) / (sigma * sigma)).sqrt();
        let sigma_down = (next * next - sigma_up * sigma_up).sqrt();
        let dt = sigma_down - sigma;
        let fresh = noise.randn(sample.len());
        check_len("noise", fresh.len(), sample.len())?;
        Ok(sample
            .iter()
            .zip(model_output)
            .zip(&fresh)
            .map(|((&x, &m), &n)| {
                let denoised = denoised_in_sigma_space(self.prediction, m, x, sigma, sigma);
                let derivative = (x - denoised) / sigma;
                let moved = x + derivative * dt;
                moved + n * sigma_up
            })
            .collect())
    }

    fn add_noise(
        &self,
        original: &[f32],
        noise: &[f32],
        step: usize,
    ) -> Result<Vec<f32>, SchedulerError> {
        add_noise_sigma(&self.sigmas, self.timesteps.len(), original, noise, step)
    }
}
