//! Where img2img starts in a schedule: diffusers' `StableDiffusionImg2ImgPipeline.get_timesteps`.

use super::error::SchedulerError;

/// The first step index to run for an img2img `strength`: the pipeline skips the first
/// `steps - floor(steps * strength)` steps, noises the encoded image to the level of the first
/// remaining step (`Scheduler::add_noise` at this index) and denoises from there.
pub fn img2img_start(steps: usize, strength: f64) -> Result<usize, SchedulerError> {
    if !(strength > 0.0 && strength <= 1.0) {
        return Err(SchedulerError::Strength(strength));
    }
    let init = ((steps as f64 * strength) as usize).min(steps);
    if init == 0 {
        return Err(SchedulerError::NoStepsLeft { strength, steps });
    }
    Ok(steps - init)
}
