//! Heun (diffusers' `HeunDiscreteScheduler`, A1111 "Heun"): Euler's step to the next sigma, then
//! a second model evaluation there and a step with the average of the two slopes (Karras et al.
//! 2022, Algorithm 1). The last step is Euler's alone, so N steps take 2N-1 model evaluations,
//! laid out as diffusers does: a schedule of 2N-1 timesteps, each step's sigma repeated.

use super::common::{check_len, check_step, denoised_in_sigma_space, scale_by_sigma};
use super::config::{PredictionType, SchedulerConfig};
use super::defaults::HEUN;
use super::error::SchedulerError;
use super::euler::add_noise_sigma;
use super::names::SamplerKind;
use super::two_stage::{interleave, Stage, StepGrid};
use super::Scheduler;
use crate::rng::NoiseSource;

#[derive(Clone, Debug)]
pub struct Heun {
    /// 2N-1 entries: t0, t1, t1, t2, t2, ...
    timesteps: Vec<f32>,
    /// diffusers' 2N sigmas: s0, s1, s1, ..., s(N-1), s(N-1), 0.
    sigmas: Vec<f32>,
    prediction: PredictionType,
    /// clip_sample's range, when on.
    clip: Option<f32>,
    init_noise_sigma: f32,
    stage: Stage,
}

impl Heun {
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        let grid = StepGrid::new(cfg, &HEUN, steps)?;
        let ts: Vec<f32> = grid.timesteps.iter().map(|&t| t as f32).collect();
        let n = grid.sigmas.len() - 1;
        let mut sigmas = interleave(&grid.sigmas[..n], &grid.sigmas[..n]);
        sigmas.push(0.0);
        let clip =
            (cfg.clip_sample == Some(true)).then(|| cfg.clip_sample_range.unwrap_or(1.0) as f32);
        Ok(Heun {
            timesteps: interleave(&ts, &ts),
            sigmas,
            prediction: grid.prediction,
            clip,
            init_noise_sigma: grid.init_noise_sigma,
            stage: Stage::default(),
        })
    }

    fn denoised(&self, model: f32, sample: f32, sigma: f32) -> f32 {
        let d = denoised_in_sigma_space(self.prediction, model, sample, sigma, sigma);
        match self.clip {
            Some(r) => d.clamp(-r, r),
            None => d,
        }
    }
}

impl Scheduler for Heun {
    fn kind(&self) -> SamplerKind {
        SamplerKind::Heun
    }

    fn order(&self) -> usize {
        2
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
        _noise: &mut dyn NoiseSource,
    ) -> Result<Vec<f32>, SchedulerError> {
        check_step(step, self.timesteps.len())?;
        check_len("model_output", model_output.len(), sample.len())?;
        let first = self.stage.begin(self.kind(), step)?;
        // Both stages move from the step's sigma to the next one (indices into the repeated list).
        let (sigma, next) = if first {
            (self.sigmas[step], self.sigmas[step + 1])
        } else {
            (self.sigmas[step - 1], self.sigmas[step])
        };
        let dt = next - sigma;
        if first {
            let derivative: Vec<f32> = sample
                .iter()
                .zip(model_output)
                .map(|(&x, &m)| (x - self.denoised(m, x, sigma)) / sigma)
                .collect();
            let out = sample
                .iter()
                .zip(&derivative)
                .map(|(&x, &d)| x + d * dt)
                .collect();
            self.stage.keep(step, sample, derivative);
            return Ok(out);
        }
        // The second evaluation is at `next`; average its slope with the first stage's.
        let (start, first_slope) = self.stage.take(step);
        Ok(sample
            .iter()
            .zip(model_output)
            .zip(start.iter().zip(&first_slope))
            .map(|((&x, &m), (&x0, &d0))| {
                let d1 = (x - self.denoised(m, x, next)) / next;
                x0 + (d0 + d1) / 2.0 * dt
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
