//! DDPM (diffusers' `DDPMScheduler`, variance "fixed_small"): the ancestral posterior step of
//! Ho et al. between the inference timesteps, with fresh noise of the posterior's variance at
//! every timestep above 0.

use super::common::{check_len, check_step};
use super::config::{PredictionType, SchedulerConfig};
use super::ddim::{add_noise_alpha, clip_range};
use super::defaults::DDPM;
use super::error::SchedulerError;
use super::names::SamplerKind;
use super::noise_schedule::NoiseSchedule;
use super::{timesteps, Scheduler};
use crate::rng::NoiseSource;

#[derive(Clone, Debug)]
pub struct Ddpm {
    timesteps: Vec<f32>,
    train_timesteps: Vec<i64>,
    table: NoiseSchedule,
    prediction: PredictionType,
    /// |x0| bound when `clip_sample` is on (the class default).
    clip: Option<f32>,
}

impl Ddpm {
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        let d = &DDPM;
        d.reject_enabled("thresholding", cfg.thresholding)?;
        match cfg.variance_type.as_deref() {
            None | Some("fixed_small") => {}
            Some(other) => return Err(d.unsupported("variance_type", other)),
        }
        let table = NoiseSchedule::new(cfg, d)?;
        let num_train = table.num_train_timesteps();
        timesteps::check_steps(steps, num_train)?;
        let offset = cfg.steps_offset.unwrap_or(0);
        let train_timesteps: Vec<i64> =
            timesteps::spaced(d.spacing(cfg), num_train, steps, offset, true)
                .into_iter()
                .map(|t| t as i64)
                .collect();
        for &t in &train_timesteps {
            table.alpha_cumprod(t)?;
        }
        Ok(Ddpm {
            timesteps: train_timesteps.iter().map(|&t| t as f32).collect(),
            train_timesteps,
            table,
            prediction: cfg.prediction_type.unwrap_or(PredictionType::Epsilon),
            clip: clip_range(cfg, d.clip_sample)?,
        })
    }
}

impl Scheduler for Ddpm {
    fn kind(&self) -> SamplerKind {
        SamplerKind::Ddpm
    }

    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f32]> {
        None
    }

    fn init_noise_sigma(&self) -> f32 {
        1.0
    }

    fn scale_model_input(&self, sample: &[f32], step: usize) -> Result<Vec<f32>, SchedulerError> {
        check_step(step, self.timesteps.len())?;
        Ok(sample.to_vec())
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
        let t = self.train_timesteps[step];
        // The previous timestep is the next one in the list (diffusers' `previous_timestep` with
        // inference steps set), after the last the clean sample (alpha_cumprod 1).
        let a_t = self.table.alpha_cumprod(t)?;
        let a_prev = match self.train_timesteps.get(step + 1) {
            Some(&prev) => self.table.alpha_cumprod(prev)?,
            None => 1.0,
        };
        // The same f32 operations in the same order as diffusers' step.
        let b_t = 1.0 - a_t;
        let b_prev = 1.0 - a_prev;
        let current_alpha = a_t / a_prev;
        let current_beta = 1.0 - current_alpha;
        let x0_coeff = (a_prev.sqrt() * current_beta) / b_t;
        let x_coeff = current_alpha.sqrt() * b_prev / b_t;
        let (sa, sb) = (a_t.sqrt(), b_t.sqrt());
        let std = if t > 0 {
            ((1.0 - a_prev) / (1.0 - a_t) * current_beta)
                .max(1e-20)
                .sqrt()
        } else {
            0.0
        };
        let fresh = if t > 0 {
            let n = noise.randn(sample.len());
            check_len("noise", n.len(), sample.len())?;
            Some(n)
        } else {
            None
        };
        Ok(sample
            .iter()
            .zip(model_output)
            .enumerate()
            .map(|(i, (&x, &m))| {
                let mut x0 = match self.prediction {
                    PredictionType::Epsilon => (x - sb * m) / sa,
                    PredictionType::VPrediction => sa * x - sb * m,
                    PredictionType::Sample => m,
                };
                if let Some(r) = self.clip {
                    x0 = x0.clamp(-r, r);
                }
                let mean = x0_coeff * x0 + x_coeff * x;
                match &fresh {
                    Some(n) => mean + std * n[i],
                    None => mean,
                }
            })
            .collect())
    }

    fn add_noise(
        &self,
        original: &[f32],
        noise: &[f32],
        step: usize,
    ) -> Result<Vec<f32>, SchedulerError> {
        check_step(step, self.timesteps.len())?;
        check_len("noise", noise.len(), original.len())?;
        let a = self.table.alpha_cumprod(self.train_timesteps[step])?;
        Ok(add_noise_alpha(a, original, noise))
    }
}
