//! What Heun, DPM2 and DPM++ SDE (diffusers' `HeunDiscreteScheduler`, `KDPM2DiscreteScheduler`,
//! `DPMSolverSDEScheduler`) share: two
//! model evaluations per step except the last, which diffusers lays out as a schedule of 2N-1
//! timesteps (`scheduler.order` = 2), each step's sigmas repeated; and the stage state kept
//! between the two evaluations.

use super::config::{PredictionType, SchedulerConfig};
use super::defaults::ClassDefaults;
use super::error::SchedulerError;
use super::karras::Respacing;
use super::names::SamplerKind;
use super::sigma_grid::SigmaGrid;

/// The N steps' timesteps and N+1 sigmas (the last 0) before diffusers interleaves them.
pub(crate) struct StepGrid {
    /// float32 timesteps, widened (f64 where diffusers keeps Karras/exponential ones in f64).
    pub timesteps: Vec<f64>,
    pub sigmas: Vec<f32>,
    /// The step sigmas in float64, before the float32 cast (no final 0).
    pub sigmas64: Vec<f64>,
    pub init_noise_sigma: f32,
    pub prediction: PredictionType,
    pub respacing: Option<Respacing>,
    /// log of the float32 train sigma table.
    pub log_sigmas: Vec<f32>,
}

impl StepGrid {
    pub fn new(
        cfg: &SchedulerConfig,
        d: &ClassDefaults,
        steps: usize,
    ) -> Result<StepGrid, SchedulerError> {
        d.reject_enabled("use_beta_sigmas", cfg.use_beta_sigmas)?;
        // These classes have no zero-SNR option; diffusers ignores the field, and so do we.
        let mut cfg = cfg.clone();
        cfg.rescale_betas_zero_snr = None;
        let mut grid = SigmaGrid::new(&cfg, d, steps)?;
        let respacing = Respacing::from_config(&cfg)?;
        if let Some(r) = respacing {
            // Neither class reads sigma_min / sigma_max from its config.
            grid.respace(r, None, None, steps)?;
        }
        let (sigmas, init_noise_sigma) = SigmaGrid::finish(&grid.sigmas, 0.0, grid.spacing);
        Ok(StepGrid {
            log_sigmas: grid.table.sigmas.iter().map(|s| s.ln()).collect(),
            timesteps: grid.timesteps,
            sigmas64: grid.sigmas,
            sigmas,
            init_noise_sigma,
            prediction: cfg.prediction_type.unwrap_or(PredictionType::Epsilon),
            respacing,
        })
    }
}

/// `[a0, b1, a1, b2, a2, ...]`-style layouts: the first of `first`, then for each later index
/// `k` the pair (`second[k]`, `first[k]`), over `first.len()` entries; `second` is indexed alike.
pub(crate) fn interleave<T: Copy>(first: &[T], second: &[T]) -> Vec<T> {
    let mut out = Vec::with_capacity(2 * first.len());
    out.extend(first.first());
    for k in 1..first.len() {
        out.push(second[k]);
        out.push(first[k]);
    }
    out
}

/// The first stage's sample and slope, kept for the second.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stage {
    pending: Option<(Vec<f32>, Vec<f32>)>,
    next_step: Option<usize>,
}

impl Stage {
    /// Checks that `step` follows the previous call and says whether it is a first stage (even
    /// index: every step starts at an even index, img2img included).
    pub fn begin(&self, kind: SamplerKind, step: usize) -> Result<bool, SchedulerError> {
        let first = step.is_multiple_of(2);
        let in_order = match self.next_step {
            Some(expected) => expected == step,
            None => first,
        };
        if !in_order {
            return Err(SchedulerError::StepOrder {
                sampler: kind.name(),
                expected: self.next_step.unwrap_or(step & !1),
                got: step,
            });
        }
        Ok(first)
    }

    /// Records the first stage's sample and derivative.
    pub fn keep(&mut self, step: usize, sample: &[f32], derivative: Vec<f32>) {
        self.pending = Some((sample.to_vec(), derivative));
        self.next_step = Some(step + 1);
    }

    /// Takes the first stage's sample and derivative for the second stage.
    pub fn take(&mut self, step: usize) -> (Vec<f32>, Vec<f32>) {
        self.next_step = Some(step + 1);
        self.pending.take().unwrap_or_default()
    }
}
