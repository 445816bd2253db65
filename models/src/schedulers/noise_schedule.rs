//! The training noise schedule: betas, cumulative alphas and the sigma of every train timestep.
//!
//! diffusers computes these with float32 torch ops; each step here uses the same precision and
//! order so the table matches theirs to the last bit or within one ulp:
//! - `torch.linspace(float32)` forms element i as `start + step*i` (first half) or
//!   `end - step*(steps-1-i)` (second half), which the x86 build compiles to fused multiply-adds;
//! - `torch.cumprod` on float32 accumulates in double and rounds each partial product;
//! - sigma = sqrt((1 - alpha_cumprod) / alpha_cumprod) in float32. (torch's vectorised sqrt is not
//!   always correctly rounded; about 0.6% of the table then differs by one ulp.)

use super::config::{BetaSchedule, SchedulerConfig};
use super::defaults::ClassDefaults;
use super::error::SchedulerError;

/// The per-train-timestep tables, indexed by timestep (0 = least noise).
#[derive(Clone, Debug)]
pub(crate) struct NoiseSchedule {
    pub alphas_cumprod: Vec<f32>,
    pub sigmas: Vec<f32>,
}

impl NoiseSchedule {
    pub fn new(cfg: &SchedulerConfig, d: &ClassDefaults) -> Result<Self, SchedulerError> {
        let num_train = cfg.num_train_timesteps.unwrap_or(1000);
        if num_train < 2 {
            return Err(SchedulerError::FieldValue {
                field: "num_train_timesteps",
                message: format!("{num_train} is too small; at least 2 train timesteps are needed"),
            });
        }
        let mut betas = match &cfg.trained_betas {
            Some(list) => {
                if list.len() != num_train {
                    return Err(SchedulerError::FieldValue {
                        field: "trained_betas",
                        message: format!(
                            "has {} values but num_train_timesteps is {num_train}",
                            list.len()
                        ),
                    });
                }
                list.iter().map(|&b| b as f32).collect()
            }
            None => {
                let start = cfg.beta_start.unwrap_or(d.beta_start);
                let end = cfg.beta_end.unwrap_or(d.beta_end);
                check_beta("beta_start", start)?;
                check_beta("beta_end", end)?;
                match cfg.beta_schedule.unwrap_or(d.beta_schedule) {
                    BetaSchedule::Linear => torch_linspace_f32(start, end, num_train),
                    BetaSchedule::ScaledLinear => {
                        torch_linspace_f32(start.powf(0.5), end.powf(0.5), num_train)
                            .into_iter()
                            .map(|b| b * b)
                            .collect()
                    }
                    BetaSchedule::SquaredCosCapV2 => cosine_betas(num_train),
                }
            }
        };
        if let Some(i) = betas.iter().position(|b| !(0.0..1.0).contains(b)) {
            let field = if cfg.trained_betas.is_some() {
                "trained_betas"
            } else {
                "beta_end"
            };
            return Err(SchedulerError::FieldValue {
                field,
                message: format!("beta {} at timestep {i} is outside [0, 1)", betas[i]),
            });
        }
        let rescale = cfg.rescale_betas_zero_snr.unwrap_or(false);
        if rescale {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
        let mut alphas_cumprod = cumprod(&alphas);
        if rescale && d.pin_zero_snr {
            // Smallest positive float16 subnormal, as diffusers uses, so sigma_max stays finite.
            if let Some(last) = alphas_cumprod.last_mut() {
                *last = 2f32.powi(-24);
            }
        }
        let sigmas = alphas_cumprod.iter().map(|&a| sigma_of(a)).collect();
        Ok(NoiseSchedule {
            alphas_cumprod,
            sigmas,
        })
    }

    pub fn num_train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// alpha_cumprod of a train timestep, or an error naming `steps_offset` when the timestep
    /// lies outside the table (which only a too large offset can cause).
    pub fn alpha_cumprod(&self, t: i64) -> Result<f32, SchedulerError> {
        usize::try_from(t)
            .ok()
            .and_then(|i| self.alphas_cumprod.get(i).copied())
            .ok_or(SchedulerError::FieldValue {
                field: "steps_offset",
                message: format!(
                    "timestep {t} falls outside the {} train timesteps",
                    self.alphas_cumprod.len()
                ),
            })
    }
}

/// sigma = sqrt((1 - a) / a) in float32, diffusers' conversion from alpha_cumprod.
pub(crate) fn sigma_of(alpha_cumprod: f32) -> f32 {
    ((1.0 - alpha_cumprod) / alpha_cumprod).sqrt()
}

fn check_beta(field: &'static str, v: f64) -> Result<(), SchedulerError> {
    if v.is_finite() && (0.0..1.0).contains(&v) {
        Ok(())
    } else {
        Err(SchedulerError::FieldValue {
            field,
            message: format!("{v} is outside [0, 1)"),
        })
    }
}

/// `torch.linspace(start, end, steps, dtype=torch.float32)` on x86 CPUs.
fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (s, e) = (start as f32, end as f32);
    if steps == 1 {
        return vec![s];
    }
    let step = (e - s) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, s)
            } else {
                (-step).mul_add((steps - 1 - i) as f32, e)
            }
        })
        .collect()
}

/// `torch.cumprod` of a float32 tensor: double accumulator, each partial product rounded.
fn cumprod(xs: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    xs.iter()
        .map(|&x| {
            acc *= x as f64;
            acc as f32
        })
        .collect()
}

/// The Glide cosine schedule (`betas_for_alpha_bar`), computed in double like the Python loop.
fn cosine_betas(num_train: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        let c = ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos();
        c * c
    };
    (0..num_train)
        .map(|i| {
            let t1 = i as f64 / num_train as f64;
            let t2 = (i + 1) as f64 / num_train as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// Rescales betas to zero terminal SNR (arXiv 2305.08891, Algorithm 1) in float32.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let mut sqrt_bar: Vec<f32> = cumprod(&alphas).iter().map(|a| a.sqrt()).collect();
    let (first, last) = (sqrt_bar[0], sqrt_bar[sqrt_bar.len() - 1]);
    let scale = first / (first - last);
    for v in sqrt_bar.iter_mut() {
        *v -= last;
        *v *= scale;
    }
    let bar: Vec<f32> = sqrt_bar.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0 - bar[0]);
    for w in bar.windows(2) {
        out.push(1.0 - w[1] / w[0]);
    }
    out
}
