//! UniPC (diffusers' `UniPCMultistepScheduler`, A1111 "UniPC"; Zhao et al. 2023): a multistep
//! predictor in log-SNR time on the model's clean-sample estimates (like DPM++ 2M), followed at
//! the next call by a corrector that reuses the new model evaluation to refine the sample before
//! predicting again, so it costs one model evaluation per step. Order 2 with B(h) = e^h - 1
//! ("bh2") by default, as diffusers; the first step is first order and so is the last.
//!
//! The sampler keeps its history between calls, so steps must be taken in order.

use super::common::{check_len, check_step};
use super::config::{FinalSigmas, PredictionType, SchedulerConfig, SolverType};
use super::defaults::UNIPC;
use super::dpm_solver::{alpha_sigma_lambda, int_timesteps, respaced};
use super::error::SchedulerError;
use super::karras::Respacing;
use super::names::SamplerKind;
use super::noise_schedule::{sigma_of, NoiseSchedule};
use super::{numpy, timesteps, Scheduler};
use crate::rng::NoiseSource;

#[derive(Clone, Debug)]
pub struct UniPc {
    timesteps: Vec<f32>,
    sigmas: Vec<f32>,
    prediction: PredictionType,
    order: usize,
    /// B(h) = h ("bh1") instead of e^h - 1 ("bh2").
    bh1: bool,
    lower_order_final: bool,
    /// The clean-sample estimates of the last `order` steps, oldest first.
    history: Vec<Vec<f32>>,
    /// The sample the last predictor started from, for the corrector.
    last_sample: Option<Vec<f32>>,
    /// The order the last predictor used (the corrector uses the same).
    last_order: usize,
    /// How many steps have run (capped at the order), diffusers' `lower_order_nums`.
    steps_taken: usize,
    next_step: Option<usize>,
}

impl UniPc {
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        let d = &UNIPC;
        d.reject_enabled("thresholding", cfg.thresholding)?;
        d.reject_enabled("use_beta_sigmas", cfg.use_beta_sigmas)?;
        d.reject_enabled("use_flow_sigmas", cfg.use_flow_sigmas)?;
        d.reject_enabled("use_dynamic_shifting", cfg.use_dynamic_shifting)?;
        let order = cfg.solver_order.unwrap_or(2);
        if !(1..=2).contains(&order) {
            return Err(d.unsupported("solver_order", order));
        }
        let table = NoiseSchedule::new(cfg, d)?;
        let num_train = table.num_train_timesteps();
        timesteps::check_steps(steps, num_train)?;
        let offset = cfg.steps_offset.unwrap_or(0);
        // UniPC spaces its timesteps as DPM-Solver does, without lambda clipping.
        let mut ts = timesteps::dpm_solver(d.spacing(cfg), num_train, num_train, steps, offset);
        let final_sigmas = cfg.final_sigmas_type.unwrap_or(FinalSigmas::Zero);
        let (sigmas, last) = match Respacing::from_config(cfg)? {
            Some(respacing) => {
                let range = (cfg.sigma_min, cfg.sigma_max);
                let round = respacing == Respacing::Karras;
                let sig = respaced(&table, respacing, range, steps, &mut ts, round);
                // With respaced sigmas "sigma_min" means the last of them.
                let last = match final_sigmas {
                    FinalSigmas::Zero => 0.0,
                    FinalSigmas::SigmaMin => sig.last().copied().unwrap_or(0.0) as f32,
                };
                (sig, last)
            }
            None => {
                let train: Vec<f64> = table.sigmas.iter().map(|&s| s as f64).collect();
                let sig = ts
                    .iter()
                    .map(|&t| numpy::interp_on_grid(t, &train))
                    .collect();
                let last = match final_sigmas {
                    FinalSigmas::Zero => 0.0,
                    FinalSigmas::SigmaMin => sigma_of(table.alphas_cumprod[0]),
                };
                (sig, last)
            }
        };
        let mut sigmas: Vec<f32> = sigmas.into_iter().map(|s| s as f32).collect();
        sigmas.push(last);
        Ok(UniPc {
            timesteps: int_timesteps(&ts, num_train)?,
            sigmas,
            prediction: cfg.prediction_type.unwrap_or(PredictionType::Epsilon),
            order,
            // DPM-Solver's midpoint / heun mean bh2 here, as in diffusers.
            bh1: cfg.solver_type == Some(SolverType::Bh1),
            lower_order_final: cfg.lower_order_final.unwrap_or(true),
            history: Vec::new(),
            last_sample: None,
            last_order: 1,
            steps_taken: 0,
            next_step: None,
        })
    }

    /// B(h) and h phi_1(h) = e^(-h) - 1 for the log-SNR gap `h` (predicting x0, so at -h).
    fn b_and_phi(&self, h: f32) -> (f32, f32) {
        let hh = -h;
        let phi = hh.exp_m1();
        (if self.bh1 { hh } else { phi }, phi)
    }

    /// The predictor from `x` at sigma index `s` to `s + 1` with the estimates `history`
    /// (the newest last), at `order`.
    fn predict(&self, x: &[f32], s: usize, order: usize) -> Vec<f32> {
        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[s + 1]);
        let (_, sigma_s0, lambda_s0) = alpha_sigma_lambda(self.sigmas[s]);
        let h = lambda_t - lambda_s0;
        let (b_h, phi) = self.b_and_phi(h);
        let ratio = sigma_t / sigma_s0;
        let m0 = &self.history[self.history.len() - 1];
        let pull = alpha_t * phi;
        if order == 1 {
            return x
                .iter()
                .zip(m0)
                .map(|(&x, &m)| ratio * x - pull * m)
                .collect();
        }
        // Second order: the slope from the previous estimate, weighted 0.5 (diffusers' rhos_p).
        let (_, _, lambda_s1) = alpha_sigma_lambda(self.sigmas[s - 1]);
        let rk = (lambda_s1 - lambda_s0) / h;
        let m1 = &self.history[self.history.len() - 2];
        let scale = alpha_t * b_h;
        x.iter()
            .zip(m0)
            .zip(m1)
            .map(|((&x, &m0), &m1)| {
                let d1 = (m1 - m0) / rk;
                (ratio * x - pull * m0) - scale * (0.5 * d1)
            })
            .collect()
    }

    /// The corrector: the sample at sigma index `s` recomputed from the last predictor's start
    /// with the new estimate `model_t` (not yet in `history`), at `order`.
    fn correct(&self, last: &[f32], model_t: &[f32], s: usize, order: usize) -> Vec<f32> {
        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[s]);
        let (_, sigma_s0, lambda_s0) = alpha_sigma_lambda(self.sigmas[s - 1]);
        let h = lambda_t - lambda_s0;
        let (b_h, phi) = self.b_and_phi(h);
        let ratio = sigma_t / sigma_s0;
        let pull = alpha_t * phi;
        let scale = alpha_t * b_h;
        let m0 = &self.history[self.history.len() - 1];
        if order == 1 {
            return last
                .iter()
                .zip(m0)
                .zip(model_t)
                .map(|((&x, &m0), &mt)| (ratio * x - pull * m0) - scale * (0.5 * (mt - m0)))
                .collect();
        }
        let (_, _, lambda_s1) = alpha_sigma_lambda(self.sigmas[s - 2]);
        let rk = (lambda_s1 - lambda_s0) / h;
        let hh = -h;
        // b_i = h_phi_(i+1) * i! / B(h), with h_phi_k recurring as h_phi_k / hh - 1 / k!.
        let hp1 = phi / hh - 1.0;
        let hp2 = hp1 / hh - 0.5;
        let b = [hp1 / b_h, hp2 * 2.0 / b_h];
        let [rho0, rho1] = solve2([[1.0, 1.0], [rk, 1.0]], b);
        let m1 = &self.history[self.history.len() - 2];
        last.iter()
            .zip(m0)
            .zip(m1.iter().zip(model_t))
            .map(|((&x, &m0), (&m1, &mt))| {
                let d1 = (m1 - m0) / rk;
                (ratio * x - pull * m0) - scale * (rho0 * d1 + rho1 * (mt - m0))
            })
            .collect()
    }
}

/// A 2x2 solve by LU with partial pivoting in float32 (LAPACK's sgesv, as torch.linalg.solve).
fn solve2(a: [[f32; 2]; 2], b: [f32; 2]) -> [f32; 2] {
    let (a, b) = if a[1][0].abs() > a[0][0].abs() {
        ([a[1], a[0]], [b[1], b[0]])
    } else {
        (a, b)
    };
    let l = a[1][0] * (1.0 / a[0][0]);
    let u11 = a[1][1] - l * a[0][1];
    let y1 = b[1] - l * b[0];
    let x1 = y1 / u11;
    let x0 = (b[0] - x1 * a[0][1]) / a[0][0];
    [x0, x1]
}

impl Scheduler for UniPc {
    fn kind(&self) -> SamplerKind {
        SamplerKind::UniPc
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
        _noise: &mut dyn NoiseSource,
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
        let (alpha, sigma, _) = alpha_sigma_lambda(self.sigmas[step]);
        let estimate: Vec<f32> = sample
            .iter()
            .zip(model_output)
            .map(|(&x, &m)| match self.prediction {
                PredictionType::Epsilon => (x - sigma * m) / alpha,
                PredictionType::VPrediction => alpha * x - sigma * m,
                PredictionType::Sample => m,
            })
            .collect();
        let corrected = match &self.last_sample {
            Some(last) if step > 0 => Some(self.correct(last, &estimate, step, self.last_order)),
            _ => None,
        };
        let sample = corrected.unwrap_or_else(|| sample.to_vec());
        self.history.push(estimate);
        if self.history.len() > self.order {
            self.history.remove(0);
        }
        let mut order = self.order;
        if self.lower_order_final {
            order = order.min(len - step);
        }
        // Warm-up: no higher order than the history allows.
        let order = order.min(self.steps_taken + 1);
        let out = self.predict(&sample, step, order);
        self.last_sample = Some(sample);
        self.last_order = order;
        self.steps_taken = (self.steps_taken + 1).min(self.order);
        self.next_step = Some(step + 1);
        Ok(out)
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
