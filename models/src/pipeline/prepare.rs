//! From a model, load options and a run's parameters to the loaded model under an optional
//! device-memory budget: plan the run (`plan.rs`), fit the budget (`budget.rs`: the UNet's weights
//! streamed and the VAE tiled as the fit chooses), set the budget on the device, load. `kiln
//! generate`, `kiln bench sd` and `kiln serve` all go this way.
//!
//! ```text
//! let prepared = prepare(path, &device, LoadOptions::default(), &params, Some(budget), true)?;
//! if let Some(line) = prepared.describe() { eprintln!("{line}"); }
//! let model = prepared.load(path, &device)?;
//! prepared.apply(&mut params);
//! let images = generate(&model, &params, &mut |_| {})?;
//! ```

use std::path::Path;

use kiln_runtime::memory::format_bytes;
use kiln_runtime::Device;

use super::budget::{fit_budget_from, BudgetFit};
use super::error::{PipelineError, Result};
use super::load::{LoadOptions, StableDiffusion};
use super::params::GenerationParams;
use super::plan::{MemoryPlan, Planner, Residency};
use crate::vae::VaeTiling;

/// How to load a model and run under a budget: `prepare`'s answer.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The options to load with: the caller's, with `stream_unet` as the budget needs.
    pub options: LoadOptions,
    /// The device-memory budget in bytes (`--max-vram`), if any.
    pub budget: Option<u64>,
    /// How the run meets the budget (`None` without one).
    pub fit: Option<BudgetFit>,
}

impl Prepared {
    /// No budget: load as `options`, run as the parameters say.
    pub fn unbudgeted(options: LoadOptions) -> Prepared {
        Prepared {
            options,
            budget: None,
            fit: None,
        }
    }

    /// The VAE tiling to run `params` with: the one the fit chose, else the parameters' own.
    pub fn vae_tiling(&self, params: &GenerationParams) -> Option<VaeTiling> {
        self.fit
            .as_ref()
            .map_or(params.vae_tiling, |f| f.vae_tiling)
    }

    /// Sets `params.vae_tiling` to the tiling chosen for the budget (unchanged without one).
    pub fn apply(&self, params: &mut GenerationParams) {
        params.vae_tiling = self.vae_tiling(params);
    }

    /// Whether the UNet's weights stream from host memory.
    pub fn streams_unet(&self) -> bool {
        self.options.stream_unet
    }

    /// One line for the user saying what the run does to stay under the budget, e.g.
    /// `--max-vram 800.00 MiB: UNet weights streamed from host memory; planned peak 612.40 MiB`.
    pub fn describe(&self) -> Option<String> {
        let (budget, fit) = (self.budget?, self.fit.as_ref()?);
        Some(format!(
            "--max-vram {}: {}",
            format_bytes(budget),
            fit.describe()
        ))
    }

    /// Sets the budget on `device` (clears it without one): freed buffers are given back when over
    /// it, and an allocation past it fails naming the tensor.
    pub fn set_device_budget(&self, device: &Device) {
        device.set_memory_budget(self.budget);
    }

    /// Sets the device budget, then loads the model at `path` as `self.options` say.
    pub fn load(&self, path: &Path, device: &Device) -> Result<StableDiffusion> {
        self.set_device_budget(device);
        StableDiffusion::load_with(path, device, &self.options)
    }
}

/// Chooses how to load the model at `path` and run `params` on `device` under `budget` bytes:
/// every weight resident if that fits, else the VAE in smaller tiles (only when `may_tile`: the
/// user set no tiling of their own), else the UNet's weights streamed from host memory. Fails
/// with [`PipelineError::OverBudget`], naming the smallest budget that works, when nothing fits.
/// Without a budget nothing is planned. `device` is not touched: the plans run on the CPU
/// backend, outside any budget set on it (clear it first where the device is the CPU backend).
pub fn prepare(
    path: &Path,
    device: &Device,
    options: LoadOptions,
    params: &GenerationParams,
    budget: Option<u64>,
    may_tile: bool,
) -> Result<Prepared> {
    prepare_with(path, device, options, budget, may_tile, |_| {
        Ok::<_, PipelineError>(params.clone())
    })
}

/// `prepare` for parameters that depend on the model (the default image size, the size multiple):
/// `params` gets the plan's zero-weight model, which has the real one's configs. It is called
/// only with a budget.
pub fn prepare_with<E: From<PipelineError>>(
    path: &Path,
    device: &Device,
    options: LoadOptions,
    budget: Option<u64>,
    may_tile: bool,
    params: impl FnOnce(&StableDiffusion) -> std::result::Result<GenerationParams, E>,
) -> std::result::Result<Prepared, E> {
    let Some(budget) = budget else {
        return Ok(Prepared::unbudgeted(options));
    };
    let planner = Planner::new(path, device, &options)?;
    let params = params(planner.model())?;
    let first = planner.plan(&params)?;
    let fit = fit_budget_from(first, path, device, &options, &params, budget, may_tile)?;
    let options = LoadOptions {
        stream_unet: fit.residency == Residency::StreamedUnet,
        ..options
    };
    Ok(Prepared {
        options,
        budget: Some(budget),
        fit: Some(fit),
    })
}

/// The memory plan (`--plan`) of the run `params` makes of the plan's zero-weight model, loaded
/// as `options`.
pub fn plan_with<E: From<PipelineError>>(
    path: &Path,
    device: &Device,
    options: &LoadOptions,
    params: impl FnOnce(&StableDiffusion) -> std::result::Result<GenerationParams, E>,
) -> std::result::Result<MemoryPlan, E> {
    let planner = Planner::new(path, device, options)?;
    let params = params(planner.model())?;
    Ok(planner.plan(&params)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::plan::{ComponentWeights, PhaseNeed};
    use kiln_runtime::trace::Accounting;

    fn fitted(residency: Residency, tiling: Option<VaeTiling>) -> Prepared {
        let plan = MemoryPlan {
            device: "cpu".into(),
            accounting: Accounting::Exact,
            weights: vec![ComponentWeights {
                name: "unet".into(),
                bytes: 1000,
                streamed_resident: 100,
                largest_block: 300,
                on_cpu: false,
            }],
            phases: vec![PhaseNeed {
                name: "unet step".into(),
                activations: 24,
                reserved: 24,
            }],
        };
        Prepared {
            options: LoadOptions {
                stream_unet: residency == Residency::StreamedUnet,
                ..LoadOptions::default()
            },
            budget: Some(2048),
            fit: Some(BudgetFit {
                residency,
                vae_tiling: tiling,
                plan,
            }),
        }
    }

    #[test]
    fn the_fit_sets_the_tiling_and_the_line() {
        let mut params = GenerationParams::new("x");
        let own = VaeTiling::new(32, 8).unwrap();
        params.vae_tiling = Some(own);
        // No budget: the parameters' own tiling, no line.
        let plain = Prepared::unbudgeted(LoadOptions::default());
        assert_eq!(plain.vae_tiling(&params), Some(own));
        assert_eq!(plain.describe(), None);
        assert!(!plain.streams_unet());

        let small = VaeTiling::new(16, 4).unwrap();
        let streamed = fitted(Residency::StreamedUnet, Some(small));
        streamed.apply(&mut params);
        assert_eq!(params.vae_tiling, Some(small));
        assert!(streamed.streams_unet());
        assert_eq!(
            streamed.describe().unwrap(),
            "--max-vram 2.00 KiB: UNet weights streamed from host memory, VAE in tiles of 16 \
             latent pixels (overlap 4); planned peak 424 B"
        );
        let resident = fitted(Residency::Resident, None);
        resident.apply(&mut params);
        assert_eq!(params.vae_tiling, None);
        assert_eq!(
            resident.describe().unwrap(),
            "--max-vram 2.00 KiB: every weight resident; planned peak 1.00 KiB"
        );
        assert_ne!(resident.options, streamed.options);
    }
}
