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
    /// HeunDiscreteScheduler: two model evaluations per step but the last.
    Heun,
    /// KDPM2DiscreteScheduler: two model evaluations per step but the last.
    Dpm2,
    /// UniPCMultistepScheduler (bh2, order 2 unless the config says otherwise).
    UniPc,
    /// DPMSolverSDEScheduler: two model evaluations per step but the last, Brownian noise.
    DpmPpSde,
}

impl SamplerKind {
    pub const ALL: [SamplerKind; 11] = [
        SamplerKind::Euler,
        SamplerKind::EulerAncestral,
        SamplerKind::Heun,
        SamplerKind::Dpm2,
        SamplerKind::Ddim,
        SamplerKind::Ddpm,
        SamplerKind::DpmPp2m,
        SamplerKind::DpmPp2mSde,
        SamplerKind::DpmPpSde,
        SamplerKind::UniPc,
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
            SamplerKind::Heun => "Heun",
            SamplerKind::Dpm2 => "DPM2",
            SamplerKind::UniPc => "UniPC",
            SamplerKind::DpmPpSde => "DPM++ SDE",
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
            SamplerKind::Heun => "HeunDiscreteScheduler",
            SamplerKind::Dpm2 => "KDPM2DiscreteScheduler",
            SamplerKind::UniPc => "UniPCMultistepScheduler",
            SamplerKind::DpmPpSde => "DPMSolverSDEScheduler",
        }
    }

    /// Whether diffusers' class offers the schedule: Karras and exponential sigmas where the class
    /// has `use_karras_sigmas` / `use_exponential_sigmas`, SGM Uniform where its
    /// `set_timesteps` honours `timestep_spacing` (LCM's ignores it).
    pub fn supports(self, schedule: SigmaSchedule) -> bool {
        use SamplerKind::*;
        match schedule {
            SigmaSchedule::Default => true,
            SigmaSchedule::Karras | SigmaSchedule::Exponential => {
                matches!(
                    self,
                    Euler | DpmPp2m | DpmPp2mSde | DpmPpSde | Heun | Dpm2 | UniPc
                )
            }
            SigmaSchedule::SgmUniform => !matches!(self, Lcm),
        }
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
    /// Sigmas evenly spaced in log sigma over the whole training range: diffusers'
    /// `use_exponential_sigmas` with "linspace" spacing, as its scheduler overview maps A1111's
    /// "Exponential".
    Exponential,
    /// A1111's "SGM Uniform", which diffusers' scheduler overview maps to "trailing" timestep
    /// spacing (timesteps evenly spaced from the last train timestep down).
    SgmUniform,
}

impl SigmaSchedule {
    pub const ALL: [SigmaSchedule; 4] = [
        SigmaSchedule::Default,
        SigmaSchedule::Karras,
        SigmaSchedule::Exponential,
        SigmaSchedule::SgmUniform,
    ];

    /// A1111's label (its "Schedule type" menu and infotext).
    pub fn label(self) -> &'static str {
        match self {
            SigmaSchedule::Default => "Automatic",
            SigmaSchedule::Karras => "Karras",
            SigmaSchedule::Exponential => "Exponential",
            SigmaSchedule::SgmUniform => "SGM Uniform",
        }
    }

    /// A1111's API name (`scheduler` in a request) and sd.cpp's `--schedule` value.
    pub fn api_name(self) -> &'static str {
        match self {
            SigmaSchedule::Default => "automatic",
            SigmaSchedule::Karras => "karras",
            SigmaSchedule::Exponential => "exponential",
            SigmaSchedule::SgmUniform => "sgm_uniform",
        }
    }
}

/// Name suffixes that pick a schedule ("DPM++ 2M Karras", A1111's older "DPM++ 2M SDE
/// Exponential", the `k_*_ka` aliases).
const SCHEDULE_SUFFIXES: [(&str, SigmaSchedule); 8] = [
    (" karras", SigmaSchedule::Karras),
    ("_karras", SigmaSchedule::Karras),
    ("_ka", SigmaSchedule::Karras),
    (" exponential", SigmaSchedule::Exponential),
    ("_exponential", SigmaSchedule::Exponential),
    (" sgm uniform", SigmaSchedule::SgmUniform),
    (" sgm_uniform", SigmaSchedule::SgmUniform),
    ("_sgm_uniform", SigmaSchedule::SgmUniform),
];

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

    /// Parses a sampler name; a trailing "Karras", "Exponential" or "SGM Uniform" selects that
    /// schedule.
    pub fn parse(name: &str) -> Result<Self, SchedulerError> {
        let norm = normalize(name);
        let (base, schedule) = SCHEDULE_SUFFIXES
            .iter()
            .find_map(|(suffix, schedule)| norm.strip_suffix(suffix).map(|b| (b, *schedule)))
            .unwrap_or((norm.as_str(), SigmaSchedule::Default));
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
            "heun" | "k_heun" => (SamplerKind::Heun, None),
            "dpm2" | "k_dpm_2" => (SamplerKind::Dpm2, None),
            "unipc" | "uni_pc" | "uni-pc" => (SamplerKind::UniPc, None),
            "dpm++ sde" | "dpm++_sde" | "dpmpp_sde" | "k_dpmpp_sde" => {
                (SamplerKind::DpmPpSde, None)
            }
            _ => {
                return Err(SchedulerError::UnknownSampler {
                    given: name.to_string(),
                    valid: VALID_SAMPLERS.to_string(),
                })
            }
        };
        let mut spec = SamplerSpec::new(kind);
        spec.timestep_spacing = spacing;
        spec.with_schedule(schedule)
    }

    /// Applies a schedule type, refusing one the sampler's diffusers class lacks.
    pub fn with_schedule(mut self, schedule: SigmaSchedule) -> Result<Self, SchedulerError> {
        if !self.kind.supports(schedule) {
            return Err(SchedulerError::ScheduleNotSupported {
                sampler: self.kind.name(),
                schedule: schedule.label(),
                class: self.kind.diffusers_class(),
            });
        }
        self.schedule = schedule;
        Ok(self)
    }
}

const VALID_SAMPLERS: &str = "Euler, Euler a, Heun, DPM2, DDIM, DDPM, DPM++ 2M, DPM++ 2M SDE, \
DPM++ SDE, UniPC, LCM (A1111 names, optionally followed by ' Karras', ' Exponential' or ' SGM Uniform'), \
euler, euler_a, heun, dpm2, ddim, ddim_trailing, ddpm, dpm++2m, dpm++2m_sde, lcm \
(stable-diffusion.cpp names), k_euler, k_euler_a, k_heun, k_dpm_2, k_dpmpp_2m, k_dpmpp_2m_ka, \
k_dpmpp_2m_sde, k_dpmpp_sde";

/// Parses an A1111 "Schedule type" or an sd.cpp `--schedule` value.
pub fn parse_schedule(name: &str) -> Result<SigmaSchedule, SchedulerError> {
    match normalize(name).as_str() {
        "" | "automatic" | "auto" | "default" | "discrete" | "normal" => Ok(SigmaSchedule::Default),
        "karras" => Ok(SigmaSchedule::Karras),
        "exponential" => Ok(SigmaSchedule::Exponential),
        "sgm_uniform" | "sgm uniform" | "sgmuniform" => Ok(SigmaSchedule::SgmUniform),
        _ => Err(SchedulerError::UnknownSchedule {
            given: name.to_string(),
            valid: "Automatic (also default, discrete, normal), Karras, Exponential, \
                    SGM Uniform (also sgm_uniform)"
                .into(),
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
