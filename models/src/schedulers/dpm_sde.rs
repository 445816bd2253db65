//! DPM++ SDE (diffusers' `DPMSolverSDEScheduler`, A1111 "DPM++ SDE"): a stochastic second-order
//! step in log-sigma time. Each step first moves to the log-midpoint with an ancestral step
//! (part deterministic, part fresh Brownian noise), evaluates the model there, and redoes the
//! whole step from the start with that estimate and fresh noise again; the last step (to sigma 0)
//! is Euler's alone. As for Heun, diffusers lays the N steps out as 2N-1 timesteps.
//!
//! The noise is not drawn from the run's generator: it is the increment of a seeded Brownian
//! motion over the sigma range (torchsde's `BrownianInterval`, see [`super::brownian`]), one per
//! image seeded with the image's seed ([`Scheduler::set_noise_seeds`]). diffusers seeds its
//! single tree with the scheduler's `noise_sampler_seed` (or, if unset, from torch's global
//! generator); kiln's increments equal diffusers' with `noise_sampler_seed` = the seed, for a
//! batch of one. A1111 (k-diffusion) likewise seeds a tree per image with the image's seed.

use super::brownian::BrownianInterval;
use super::common::{check_len, check_step, denoised_in_sigma_space, scale_by_sigma};
use super::config::{PredictionType, SchedulerConfig};
use super::defaults::DPM_SDE;
use super::error::SchedulerError;
use super::euler::add_noise_sigma;
use super::karras::sigma_to_t;
use super::names::SamplerKind;
use super::two_stage::{interleave, Stage, StepGrid};
use super::Scheduler;
use crate::rng::NoiseSource;

/// The source of the Brownian increments, per image.
pub trait BrownianNoise: Send + std::fmt::Debug {
    /// (W(hi) - W(lo)) / sqrt(hi - lo) for each of the batch's images, concatenated, signed for
    /// the direction from `sigma` to `sigma_next` (as diffusers' `BrownianTreeNoiseSampler`).
    fn noise(
        &mut self,
        sigma: f32,
        sigma_next: f32,
        len: usize,
    ) -> Result<Vec<f32>, SchedulerError>;
}

/// torchsde's BrownianInterval per image over [min sigma, max sigma], as diffusers builds it.
#[derive(Debug)]
pub struct BrownianTrees {
    seeds: Vec<u64>,
    range: (f32, f32),
    trees: Vec<BrownianInterval>,
}

impl BrownianTrees {
    pub fn new(seeds: &[u64], min_sigma: f32, max_sigma: f32) -> BrownianTrees {
        BrownianTrees {
            seeds: seeds.to_vec(),
            range: (min_sigma, max_sigma),
            trees: Vec::new(),
        }
    }
}

impl BrownianNoise for BrownianTrees {
    fn noise(
        &mut self,
        sigma: f32,
        sigma_next: f32,
        len: usize,
    ) -> Result<Vec<f32>, SchedulerError> {
        let n = self.seeds.len().max(1);
        if !len.is_multiple_of(n) {
            return Err(SchedulerError::Length {
                what: "sample (one share per noise seed)",
                got: len,
                expected: len / n * n,
            });
        }
        if self.trees.is_empty() {
            let (lo, hi) = (self.range.0 as f64, self.range.1 as f64);
            self.trees = self
                .seeds
                .iter()
                .map(|&s| BrownianInterval::new(lo, hi, len / n, s))
                .collect();
        }
        // Queried low to high, the increment negated when sigma falls (diffusers' sign juggling).
        let (lo, hi, sign) = if sigma < sigma_next {
            (sigma, sigma_next, 1.0f32)
        } else {
            (sigma_next, sigma, -1.0)
        };
        let scale = (sigma_next - sigma).abs().sqrt();
        let mut out = Vec::with_capacity(len);
        for tree in &mut self.trees {
            let w = tree.query(lo as f64, hi as f64)?;
            out.extend(w.into_iter().map(|v| v * sign / scale));
        }
        Ok(out)
    }
}

#[derive(Debug)]
pub struct DpmSde {
    /// 2N-1 entries: t0, t(mid 0-1), t1, t(mid 1-2), t2, ...
    timesteps: Vec<f32>,
    /// diffusers' 2N sigmas: s0, s1, s1, ..., s(N-1), s(N-1), 0.
    sigmas: Vec<f32>,
    prediction: PredictionType,
    init_noise_sigma: f32,
    stage: Stage,
    noise: Option<Box<dyn BrownianNoise>>,
}

impl DpmSde {
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        let grid = StepGrid::new(cfg, &DPM_SDE, steps)?;
        if grid.prediction == PredictionType::Sample {
            return Err(DPM_SDE.unsupported("prediction_type", "sample"));
        }
        let n = grid.sigmas.len() - 1;
        // The midpoints in log sigma between consecutive step sigmas (float64, before the cast).
        let mids: Vec<f64> = (0..n)
            .map(|k| {
                if k + 1 >= n {
                    return 0.0;
                }
                let (a, b) = (-grid.sigmas64[k].ln(), -grid.sigmas64[k + 1].ln());
                let t = a + (b - a) * 0.5;
                sigma_to_t((-t).exp(), &grid.log_sigmas)
            })
            .collect();
        // mids[k] is the second entry of step k; `interleave` takes it from index k + 1.
        let mut second = vec![0.0];
        second.extend_from_slice(&mids[..n.saturating_sub(1)]);
        let timesteps = interleave(&grid.timesteps, &second)
            .into_iter()
            .map(|t| t as f32)
            .collect();
        let mut sigmas = interleave(&grid.sigmas[..n], &grid.sigmas[..n]);
        sigmas.push(0.0);
        Ok(DpmSde {
            timesteps,
            sigmas,
            prediction: grid.prediction,
            init_noise_sigma: grid.init_noise_sigma,
            stage: Stage::default(),
            noise: None,
        })
    }

    /// Replaces the Brownian noise (tests record diffusers' increments through this).
    pub fn with_noise(mut self, noise: Box<dyn BrownianNoise>) -> Self {
        self.noise = Some(noise);
        self
    }

    /// The step's two sigmas in log time: t = -ln sigma for this step and the next, and the
    /// midpoint's sigma.
    fn times(&self, step: usize, first: bool) -> (f32, f32, f32, f32) {
        let (sigma, next) = if first {
            (self.sigmas[step], self.sigmas[step + 1])
        } else {
            (self.sigmas[step - 1], self.sigmas[step])
        };
        let (t, t_next) = (-sigma.ln(), -next.ln());
        let t_mid = t + (t_next - t) * 0.5;
        (sigma, next, t, t_mid)
    }
}

impl Scheduler for DpmSde {
    fn kind(&self) -> SamplerKind {
        SamplerKind::DpmPpSde
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

    fn set_noise_seeds(&mut self, seeds: &[u64]) {
        let min = self
            .sigmas
            .iter()
            .copied()
            .filter(|&s| s > 0.0)
            .fold(f32::INFINITY, f32::min);
        let max = self.sigmas.iter().copied().fold(0.0, f32::max);
        self.noise = Some(Box::new(BrownianTrees::new(seeds, min, max)));
    }

    fn scale_model_input(&self, sample: &[f32], step: usize) -> Result<Vec<f32>, SchedulerError> {
        check_step(step, self.timesteps.len())?;
        let sigma = if step.is_multiple_of(2) {
            self.sigmas[step]
        } else {
            (-self.times(step, false).3).exp()
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
        let (sigma, next, t, t_mid) = self.times(step, first);
        let sigma_input = if first { sigma } else { (-t_mid).exp() };
        let prediction = self.prediction;
        let denoised: Vec<f32> = sample
            .iter()
            .zip(model_output)
            .map(|(&x, &m)| denoised_in_sigma_space(prediction, m, x, sigma_input, sigma_input))
            .collect();
        if next == 0.0 {
            let dt = next - sigma;
            self.stage.keep(step, sample, Vec::new());
            return Ok(sample
                .iter()
                .zip(&denoised)
                .map(|(&x, &d)| x + (x - d) / sigma * dt)
                .collect());
        }
        // The first stage goes to the midpoint from this sample; the second redoes the whole
        // step from the first stage's start with the midpoint's estimate.
        let (start, t_to) = if first {
            self.stage.keep(step, sample, Vec::new());
            (sample.to_vec(), t_mid)
        } else {
            (self.stage.take(step).0, -next.ln())
        };
        let sigma_from = (-t).exp();
        let sigma_to = (-t_to).exp();
        let up = (sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to)
            / (sigma_from * sigma_from))
            .sqrt();
        let sigma_up = if up < sigma_to { up } else { sigma_to };
        let sigma_down = (sigma_to * sigma_to - sigma_up * sigma_up).sqrt();
        let t_down = -sigma_down.ln();
        let ratio = (-t_down).exp() / sigma_from;
        let pull = (t - t_down).exp_m1();
        let Some(source) = self.noise.as_mut() else {
            return Err(SchedulerError::Argument {
                name: "DPM++ SDE noise",
                value: "unseeded".into(),
                reason: "call Scheduler::set_noise_seeds with the images' seeds before stepping",
            });
        };
        let w = source.noise(sigma_from, sigma_to, start.len())?;
        check_len("Brownian noise", w.len(), start.len())?;
        Ok(start
            .iter()
            .zip(&denoised)
            .zip(&w)
            .map(|((&x, &d), &z)| (ratio * x - pull * d) + z * sigma_up)
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
