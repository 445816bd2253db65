//! Checks and small pieces of arithmetic shared by the samplers.

use super::config::PredictionType;
use super::error::SchedulerError;

/// Fails unless `got` equals the sample length.
pub(crate) fn check_len(
    what: &'static str,
    got: usize,
    expected: usize,
) -> Result<(), SchedulerError> {
    if got == expected {
        Ok(())
    } else {
        Err(SchedulerError::Length {
            what,
            got,
            expected,
        })
    }
}

/// Fails unless `step` indexes one of `len` steps.
pub(crate) fn check_step(step: usize, len: usize) -> Result<(), SchedulerError> {
    if step < len {
        Ok(())
    } else {
        Err(SchedulerError::StepIndex { index: step, len })
    }
}

/// The clean-sample estimate of the sigma-parameterised (Euler-type) samplers, in diffusers'
/// float32 operation order. `sigma_hat` is the churned sigma (equal to sigma without churn).
pub(crate) fn denoised_in_sigma_space(
    prediction: PredictionType,
    model: f32,
    sample: f32,
    sigma: f32,
    sigma_hat: f32,
) -> f32 {
    match prediction {
        PredictionType::Epsilon => sample - sigma_hat * model,
        PredictionType::VPrediction => {
            let var = sigma * sigma + 1.0;
            model * (-sigma / var.sqrt()) + sample / var
        }
        PredictionType::Sample => model,
    }
}

/// The model input scale of the sigma-parameterised samplers: x / sqrt(sigma^2 + 1).
pub(crate) fn scale_by_sigma(sample: &[f32], sigma: f32) -> Vec<f32> {
    let d = (sigma * sigma + 1.0).sqrt();
    sample.iter().map(|x| x / d).collect()
}

/// `max(sigmas)` for "linspace"/"trailing" spacing, else sqrt(max^2 + 1): diffusers' txt2img
/// noise scale for Euler-type samplers.
pub(crate) fn euler_init_noise_sigma(sigmas: &[f32], leading: bool) -> f32 {
    let max = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if leading {
        (max * max + 1.0).sqrt()
    } else {
        max
    }
}
