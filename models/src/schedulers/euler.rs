//! Euler (diffusers' `EulerDiscreteScheduler`, A1111 "Euler"): one explicit Euler step of the
//! probability-flow ODE per model call, in sigma space, with Karras or exponential sigmas when
//! the config asks for them.

use super::common::{check_len, check_step, denoised_in_sigma_space, scale_by_sigma};
use super::config::{FinalSigmas, PredictionType, SchedulerConfig};
use super::defaults::EULER;
use super::error::SchedulerError;
use super::karras::Respacing;
use super::names::SamplerKind;
use super::noise_schedule::sigma_of;
use super::sigma_grid::SigmaGrid;
use super::Scheduler;
use crate::rng::NoiseSource;

#[derive(Clone, Debug)]
pub struct Euler {
    timesteps: Vec<f32>,
    sigmas: Vec<f32>,
    prediction: PredictionType,
    init_noise_sigma: f32,
}

impl Euler {
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        let d = &EULER;
        d.reject_enabled("use_beta_sigmas", cfg.use_beta_sigmas)?;
        match cfg.interpolation_type.as_deref() {
            None | Some("linear") => {}
            Some("log_linear") => return Err(d.unsupported("interpolation_type", "log_linear")),
            Some(other) => {
                return Err(SchedulerError::FieldValue {
                    field: "interpolation_type",
                    message: format!("unknown value '{other}'; valid: linear, log_linear"),
                })
            }
        }
        let prediction = cfg.prediction_type.unwrap_or(PredictionType::Epsilon);
        match cfg.timestep_type.as_deref() {
            None | Some("discrete") => {}
            // Continuous timesteps only change anything for v-prediction (EDM-style models).
            Some("continuous") if prediction != PredictionType::VPrediction => {}
            Some("continuous") => return Err(d.unsupported("timestep_type", "continuous")),
            Some(other) => {
                return Err(SchedulerError::FieldValue {
                    field: "timestep_type",
                    message: format!("unknown value '{other}'; valid: discrete, continuous"),
                })
            }
        }

        let mut grid = SigmaGrid::new(cfg, d, steps)?;
        if let Some(respacing) = Respacing::from_config(cfg)? {
            grid.respace(respacing, cfg.sigma_min, cfg.sigma_max, steps)?;
        }
        let SigmaGrid {
            table,
            spacing,
            timesteps: ts,
            sigmas,
        } = grid;

        let last = match cfg.final_sigmas_type.unwrap_or(FinalSigmas::Zero) {
            FinalSigmas::Zero => 0.0,
            FinalSigmas::SigmaMin => sigma_of(table.alphas_cumprod[0]),
        };
        let (sigmas, init_noise_sigma) = SigmaGrid::finish(&sigmas, last, spacing);
        Ok(Euler {
            timesteps: ts.into_iter().map(|t| t as f32).collect(),
            sigmas,
            prediction,
            init_noise_sigma,
        })
    }
}

impl Scheduler for Euler {
    fn kind(&self) -> SamplerKind {
        SamplerKind::Euler
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
        let sigma = self.sigmas[step];
        // No churn (s_churn = 0, diffusers' default), so sigma_hat = sigma and no noise is drawn.
        let sigma_hat = sigma;
        let dt = self.sigmas[step + 1] - sigma_hat;
        Ok(sample
            .iter()
            .zip(model_output)
            .map(|(&x, &m)| {
                let denoised = denoised_in_sigma_space(self.prediction, m, x, sigma, sigma_hat);
                let derivative = (x - denoised) / sigma_hat;
                x + derivative * dt
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

/// x + noise * sigma: img2img noising of the sigma-space samplers.
pub(crate) fn add_noise_sigma(
    sigmas: &[f32],
    steps: usize,
    original: &[f32],
    noise: &[f32],
    step: usize,
) -> Result<Vec<f32>, SchedulerError> {
    check_step(step, steps)?;
    check_len("noise", noise.len(), original.len())?;
    let sigma = sigmas[step];
    Ok(original
        .iter()
        .zip(noise)
        .map(|(&x, &n)| x + n * sigma)
        .collect())
}
