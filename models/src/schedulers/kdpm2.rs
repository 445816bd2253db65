//! DPM2 (diffusers' `KDPM2DiscreteScheduler`, A1111 "DPM2"): Karras et al.'s second-order DPM
//! solver. Each step evaluates the model at the start, moves to the geometric midpoint of this
//! sigma and the next, evaluates there and takes the whole step with that midpoint slope. As
//! for Heun, the last step is Euler's alone and the schedule holds 2N-1 timesteps, the midpoint
//! ones interleaved.

use super::common::{check_len, check_step, denoised_in_sigma_space, scale_by_sigma};
use super::config::{PredictionType, SchedulerConfig};
use super::defaults::DPM2;
use super::error::SchedulerError;
use super::euler::add_noise_sigma;
use super::karras::Respacing;
use super::names::SamplerKind;
use super::two_stage::{interleave, Stage, StepGrid};
use super::Scheduler;
use crate::rng::NoiseSource;

#[derive(Clone, Debug)]
pub struct Dpm2 {
    /// 2N-1 entries: t0, t(mid 1), t1, t(mid 2), t2, ...
    timesteps: Vec<f32>,
    /// The N+1 step sigmas (the last 0).
    steps: Vec<f32>,
    /// The midpoint below each step: `mid[k]` lies between `steps[k-1]` and `steps[k]`.
    mid: Vec<f32>,
    /// diffusers' `sigmas` (each step sigma repeated: 2N+2 entries), what `add_noise` indexes.
    sigmas: Vec<f32>,
    prediction: PredictionType,
    init_noise_sigma: f32,
    stage: Stage,
}

impl Dpm2 {
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        let grid = StepGrid::new(cfg, &DPM2, steps)?;
        if grid.prediction == PredictionType::Sample {
            return Err(DPM2.unsupported("prediction_type", "sample"));
        }
        let s = grid.sigmas;
        // exp(lerp(log s[k], log s[k-1], 0.5)) in float32, with torch's lerp for weight 0.5
        // (end - (end - start) / 2). mid[0] is never used; mid[N] is 0.
        let mid: Vec<f32> = (0..s.len())
            .map(|k| {
                let start = s[k].ln();
                let end = s[(k + s.len() - 1) % s.len()].ln();
                (end - (end - start) * 0.5).exp()
            })
            .collect();
        let log_sigmas = grid.log_sigmas;
        let mut ts = grid.timesteps;
        if grid.respacing == Some(Respacing::Karras) {
            ts.iter_mut().for_each(|t| *t = t.round_ties_even());
        }
        // The midpoints' timesteps are computed in float32 (torch tensors through numpy).
        let mid_ts: Vec<f64> = mid
            .iter()
            .map(|&m| sigma_to_t_f32(m, &log_sigmas) as f64)
            .collect();
        let timesteps = interleave(&ts[..], &mid_ts[..ts.len()])
            .into_iter()
            .map(|t| t as f32)
            .collect();
        let mut sigmas = interleave(&s, &s);
        sigmas.push(0.0);
        Ok(Dpm2 {
            timesteps,
            steps: s,
            mid,
            sigmas,
            prediction: grid.prediction,
            init_noise_sigma: grid.init_noise_sigma,
            stage: Stage::default(),
        })
    }
}

/// diffusers' `_sigma_to_t` as it runs on float32 torch tensors: every operation in float32.
fn sigma_to_t_f32(sigma: f32, log_sigmas: &[f32]) -> f32 {
    let log_sigma = sigma.max(1e-10).ln();
    let low = log_sigmas
        .iter()
        .rposition(|&l| log_sigma - l >= 0.0)
        .unwrap_or(0)
        .min(log_sigmas.len() - 2);
    let high = low + 1;
    let (lo, hi) = (log_sigmas[low], log_sigmas[high]);
    let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f32 + w * high as f32
}

impl Scheduler for Dpm2 {
    fn kind(&self) -> SamplerKind {
        SamplerKind::Dpm2
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
        let j = step / 2;
        let sigma = if step.is_multiple_of(2) {
            self.steps[j]
        } else {
            self.mid[j + 1]
        };
        Ok(scale_by_sigma(sample, sigma))
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
        let j = step / 2;
        let (sigma, mid, next) = (self.steps[j], self.mid[j + 1], self.steps[j + 1]);
        let prediction = self.prediction;
        let slope =
            move |x: f32, m: f32, s: f32| (x - denoised_in_sigma_space(prediction, m, x, s, s)) / s;
        if first {
            let dt = mid - sigma;
            let out = sample
                .iter()
                .zip(model_output)
                .map(|(&x, &m)| x + slope(x, m, sigma) * dt)
                .collect();
            self.stage.keep(step, sample, Vec::new());
            return Ok(out);
        }
        let (start, _) = self.stage.take(step);
        let dt = next - sigma;
        Ok(sample
            .iter()
            .zip(model_output)
            .zip(&start)
            .map(|((&x, &m), &x0)| x0 + slope(x, m, mid) * dt)
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
