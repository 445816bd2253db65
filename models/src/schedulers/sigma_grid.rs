//! The start of the sigma-space samplers (Euler, Euler a): `steps` timesteps spaced as the config
//! says, kept as the float32 values diffusers holds, and the training sigma interpolated at each.

use super::config::{SchedulerConfig, TimestepSpacing};
use super::defaults::ClassDefaults;
use super::error::SchedulerError;
use super::karras::{sigma_to_t, Respacing};
use super::noise_schedule::NoiseSchedule;
use super::{numpy, timesteps};

pub(crate) struct SigmaGrid {
    pub table: NoiseSchedule,
    pub spacing: TimestepSpacing,
    /// float32 timesteps, widened.
    pub timesteps: Vec<f64>,
    /// The training sigmas interpolated at `timesteps`, in f64.
    pub sigmas: Vec<f64>,
}

impl SigmaGrid {
    pub fn new(
        cfg: &SchedulerConfig,
        class: &ClassDefaults,
        steps: usize,
    ) -> Result<SigmaGrid, SchedulerError> {
        let table = NoiseSchedule::new(cfg, class)?;
        let num_train = table.num_train_timesteps();
        timesteps::check_steps(steps, num_train)?;
        let spacing = class.spacing(cfg);
        let offset = cfg.steps_offset.unwrap_or(0);
        let timesteps: Vec<f64> = timesteps::spaced(spacing, num_train, steps, offset, false)
            .into_iter()
            .map(|t| t as f32 as f64)
            .collect();
        let train_sigmas: Vec<f64> = table.sigmas.iter().map(|&s| s as f64).collect();
        let sigmas = timesteps
            .iter()
            .map(|&t| numpy::interp_on_grid(t, &train_sigmas))
            .collect();
        Ok(SigmaGrid {
            table,
            spacing,
            timesteps,
            sigmas,
        })
    }

    /// Replaces the interpolated sigmas by `respacing`'s between the ends of the current ones (or
    /// `sigma_min` / `sigma_max` where the class reads them from its config), and the timesteps
    /// by the fractional train timesteps of those sigmas.
    pub fn respace(
        &mut self,
        respacing: Respacing,
        sigma_min: Option<f64>,
        sigma_max: Option<f64>,
        steps: usize,
    ) -> Result<(), SchedulerError> {
        let (Some(&first), Some(&last)) = (self.sigmas.first(), self.sigmas.last()) else {
            return Err(SchedulerError::Steps {
                steps,
                reason: "the spacing produced no timesteps".into(),
            });
        };
        self.sigmas =
            respacing.sigmas(sigma_min.unwrap_or(last), sigma_max.unwrap_or(first), steps);
        let log_sigmas: Vec<f32> = self.table.sigmas.iter().map(|s| s.ln()).collect();
        self.timesteps = self
            .sigmas
            .iter()
            .map(|&s| sigma_to_t(s, &log_sigmas))
            .collect();
        Ok(())
    }

    /// The sampler's sigmas as float32 with `last` appended, and `init_noise_sigma` from them.
    pub fn finish(sigmas: &[f64], last: f32, spacing: TimestepSpacing) -> (Vec<f32>, f32) {
        let mut out: Vec<f32> = sigmas.iter().map(|&s| s as f32).collect();
        out.push(last);
        let init = super::common::euler_init_noise_sigma(&out, spacing == TimestepSpacing::Leading);
        (out, init)
    }
}
