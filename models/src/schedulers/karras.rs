//! Karras et al. (2022) and exponential (log-uniform) sigma spacing, and the inverse map from a
//! sigma to a fractional train timestep, in float64 as diffusers computes them with numpy.

use super::numpy;

/// The paper's rho.
const RHO: f64 = 7.0;

/// `steps` sigmas from `sigma_max` down to `sigma_min`, evenly spaced in sigma^(1/rho).
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    let min_inv = sigma_min.powf(1.0 / RHO);
    let max_inv = sigma_max.powf(1.0 / RHO);
    numpy::linspace(0.0, 1.0, steps, true)
        .into_iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(RHO))
        .collect()
}

/// `steps` sigmas from `sigma_max` down to `sigma_min`, evenly spaced in log sigma (diffusers'
/// `_convert_to_exponential`).
pub(crate) fn exponential_sigmas(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    numpy::linspace(sigma_max.ln(), sigma_min.ln(), steps, true)
        .into_iter()
        .map(f64::exp)
        .collect()
}

/// Which respacing of the sigmas a config asks for (diffusers refuses more than one at once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Respacing {
    Karras,
    Exponential,
}

impl Respacing {
    /// From `use_karras_sigmas` / `use_exponential_sigmas`; both on is a config error, as in
    /// diffusers.
    pub fn from_config(
        cfg: &super::SchedulerConfig,
    ) -> Result<Option<Respacing>, super::SchedulerError> {
        match (cfg.use_karras_sigmas, cfg.use_exponential_sigmas) {
            (Some(true), Some(true)) => Err(super::SchedulerError::FieldValue {
                field: "use_exponential_sigmas",
                message: "cannot be combined with use_karras_sigmas".into(),
            }),
            (Some(true), _) => Ok(Some(Respacing::Karras)),
            (_, Some(true)) => Ok(Some(Respacing::Exponential)),
            _ => Ok(None),
        }
    }

    /// `steps` sigmas from `sigma_max` down to `sigma_min`.
    pub fn sigmas(self, sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
        match self {
            Respacing::Karras => karras_sigmas(sigma_min, sigma_max, steps),
            Respacing::Exponential => exponential_sigmas(sigma_min, sigma_max, steps),
        }
    }
}

/// The fractional train timestep whose sigma is `sigma`, by linear interpolation in log sigma
/// between the two neighbouring train sigmas (diffusers' `_sigma_to_t`). `log_sigmas` is the log
/// of the float32 train sigma table, itself float32 as numpy computes it.
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // The last train timestep whose log sigma does not exceed ours (0 when none does), kept
    // below the end so there is a neighbour above.
    let low = log_sigmas
        .iter()
        .rposition(|&l| log_sigma - l as f64 >= 0.0)
        .unwrap_or(0)
        .min(log_sigmas.len() - 2);
    let high = low + 1;
    let (lo, hi) = (log_sigmas[low] as f64, log_sigmas[high] as f64);
    let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * high as f64
}
