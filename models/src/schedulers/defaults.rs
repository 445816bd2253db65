//! The constructor defaults of each diffusers scheduler class, for fields a config leaves out.
//! They differ between classes, and diffusers applies the class's own: keeping them per sampler
//! reproduces `SomeScheduler.from_config(cfg)` for configs written for another class.

use super::config::{BetaSchedule, SchedulerConfig, TimestepSpacing};
use super::error::SchedulerError;

/// Defaults that differ between the supported classes.
pub(crate) struct ClassDefaults {
    /// The sampler's name in error messages.
    pub sampler: &'static str,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub timestep_spacing: TimestepSpacing,
    pub clip_sample: bool,
    /// Euler, Euler a and DPM-Solver replace a zero final alpha_cumprod (zero-SNR rescaling) by
    /// 2^-24 so the first sigma stays finite; DDIM and LCM keep the zero.
    pub pin_zero_snr: bool,
}

pub(crate) const EULER: ClassDefaults = ClassDefaults {
    sampler: "Euler",
    beta_start: 0.0001,
    beta_end: 0.02,
    beta_schedule: BetaSchedule::Linear,
    timestep_spacing: TimestepSpacing::Linspace,
    clip_sample: false,
    pin_zero_snr: true,
};

pub(crate) const EULER_ANCESTRAL: ClassDefaults = ClassDefaults {
    sampler: "Euler a",
    ..EULER
};

pub(crate) const DDIM: ClassDefaults = ClassDefaults {
    sampler: "DDIM",
    beta_start: 0.0001,
    beta_end: 0.02,
    beta_schedule: BetaSchedule::Linear,
    timestep_spacing: TimestepSpacing::Leading,
    clip_sample: true,
    pin_zero_snr: false,
};

/// DDPMScheduler's defaults are DDIMScheduler's.
pub(crate) const DDPM: ClassDefaults = ClassDefaults {
    sampler: "DDPM",
    ..DDIM
};

pub(crate) const DPM_SOLVER: ClassDefaults = ClassDefaults {
    sampler: "DPM++ 2M",
    ..EULER
};

/// HeunDiscreteScheduler's "sensible defaults" (linear betas between SD's end points).
pub(crate) const HEUN: ClassDefaults = ClassDefaults {
    sampler: "Heun",
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: BetaSchedule::Linear,
    timestep_spacing: TimestepSpacing::Linspace,
    clip_sample: false,
    pin_zero_snr: true,
};

/// KDPM2DiscreteScheduler's defaults are Heun's.
pub(crate) const DPM2: ClassDefaults = ClassDefaults {
    sampler: "DPM2",
    ..HEUN
};

/// DPMSolverSDEScheduler's defaults are Heun's.
pub(crate) const DPM_SDE: ClassDefaults = ClassDefaults {
    sampler: "DPM++ SDE",
    ..HEUN
};

/// UniPCMultistepScheduler's defaults are DPM-Solver's.
pub(crate) const UNIPC: ClassDefaults = ClassDefaults {
    sampler: "UniPC",
    ..EULER
};

pub(crate) const LCM: ClassDefaults = ClassDefaults {
    sampler: "LCM",
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: BetaSchedule::ScaledLinear,
    timestep_spacing: TimestepSpacing::Leading,
    clip_sample: false,
    pin_zero_snr: false,
};

impl ClassDefaults {
    pub fn spacing(&self, cfg: &SchedulerConfig) -> TimestepSpacing {
        cfg.timestep_spacing.unwrap_or(self.timestep_spacing)
    }

    /// Fails when a boolean option kiln does not implement is switched on.
    pub fn reject_enabled(
        &self,
        field: &'static str,
        v: Option<bool>,
    ) -> Result<(), SchedulerError> {
        if v == Some(true) {
            return Err(SchedulerError::Unsupported {
                field,
                value: "true".into(),
                sampler: self.sampler,
            });
        }
        Ok(())
    }

    pub fn unsupported(&self, field: &'static str, value: impl ToString) -> SchedulerError {
        SchedulerError::Unsupported {
            field,
            value: value.to_string(),
            sampler: self.sampler,
        }
    }
}
