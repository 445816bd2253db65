//! Sampler and schedule names as users type them: A1111's display names ("Euler a",
//! "DPM++ 2M Karras", with the schedule as a separate "Schedule type" since A1111 1.9),
//! its old `k_*` API aliases, and stable-diffusion.cpp's CLI names.

use super::config::TimestepSpacing;
use super::error::SchedulerError;

/// The implemented samplers, each a diffusers scheduler class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SamplerKind {
    /// EulerDiscreteScheduler.
    Euler,
    /// EulerAncestralDiscreteScheduler.
    EulerAncestral,
    /// DDIMScheduler.
    Ddim,
    /// DDPMScheduler (fixed_small variance).
    Ddpm,
    /// DPMSolverMultistepScheduler, dpmsolver++ order 2.
    DpmPp2m,
    /// DPMSolverMultistepScheduler, sde-dpmsolver++ order 2: fresh noise at every step.
    DpmPp2mSde,
    /// LCMScheduler.
    Lcm,
}

impl SamplerKind {
    pub const ALL: [SamplerKind; 7] = [
        SamplerKind::Euler,
        SamplerKind::EulerAncestral,
        SamplerKind::Ddim,
        SamplerKind::Ddpm,
        SamplerKind::DpmPp2m,
        SamplerKind::DpmPp2mSde,
        SamplerKind::Lcm,
    ];

    /// The A1111 display name.
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Euler => "Euler",
            SamplerKind::EulerAncestral => "Euler a",
            SamplerKind::Ddim => "DDIM",
            SamplerKind::Ddpm => "DDPM",
            SamplerKind::DpmPp2m => "DPM++ 2M",
            SamplerKind::DpmPp2mSde => "DPM++ 2M SDE",
            SamplerKind::Lcm => "LCM",
        }
    }

    /// The diffusers class this sampler reproduces.
    pub fn diffusers_class(self) -> &'static str {
        match self {
            SamplerKind::Euler => "EulerDiscreteScheduler",
            SamplerKind::EulerAncestral => "EulerAncestralDiscreteScheduler",
            SamplerKind::Ddim => "DDIMScheduler",
            SamplerKind::Ddpm => "DDPMScheduler",
            SamplerKind::DpmPp2m | SamplerKind::DpmPp2mSde => "DPMSolverMultistepScheduler",
            SamplerKind::Lcm => "LCMScheduler",
        }
    }

    /// Whether diffusers' class offers Karras sigmas (`use_karras_sigmas`).
    pub fn supports_karras(self) -> bool {
        matches!(
            self,
            SamplerKind::Euler | SamplerKind::DpmPp2m | SamplerKind::DpmPp2mSde
        )
    }
}

/// How sigmas are spaced over the steps (A1111's "Schedule type").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SigmaSchedule {
    /// Whatever the scheduler config says (A1111's "Automatic").
    #[default]
    Default,
    /// Karras sigmas, forced on.
    Karras,
}

/// A fully named sampler: which one, its sigma schedule, and overrides implied by its name.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerSpec {
    pub kind: SamplerKind,
    pub schedule: SigmaSchedule,
    /// A spacing the name itself demands (sd.cpp's "ddim_trailing"), overriding the config.
    pub timestep_spacing: Option<TimestepSpacing>,
    /// DDIM's eta (0 = deterministic, A1111's default); other samplers ignore it.
    pub eta: f32,
}

impl SamplerSpec {
    pub fn new(kind: SamplerKind) -> Self {
        SamplerSpec {
            kind,
            schedule: SigmaSchedule::Default,
            timestep_spacing: None,
            eta: 0.0,
        }
    }

    /// Parses a sampler name; a trailing "Karras" selects the Karras schedule.
    pub fn parse(name: &str) -> Result<Self, SchedulerError> {
        let norm = normalize(name);
        let (base, karras) = match norm
            .strip_suffix(" karras")
            .or_else(|| norm.strip_suffix("_karras"))
            .or_else(|| norm.strip_suffix("_ka"))
        {
            Some(base) => (base, true),
            None => (norm.as_str(), false),
        };
        let (kind, spacing) = match base {
            "euler" | "k_euler" => (SamplerKind::Euler, None),
            "euler a" | "euler_a" | "k_euler_a" | "euler ancestral" | "euler_ancestral" => {
                (SamplerKind::EulerAncestral, None)
            }
            "ddim" => (SamplerKind::Ddim, None),
            "ddpm" => (SamplerKind::Ddpm, None),
            "ddim_trailing" | "ddim trailing" => {
                (SamplerKind::Ddim, Some(TimestepSpacing::Trailing))
            }
            "dpm++ 2m" | "dpm++2m" | "dpm++_2m" | "dpmpp_2m" | "dpmpp2m" | "k_dpmpp_2m" => {
                (SamplerKind::DpmPp2m, None)
            }
            "dpm++ 2m sde" | "dpm++2m_sde" | "dpm++_2m_sde" | "dpmpp_2m_sde" | "k_dpmpp_2m_sde" => {
                (SamplerKind::DpmPp2mSde, None)
            }
            "lcm" => (SamplerKind::Lcm, None),
            _ => {
                return Err(SchedulerError::UnknownSampler {
                    given: name.to_string(),
                    valid: VALID_SAMPLERS.to_string(),
                })
            }
        };
        let mut spec = SamplerSpec::new(kind);
        spec.timestep_spacing = spacing;
        if karras {
            spec = spec.with_schedule(SigmaSchedule::Karras)?;
        }
        Ok(spec)
    }

    /// Applies a schedule type, refusing one the sampler's diffusers class lacks.
    pub fn with_schedule(mut self, schedule: SigmaSchedule) -> Result<Self, SchedulerError> {
        if schedule == SigmaSchedule::Karras && !self.kind.supports_karras() {
            return Err(SchedulerError::ScheduleNotSupported {
                sampler: self.kind.name(),
                schedule: "Karras",
                class: self.kind.diffusers_class(),
            });
        }
        self.schedule = schedule;
        Ok(self)
    }
}

const VALID_SAMPLERS: &str = "Euler, Euler a, DDIM, DDPM, DPM++ 2M, DPM++ 2M SDE, LCM (A1111 \
names, optionally followed by ' Karras'), euler, euler_a, ddim, ddim_trailing, ddpm, dpm++2m, dpm++2m_sde, lcm \
(stable-diffusion.cpp names), k_euler, k_euler_a, k_dpmpp_2m, k_dpmpp_2m_ka, k_dpmpp_2m_sde";

/// Parses an A1111 "Schedule type" or an sd.cpp `--schedule` value.
pub fn parse_schedule(name: &str) -> Result<SigmaSchedule, SchedulerError> {
    match normalize(name).as_str() {
        "" | "automatic" | "auto" | "default" | "discrete" | "normal" => Ok(SigmaSchedule::Default),
        "karras" => Ok(SigmaSchedule::Karras),
        _ => Err(SchedulerError::UnknownSchedule {
            given: name.to_string(),
            valid: "Automatic (also default, discrete, normal), Karras".into(),
        }),
    }
}

/// Lower case with runs of whitespace collapsed to one space.
fn normalize(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}
