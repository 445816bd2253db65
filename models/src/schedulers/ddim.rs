//! DDIM (diffusers' `DDIMScheduler`): the deterministic (eta = 0) or stochastic DDIM update in
//! alpha_cumprod terms, between integer train timesteps.

use super::common::{check_len, check_step};
use super::config::{PredictionType, SchedulerConfig};
use super::defaults::DDIM;
use super::error::SchedulerError;
use super::names::SamplerKind;
use super::noise_schedule::NoiseSchedule;
use super::{timesteps, Scheduler};
use crate::rng::NoiseSource;

#[derive(Clone, Debug)]
pub struct Ddim {
    timesteps: Vec<f32>,
    train_timesteps: Vec<i64>,
    table: NoiseSchedule,
    prediction: PredictionType,
    /// |x0| bound when `clip_sample` is on.
    clip: Option<f32>,
    /// alpha_cumprod used after the last train timestep.
    final_alpha_cumprod: f32,
    /// diffusers' previous-timestep stride: num_train_timesteps // num_inference_steps.
    stride: i64,
    eta: f32,
}

impl Ddim {
    pub fn new(cfg: &SchedulerConfig, steps: usize, eta: f32) -> Result<Self, SchedulerError> {
        let d = &DDIM;
        d.reject_enabled("thresholding", cfg.thresholding)?;
        if !(eta.is_finite() && eta >= 0.0) {
            return Err(SchedulerError::Argument {
                name: "eta",
                value: eta.to_string(),
                reason: "must be a finite number >= 0",
            });
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
        let clip = clip_range(cfg, d.clip_sample)?;
        let final_alpha_cumprod = if cfg.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            table.alphas_cumprod[0]
        };
        Ok(Ddim {
            timesteps: train_timesteps.iter().map(|&t| t as f32).collect(),
            train_timesteps,
            stride: (num_train / steps) as i64,
            table,
            prediction: cfg.prediction_type.unwrap_or(PredictionType::Epsilon),
            clip,
            final_alpha_cumprod,
            eta,
        })
    }
}

impl Scheduler for Ddim {
    fn kind(&self) -> SamplerKind {
        SamplerKind::Ddim
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
        // diffusers steps back by a fixed stride, even where the spacing is uneven.
        let prev = t - self.stride;
        let a_t = self.table.alpha_cumprod(t)?;
        let a_prev = if prev >= 0 {
            self.table.alpha_cumprod(prev)?
        } else {
            self.final_alpha_cumprod
        };
        let b_t = 1.0 - a_t;
        let b_prev = 1.0 - a_prev;
        let (sa, sb) = (a_t.sqrt(), b_t.sqrt());
        let variance = (b_prev / b_t) * (1.0 - a_t / a_prev);
        let std_dev = self.eta * variance.sqrt();
        let dir_scale = (1.0 - a_prev - std_dev * std_dev).sqrt();
        let prev_scale = a_prev.sqrt();
        let fresh = if self.eta > 0.0 {
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
                let (mut x0, eps) = match self.prediction {
                    PredictionType::Epsilon => ((x - sb * m) / sa, m),
                    PredictionType::VPrediction => (sa * x - sb * m, sa * m + sb * x),
                    PredictionType::Sample => (m, (x - sa * m) / sb),
                };
                if let Some(r) = self.clip {
                    x0 = x0.clamp(-r, r);
                }
                let out = prev_scale * x0 + dir_scale * eps;
                match &fresh {
                    Some(n) => out + std_dev * n[i],
                    None => out,
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

/// sqrt(a) * x + sqrt(1 - a) * noise: img2img noising of the alpha-space samplers.
pub(crate) fn add_noise_alpha(alpha_cumprod: f32, original: &[f32], noise: &[f32]) -> Vec<f32> {
    let (sa, sb) = (alpha_cumprod.sqrt(), (1.0 - alpha_cumprod).sqrt());
    original
        .iter()
        .zip(noise)
        .map(|(&x, &n)| sa * x + sb * n)
        .collect()
}

/// The x0 clipping bound when `clip_sample` is on (DDIM and LCM).
pub(crate) fn clip_range(
    cfg: &SchedulerConfig,
    default_on: bool,
) -> Result<Option<f32>, SchedulerError> {
    if !cfg.clip_sample.unwrap_or(default_on) {
        return Ok(None);
    }
    let r = cfg.clip_sample_range.unwrap_or(1.0);
    if r.is_nan() || r < 0.0 {
        return Err(SchedulerError::FieldValue {
            field: "clip_sample_range",
            message: format!("{r} must be >= 0"),
        });
    }
    Ok(Some(r as f32))
}
