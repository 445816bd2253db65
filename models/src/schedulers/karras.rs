//! Karras et al. (2022) sigma spacing and the inverse map from a sigma to a fractional train
//! timestep, in float64 as diffusers computes them with numpy.

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
