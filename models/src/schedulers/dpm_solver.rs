//! DPM++ 2M (diffusers' `DPMSolverMultistepScheduler` with algorithm "dpmsolver++", order 2):
//! a multistep solver in log-SNR time that reuses the previous step's denoised estimate; and
//! DPM++ 2M SDE ("sde-dpmsolver++"), the same solver as a stochastic one: part of the move comes
//! from fresh noise drawn at every step (before the update, from the run's generator, as
//! diffusers draws it).
//!
//! The sampler keeps that estimate between calls, so steps must be taken in order. With the
//! default `final_sigmas_type = "zero"` the last step is first order and returns the denoised
//! estimate; otherwise it is first order only with fewer than 15 steps and `lower_order_final`.

use super::common::{check_len, check_step};
use super::config::{FinalSigmas, PredictionType, SchedulerConfig, SolverType};
use super::defaults::DPM_SOLVER;
use super::error::SchedulerError;
use super::karras::{sigma_to_t, Respacing};
use super::names::SamplerKind;
use super::noise_schedule::{sigma_of, NoiseSchedule};
use super::{numpy, timesteps, BetaSchedule, Scheduler};
use crate::rng::NoiseSource;

/// Below this many steps diffusers lowers the order of the final steps for stability.
const LOWER_ORDER_FINAL_BELOW: usize = 15;

#[derive(Clone, Debug)]
pub struct DpmSolverMultistep {
    timesteps: Vec<f32>,
    sigmas: Vec<f32>,
    prediction: PredictionType,
    order: usize,
    solver: SolverType,
    lower_order_final: bool,
    euler_at_final: bool,
    final_zero: bool,
    /// "sde-dpmsolver++": noise of scale `sigma_t sqrt(1 - e^(-2h))` at each step.
    sde: bool,
    /// Denoised estimate of the previous step.
    previous: Option<Vec<f32>>,
    /// How many steps have run (capped at the order), diffusers' `lower_order_nums`.
    steps_taken: usize,
    /// The step index the next call must have, once stepping has begun.
    next_step: Option<usize>,
}

impl DpmSolverMultistep {
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        let d = &DPM_SOLVER;
        d.reject_enabled("thresholding", cfg.thresholding)?;
        d.reject_enabled("use_beta_sigmas", cfg.use_beta_sigmas)?;
        d.reject_enabled("use_lu_lambdas", cfg.use_lu_lambdas)?;
        d.reject_enabled("use_flow_sigmas", cfg.use_flow_sigmas)?;
        d.reject_enabled("use_dynamic_shifting", cfg.use_dynamic_shifting)?;
        let sde = match cfg.algorithm_type.as_deref() {
            None | Some("dpmsolver++") => false,
            Some("sde-dpmsolver++") => true,
            Some(other) => return Err(d.unsupported("algorithm_type", other)),
        };
        if let Some(v) = &cfg.variance_type {
            return Err(d.unsupported("variance_type", v));
        }
        let order = cfg.solver_order.unwrap_or(2);
        if !(1..=2).contains(&order) {
            return Err(d.unsupported("solver_order", order));
        }

        let table = NoiseSchedule::new(cfg, d)?;
        let num_train = table.num_train_timesteps();
        timesteps::check_steps(steps, num_train)?;
        let last_timestep = num_train - clipped_count(&table, cfg.lambda_min_clipped);
        let offset = cfg.steps_offset.unwrap_or(0);
        let mut ts = timesteps::dpm_solver(d.spacing(cfg), num_train, last_timestep, steps, offset);

        let sigmas: Vec<f64> = match Respacing::from_config(cfg)? {
            Some(respacing) => {
                // Karras timesteps are rounded (except for the cosine schedule); exponential
                // ones stay fractional until the int64 cast below.
                let round = respacing == Respacing::Karras
                    && cfg.beta_schedule != Some(BetaSchedule::SquaredCosCapV2);
                respaced(&table, respacing, (None, None), steps, &mut ts, round)
            }
            None => {
                let train: Vec<f64> = table.sigmas.iter().map(|&s| s as f64).collect();
                ts.iter()
                    .map(|&t| numpy::interp_on_grid(t, &train))
                    .collect()
            }
        };
        let final_sigmas = cfg.final_sigmas_type.unwrap_or(FinalSigmas::Zero);
        let last = match final_sigmas {
            FinalSigmas::Zero => 0.0,
            FinalSigmas::SigmaMin => sigma_of(table.alphas_cumprod[0]),
        };
        let mut sigmas: Vec<f32> = sigmas.into_iter().map(|s| s as f32).collect();
        sigmas.push(last);
        let timesteps = int_timesteps(&ts, num_train)?;
        Ok(DpmSolverMultistep {
            timesteps,
            sigmas,
            prediction: cfg.prediction_type.unwrap_or(PredictionType::Epsilon),
            order,
            // UniPC's bh1 / bh2 mean midpoint here, as in diffusers.
            solver: match cfg.solver_type {
                Some(SolverType::Heun) => SolverType::Heun,
                _ => SolverType::Midpoint,
            },
            lower_order_final: cfg.lower_order_final.unwrap_or(true),
            euler_at_final: cfg.euler_at_final.unwrap_or(false),
            final_zero: final_sigmas == FinalSigmas::Zero,
            sde,
            previous: None,
            steps_taken: 0,
            next_step: None,
        })
    }
}

/// Karras or exponential sigmas over the whole train range (or between `range`'s ends, where a
/// class reads them from its config) and their train timesteps (written to `ts`, rounded when
/// `round`), as the multistep solvers (DPM-Solver, UniPC) compute them.
pub(crate) fn respaced(
    table: &NoiseSchedule,
    respacing: Respacing,
    range: (Option<f64>, Option<f64>),
    steps: usize,
    ts: &mut Vec<f64>,
    round: bool,
) -> Vec<f64> {
    let (Some(&min), Some(&max)) = (table.sigmas.first(), table.sigmas.last()) else {
        return Vec::new();
    };
    let (min, max) = (range.0.unwrap_or(min as f64), range.1.unwrap_or(max as f64));
    let sig = respacing.sigmas(min, max, steps);
    let log_sigmas: Vec<f32> = table.sigmas.iter().map(|s| s.ln()).collect();
    *ts = sig
        .iter()
        .map(|&s| {
            let t = sigma_to_t(s, &log_sigmas);
            if round {
                t.round_ties_even()
            } else {
                t
            }
        })
        .collect();
    sig
}

/// The timesteps as diffusers' multistep solvers store them, int64 (truncating any fraction),
/// each checked to be a train timestep.
pub(crate) fn int_timesteps(ts: &[f64], num_train: usize) -> Result<Vec<f32>, SchedulerError> {
    let timesteps: Vec<f32> = ts.iter().map(|&t| t as i64 as f32).collect();
    for &t in &timesteps {
        if !(0.0..num_train as f32).contains(&t) {
            return Err(SchedulerError::FieldValue {
                field: "steps_offset",
                message: format!("timestep {t} falls outside the {num_train} train timesteps"),
            });
        }
    }
    Ok(timesteps)
}

/// How many of the noisiest train timesteps have log-SNR below `lambda_min_clipped`
/// (`searchsorted` on the flipped lambda table). None are clipped by default.
fn clipped_count(table: &NoiseSchedule, lambda_min_clipped: Option<f64>) -> usize {
    let Some(limit) = lambda_min_clipped else {
        return 0;
    };
    table
        .alphas_cumprod
        .iter()
        .rev()
        .map(|&a| (a.sqrt().ln() - (1.0 - a).sqrt().ln()) as f64)
        .take_while(|&l| l < limit)
        .count()
}

/// (alpha_t, sigma_t) of the variance-preserving process whose noise-to-signal ratio is `sigma`,
/// and its log-SNR lambda, in float32 as diffusers computes them.
pub(crate) fn alpha_sigma_lambda(sigma: f32) -> (f32, f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    let sigma_t = sigma * alpha;
    // At sigma = 0 this is +inf; the first-order update below is then exactly the denoised value.
    let lambda = alpha.ln() - sigma_t.ln();
    (alpha, sigma_t, lambda)
}

impl DpmSolverMultistep {
    /// Keeps this step's denoised estimate for the next and moves the step counters on.
    fn finish(&mut self, step: usize, denoised: Vec<f32>, out: Vec<f32>) -> Vec<f32> {
        self.previous = Some(denoised);
        self.steps_taken = (self.steps_taken + 1).min(self.order);
        self.next_step = Some(step + 1);
        out
    }

    /// sde-dpmsolver++ from `sample` at step `step` to the next sigma (log-SNR gap `h`): the
    /// deterministic part decays by `e^(-h)` and pulls towards the denoised estimate by
    /// `alpha_t (1 - e^(-2h))` (plus half that times the lambda-slope of the estimate at second
    /// order, midpoint; heun's own weight otherwise), and `noise` adds `sigma_t sqrt(1 - e^(-2h))`.
    fn sde_update(
        &self,
        sample: &[f32],
        denoised: &[f32],
        noise: &[f32],
        step: usize,
        first_order: bool,
        h: f32,
    ) -> Vec<f32> {
        let (_, sigma_s0, _) = alpha_sigma_lambda(self.sigmas[step]);
        let (alpha_t, sigma_t, _) = alpha_sigma_lambda(self.sigmas[step + 1]);
        let decay = sigma_t / sigma_s0 * (-h).exp();
        let pull = alpha_t * (1.0 - (-2.0 * h).exp());
        let spread = sigma_t * (1.0 - (-2.0 * h).exp()).sqrt();
        let base = |(&x, &d0): (&f32, &f32)| decay * x + pull * d0;
        match (&self.previous, first_order) {
            (Some(prev), false) => {
                let (_, _, lambda_s0) = alpha_sigma_lambda(self.sigmas[step]);
                let (_, _, lambda_s1) = alpha_sigma_lambda(self.sigmas[step - 1]);
                let inv_r0 = 1.0 / ((lambda_s0 - lambda_s1) / h);
                let slope = match self.solver {
                    SolverType::Heun => alpha_t * ((1.0 - (-2.0 * h).exp()) / (-2.0 * h) + 1.0),
                    _ => 0.5 * pull,
                };
                sample
                    .iter()
                    .zip(denoised)
                    .zip(prev)
                    .zip(noise)
                    .map(|(((x, d0), &d_prev), &n)| {
                        let d1 = inv_r0 * (d0 - d_prev);
                        base((x, d0)) + slope * d1 + spread * n
                    })
                    .collect()
            }
            _ => sample
                .iter()
                .zip(denoised)
                .zip(noise)
                .map(|((x, d0), &n)| base((x, d0)) + spread * n)
                .collect(),
        }
    }
}

impl Scheduler for DpmSolverMultistep {
    fn kind(&self) -> SamplerKind {
        if self.sde {
            SamplerKind::DpmPp2mSde
        } else {
            SamplerKind::DpmPp2m
        }
    }

    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.sigmas)
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
        let len = self.timesteps.len();
        check_step(step, len)?;
        check_len("model_output", model_output.len(), sample.len())?;
        if let Some(expected) = self.next_step {
            if expected != step {
                return Err(SchedulerError::StepOrder {
                    sampler: self.kind().name(),
                    expected,
                    got: step,
                });
            }
        }
        let short = self.lower_order_final && len < LOWER_ORDER_FINAL_BELOW;
        let last_is_first_order =
            step == len - 1 && (self.euler_at_final || short || self.final_zero);

        let (alpha_s0, sigma_s0, lambda_s0) = alpha_sigma_lambda(self.sigmas[step]);
        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[step + 1]);
        let denoised: Vec<f32> = sample
            .iter()
            .zip(model_output)
            .map(|(&x, &m)| match self.prediction {
                PredictionType::Epsilon => (x - sigma_s0 * m) / alpha_s0,
                PredictionType::VPrediction => alpha_s0 * x - sigma_s0 * m,
                PredictionType::Sample => m,
            })
            .collect();

        let h = lambda_t - lambda_s0;
        // (diffusers also lowers the second-to-last step, but that only matters for order 3.)
        let first_order = self.order == 1 || self.steps_taken < 1 || last_is_first_order;
        if self.sde {
            let fresh = noise.randn(sample.len());
            let out = self.sde_update(sample, &denoised, &fresh, step, first_order, h);
            return Ok(self.finish(step, denoised, out));
        }
        let ratio = sigma_t / sigma_s0;
        let phi = alpha_t * ((-h).exp() - 1.0);
        let out: Vec<f32> = match (&self.previous, first_order) {
            (Some(prev), false) => {
                // Second order: extrapolate the denoised estimate linearly in lambda.
                let (_, _, lambda_s1) = alpha_sigma_lambda(self.sigmas[step - 1]);
                let r0 = (lambda_s0 - lambda_s1) / h;
                let inv_r0 = 1.0 / r0;
                let heun = alpha_t * (((-h).exp() - 1.0) / h + 1.0);
                sample
                    .iter()
                    .zip(&denoised)
                    .zip(prev)
                    .map(|((&x, &d0), &d_prev)| {
                        let d1 = inv_r0 * (d0 - d_prev);
                        match self.solver {
                            SolverType::Heun => ratio * x - phi * d0 + heun * d1,
                            _ => ratio * x - phi * d0 - 0.5 * phi * d1,
                        }
                    })
                    .collect()
            }
            _ => sample
                .iter()
                .zip(&denoised)
                .map(|(&x, &d0)| ratio * x - phi * d0)
                .collect(),
        };
        Ok(self.finish(step, denoised, out))
    }

    fn add_noise(
        &self,
        original: &[f32],
        noise: &[f32],
        step: usize,
    ) -> Result<Vec<f32>, SchedulerError> {
        check_step(step, self.timesteps.len())?;
        check_len("noise", noise.len(), original.len())?;
        let (alpha, sigma, _) = alpha_sigma_lambda(self.sigmas[step]);
        Ok(original
            .iter()
            .zip(noise)
            .map(|(&x, &n)| alpha * x + sigma * n)
            .collect())
    }
}
