//! LCM (diffusers' `LCMScheduler`): latent consistency sampling. Each step maps the sample to a
//! denoised estimate with the consistency boundary scalings, then re-noises it to the next
//! timestep with fresh noise; the last step returns the estimate without drawing noise.

use super::common::{check_len, check_step};
use super::config::{PredictionType, SchedulerConfig};
use super::ddim::{add_noise_alpha, clip_range};
use super::defaults::LCM;
use super::error::SchedulerError;
use super::names::SamplerKind;
use super::noise_schedule::NoiseSchedule;
use super::{timesteps, Scheduler};
use crate::rng::NoiseSource;

/// sigma_data of the consistency-model boundary condition.
const SIGMA_DATA: f32 = 0.5;

#[derive(Clone, Debug)]
pub struct Lcm {
    timesteps: Vec<f32>,
    train_timesteps: Vec<i64>,
    table: NoiseSchedule,
    prediction: PredictionType,
    clip: Option<f32>,
    timestep_scaling: f32,
}

impl Lcm {
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        let d = &LCM;
        d.reject_enabled("thresholding", cfg.thresholding)?;
        let table = NoiseSchedule::new(cfg, d)?;
        let num_train = table.num_train_timesteps();
        timesteps::check_steps(steps, num_train)?;
        let original = cfg.original_inference_steps.unwrap_or(50);
        let train_timesteps: Vec<i64> = timesteps::lcm(num_train, original, steps)?
            .into_iter()
            .map(|t| t as i64)
            .collect();
        let scaling = cfg.timestep_scaling.unwrap_or(10.0);
        if !scaling.is_finite() {
            return Err(SchedulerError::FieldValue {
                field: "timestep_scaling",
                message: format!("{scaling} is not a finite number"),
            });
        }
        Ok(Lcm {
            timesteps: train_timesteps.iter().map(|&t| t as f32).collect(),
            train_timesteps,
            table,
            prediction: cfg.prediction_type.unwrap_or(PredictionType::Epsilon),
            clip: clip_range(cfg, d.clip_sample)?,
            timestep_scaling: scaling as f32,
        })
    }

    /// (c_skip, c_out) of the boundary condition at train timestep `t`.
    fn boundary_scalings(&self, t: i64) -> (f32, f32) {
        let scaled = t as f32 * self.timestep_scaling;
        let denom = scaled * scaled + SIGMA_DATA * SIGMA_DATA;
        (SIGMA_DATA * SIGMA_DATA / denom, scaled / denom.sqrt())
    }
}

impl Scheduler for Lcm {
    fn kind(&self) -> SamplerKind {
        SamplerKind::Lcm
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
        let len = self.train_timesteps.len();
        check_step(step, len)?;
        check_len("model_output", model_output.len(), sample.len())?;
        let t = self.train_timesteps[step];
        let a_t = self.table.alpha_cumprod(t)?;
        let (sa, sb) = (a_t.sqrt(), (1.0 - a_t).sqrt());
        let (c_skip, c_out) = self.boundary_scalings(t);
        let denoised: Vec<f32> = sample
            .iter()
            .zip(model_output)
            .map(|(&x, &m)| {
                let mut x0 = match self.prediction {
                    PredictionType::Epsilon => (x - sb * m) / sa,
                    PredictionType::VPrediction => sa * x - sb * m,
                    PredictionType::Sample => m,
                };
                if let Some(r) = self.clip {
                    x0 = x0.clamp(-r, r);
                }
                c_out * x0 + c_skip * x
            })
            .collect();
        if step + 1 == len {
            return Ok(denoised);
        }
        let a_prev = self.table.alpha_cumprod(self.train_timesteps[step + 1])?;
        let fresh = noise.randn(sample.len());
        check_len("noise", fresh.len(), sample.len())?;
        let (pa, pb) = (a_prev.sqrt(), (1.0 - a_prev).sqrt());
        Ok(denoised
            .iter()
            .zip(&fresh)
            .map(|(&d, &n)| pa * d + pb * n)
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
