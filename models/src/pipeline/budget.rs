//! `--max-vram`: choosing how a run fits a device-memory budget, from plans (`plan.rs`), in the
//! order the cheaper measures come first: every weight resident with the VAE whole; resident with
//! the VAE tiled (smaller tiles in turn), which costs a little decode time; then the UNet's blocks
//! streamed from host memory, which costs an upload per block per step, with the least VAE memory
//! found. If nothing fits, the error names the smallest budget that would.

use std::path::Path;

use kiln_runtime::memory::format_bytes;
use kiln_runtime::Device;

use super::error::{PipelineError, Result};
use super::load::LoadOptions;
use super::params::GenerationParams;
use super::plan::{plan, MemoryPlan, Residency, PHASE_VAE_DECODE, PHASE_VAE_ENCODE};
use crate::vae::VaeTiling;

/// Latent tile sizes tried in turn when the VAE is what exceeds the budget (overlap a quarter).
const TILES: [usize; 2] = [32, 16];

/// How a run will meet its budget, and the plan that shows it.
#[derive(Clone, Debug)]
pub struct BudgetFit {
    pub residency: Residency,
    /// The VAE tiling to run with (the caller's, or one chosen here).
    pub vae_tiling: Option<VaeTiling>,
    pub plan: MemoryPlan,
}

impl BudgetFit {
    /// One line for the user: what the run will do to stay under the budget.
    pub fn describe(&self) -> String {
        let weights = match self.residency {
            Residency::Resident => "every weight resident",
            Residency::StreamedUnet => "UNet weights streamed from host memory",
        };
        match self.vae_tiling {
            Some(t) => format!(
                "{weights}, VAE in tiles of {} latent pixels (overlap {}); planned peak {}",
                t.tile,
                t.overlap,
                format_bytes(self.planned_peak())
            ),
            None => format!(
                "{weights}; planned peak {}",
                format_bytes(self.planned_peak())
            ),
        }
    }

    pub fn planned_peak(&self) -> u64 {
        match self.residency {
            Residency::Resident => self.plan.peak(),
            Residency::StreamedUnet => self.plan.streamed_peak(),
        }
    }
}

/// Finds the cheapest way for `params` to run under `budget` bytes. `may_tile`: the caller lets
/// this choose a VAE tiling smaller than `params`' own (the user set no tiling flag).
pub fn fit_budget(
    path: &Path,
    device: &Device,
    options: &LoadOptions,
    params: &GenerationParams,
    budget: u64,
    may_tile: bool,
) -> Result<BudgetFit> {
    let first = plan(path, device, options, params)?;
    fit_budget_from(first, path, device, options, params, budget, may_tile)
}

/// `fit_budget` starting from `first`, the plan of `params` as given (a caller that already made
/// it for `--plan` or for the image size saves building the zero-weight model again).
pub fn fit_budget_from(
    first: MemoryPlan,
    path: &Path,
    device: &Device,
    options: &LoadOptions,
    params: &GenerationParams,
    budget: u64,
    may_tile: bool,
) -> Result<BudgetFit> {
    let mut params = params.clone();
    let mut tried = vec![(params.vae_tiling, first)];
    let (lh, lw) = (params.height / 8, params.width / 8);
    let current = params.vae_tiling.map_or(usize::MAX, |t| t.tile);
    let mut tiles = TILES
        .iter()
        .filter_map(|&t| VaeTiling::new(t, t / 4).ok())
        .filter(|t| may_tile && t.tile < current && t.splits(lh, lw));
    loop {
        let (tiling, last) = tried.last().expect("one plan at least");
        if budget >= last.peak() {
            return Ok(BudgetFit {
                residency: Residency::Resident,
                vae_tiling: *tiling,
                plan: last.clone(),
            });
        }
        if !vae_sets_the_peak(last) {
            break;
        }
        let Some(next) = tiles.next() else { break };
        params.vae_tiling = Some(next);
        tried.push((params.vae_tiling, plan(path, device, options, &params)?));
    }
    // Streaming, with the least VAE memory found (the last plan tried).
    let (tiling, least) = tried.last().expect("one plan at least");
    if budget >= least.streamed_peak() {
        return Ok(BudgetFit {
            residency: Residency::StreamedUnet,
            vae_tiling: *tiling,
            plan: least.clone(),
        });
    }
    let need = tried
        .iter()
        .map(|(_, p)| p.streamed_peak())
        .min()
        .unwrap_or(0);
    let resident = tried.iter().map(|(_, p)| p.peak()).min().unwrap_or(0);
    Err(PipelineError::OverBudget {
        minimum: need,
        msg: format!(
            "--max-vram {} is too small for this run on {}: it needs at least {} with the UNet's \
             weights streamed from host memory{} ({} with every weight resident)",
            format_bytes(budget),
            least.device,
            format_bytes(need),
            if may_tile && tried.len() > 1 {
                " and the VAE tiled"
            } else {
                ""
            },
            format_bytes(resident)
        ),
    })
}

/// Whether a VAE phase has the most activations (so tiling it lowers the peak).
fn vae_sets_the_peak(plan: &MemoryPlan) -> bool {
    let top = plan.phases.iter().max_by_key(|p| p.activations);
    top.is_some_and(|p| p.name == PHASE_VAE_DECODE || p.name == PHASE_VAE_ENCODE)
}
