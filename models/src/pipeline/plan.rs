//! `kiln generate --plan` and `--max-vram`: the peak device memory a run needs, found by running it.
//!
//! The plan builds the very model the run would (names, shapes, dtype and packing of the real
//! checkpoint, zeros for data: `ZeroSource`) on the CPU backend and runs `generate` once with one
//! step and one batch while recording every tensor the model code allocates and frees
//! (`kiln_runtime::trace`), with phase marks. Steps repeat the same allocations, so one step shows
//! the step's peak. The trace is replayed with the target device's accounting: exact bytes on the
//! CPU backend, the GPU pool's 16-byte rounding, size classes and cache of freed buffers on a GPU.
//! Weights are counted per tensor from the same load (`Weights::tallied`), each its own buffer.
//!
//! What it cannot see: allocations a GPU kernel launcher makes that the CPU path does not (none at
//! the time of writing; the tests compare the plan with llvmpipe's measured peak), and readback
//! staging buffers and the uniform-parameter buffer, which are outside the pool on every run.
//!
//! The VAE decode is one phase whose figure is whatever the decode code allocates: a tiled decode
//! lowers it with no change here.

use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;

use kiln_runtime::memory::format_bytes;
use kiln_runtime::pool::size_class;
use kiln_runtime::trace::{self, Accounting};
use kiln_runtime::Device;

use super::error::{PipelineError, Result};
use super::generate::{generate, steps_both_models};
use super::load::{LoadOptions, Offload, StableDiffusion};
use super::params::GenerationParams;
use crate::tally::ModelTally;
use kiln_nn::weights::Tally;

/// Phase names `generate` marks.
pub const PHASE_TEXT: &str = "text encoding";
pub const PHASE_VAE_ENCODE: &str = "vae encode";
pub const PHASE_UNET: &str = "unet step";
pub const PHASE_REFINER: &str = "refiner step";
pub const PHASE_VAE_DECODE: &str = "vae decode";

/// The most steps tried for a plan's run to step both the main model and its refiner.
const MAX_PLAN_STEPS: usize = 8;

/// UNet weight names under these prefixes belong to a streamed layer (see `block_of`).
const BLOCK_PREFIXES: [&str; 3] = ["down_blocks.", "mid_block.", "up_blocks."];

/// One component's weights on the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentWeights {
    pub name: String,
    pub bytes: u64,
    /// Bytes that stay resident when the blocks stream (the UNet; the whole for the others).
    pub streamed_resident: u64,
    /// The largest streamed block (0 when nothing streams).
    pub largest_block: u64,
    /// Offloaded (`--vae-on-cpu` / `--text-encoder-on-cpu`): on the CPU backend, 0 bytes here.
    pub on_cpu: bool,
}

/// One phase's activations and workspace: every tensor live besides the weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseNeed {
    pub name: String,
    /// Highest bytes held by tensors other than weights.
    pub activations: u64,
    /// Highest bytes reserved besides the weights, freed buffers cached as the pool keeps them
    /// when no budget makes it give them back.
    pub reserved: u64,
}

#[derive(Clone, Debug)]
pub struct MemoryPlan {
    pub device: String,
    pub accounting: Accounting,
    pub weights: Vec<ComponentWeights>,
    pub phases: Vec<PhaseNeed>,
}

/// How a run fits a budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Residency {
    /// Every weight on the device for the whole run.
    Resident,
    /// The UNet's blocks uploaded one at a time from host memory.
    StreamedUnet,
}

impl MemoryPlan {
    pub fn weights_total(&self) -> u64 {
        self.weights.iter().map(|w| w.bytes).sum()
    }

    fn streamed_weights(&self) -> u64 {
        self.weights.iter().map(|w| w.streamed_resident).sum()
    }

    fn largest_block(&self) -> u64 {
        self.weights
            .iter()
            .map(|w| w.largest_block)
            .max()
            .unwrap_or(0)
    }

    /// Peak bytes held by tensors with every weight resident: the smallest budget that runs so.
    pub fn peak(&self) -> u64 {
        self.weights_total() + self.phases.iter().map(|p| p.activations).max().unwrap_or(0)
    }

    /// Peak bytes reserved with no budget (the pool keeps freed buffers for reuse).
    pub fn peak_reserved(&self) -> u64 {
        self.weights_total() + self.phases.iter().map(|p| p.reserved).max().unwrap_or(0)
    }

    fn phase_streamed(&self, phase: &PhaseNeed) -> u64 {
        let block = if phase.name == PHASE_UNET || phase.name == PHASE_REFINER {
            self.largest_block()
        } else {
            0
        };
        self.streamed_weights() + block + phase.activations
    }

    /// Peak bytes held by tensors with the UNet streamed layer by layer: an upper bound, as if the
    /// largest layer (of either UNet, with a refiner) were on the device at the step's activation
    /// peak.
    pub fn streamed_peak(&self) -> u64 {
        let peak = self
            .phases
            .iter()
            .map(|p| self.phase_streamed(p))
            .max()
            .unwrap_or(0);
        peak.max(self.streamed_weights())
    }

    /// The cheapest way to stay under `budget`, or an error giving the smallest budget that works.
    pub fn residency_for(&self, budget: u64) -> Result<Residency> {
        if budget >= self.peak() {
            Ok(Residency::Resident)
        } else if budget >= self.streamed_peak() {
            Ok(Residency::StreamedUnet)
        } else {
            Err(PipelineError::OverBudget {
                minimum: self.streamed_peak(),
                msg: format!(
                    "--max-vram {} is too small for this run on {}: it needs at least {} with the \
                     UNet's weights streamed from host memory ({} with every weight resident)",
                    format_bytes(budget),
                    self.device,
                    format_bytes(self.streamed_peak()),
                    format_bytes(self.peak())
                ),
            })
        }
    }

    /// The plan as `kiln generate --plan` prints it.
    pub fn report(&self) -> String {
        let mut s = String::new();
        let how = match self.accounting {
            Accounting::Exact => "exact tensor bytes",
            Accounting::Pool => "pool size classes",
        };
        let _ = writeln!(s, "memory plan for {} ({how})", self.device);
        let _ = writeln!(s, "weights:");
        // The refiner's rows have longer names than the 14 columns the others need.
        let width = self
            .weights
            .iter()
            .map(|w| w.name.len() + 2)
            .max()
            .unwrap_or(0)
            .max(14);
        for w in &self.weights {
            let _ = write!(s, "  {:<width$}{:>12}", w.name, format_bytes(w.bytes));
            if w.on_cpu {
                let _ = write!(s, "   on the CPU backend (offloaded)");
            }
            if w.largest_block > 0 {
                let _ = write!(
                    s,
                    "   streamed: {} resident + largest layer {}",
                    format_bytes(w.streamed_resident),
                    format_bytes(w.largest_block)
                );
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(
            s,
            "  {:<width$}{:>12}",
            "total",
            format_bytes(self.weights_total())
        );
        let _ = writeln!(
            s,
            "phase          activations  peak (resident)  peak (unet streamed)"
        );
        for p in &self.phases {
            let _ = writeln!(
                s,
                "  {:<14}{:>11}  {:>15}  {:>20}",
                p.name,
                format_bytes(p.activations),
                format_bytes(self.weights_total() + p.activations),
                format_bytes(self.phase_streamed(p))
            );
        }
        let _ = writeln!(
            s,
            "peak device memory: {} resident ({} reserved with no budget), {} with the UNet streamed",
            format_bytes(self.peak()),
            format_bytes(self.peak_reserved()),
            format_bytes(self.streamed_peak())
        );
        s
    }
}

/// Plans a run of `params` with the model at `path` loaded as `options` on `device`, without
/// loading any weight data or touching `device`.
pub fn plan(
    path: &Path,
    device: &Device,
    options: &LoadOptions,
    params: &GenerationParams,
) -> Result<MemoryPlan> {
    Planner::new(path, device, options)?.plan(params)
}

/// The zero-weight model a plan runs, built first so a caller can read sizes off it (the default
/// image size) before choosing the parameters.
pub struct Planner {
    model: StableDiffusion,
    tally: Arc<ModelTally>,
    device: Device,
    offload: Offload,
}

impl Planner {
    pub fn new(path: &Path, device: &Device, options: &LoadOptions) -> Result<Planner> {
        let tally = Arc::new(ModelTally::default());
        let zero = LoadOptions {
            dtype: device.float_dtype(options.dtype),
            stream_unet: false,
            zero_weights: true,
            tally: Some(tally.clone()),
            ..options.clone()
        };
        let model = StableDiffusion::load_with(path, &Device::Cpu, &zero)?;
        Ok(Planner {
            model,
            tally,
            device: device.clone(),
            offload: options.offload,
        })
    }

    /// The model with zeros for weights (same configs, names and shapes as the real one).
    pub fn model(&self) -> &StableDiffusion {
        &self.model
    }

    pub fn plan(self, params: &GenerationParams) -> Result<MemoryPlan> {
        let Planner {
            model,
            tally,
            device,
            offload,
        } = self;
        let mut once = params.clone();
        once.steps = 1;
        once.batch_count = 1;
        once.seed = 0;
        if let Some(init) = &mut once.init {
            // Strength 1 runs the one step img2img would otherwise skip.
            init.strength = 1.0;
        }
        if let Some(refiner) = &mut once.refiner {
            // A step of each model, whatever the real switch: the figures are per step.
            refiner.switch_at = 0.5;
            for steps in 2..=MAX_PLAN_STEPS {
                once.steps = steps;
                if steps_both_models(&model, &once)? {
                    break;
                }
            }
        }
        trace::start();
        let run = generate(&model, &once, &mut |_| {});
        let events = trace::finish();
        drop(model);
        // The zero model's tensors are not the device's: start the CPU peak window afresh.
        kiln_runtime::memory::CPU_TENSOR_BYTES.reset_peak();
        run?;

        let accounting = if device.is_cpu() {
            Accounting::Exact
        } else {
            Accounting::Pool
        };
        // Offloading only moves something off a GPU: on the CPU backend every part is device memory.
        let gpu = !device.is_cpu();
        let text_on_cpu = gpu && offload.text_encoder_on_cpu;
        let vae_on_cpu = gpu && offload.vae_on_cpu;
        let phases = trace::replay(&events, accounting, 0)
            .into_iter()
            .filter(|p| p.name != "setup" || p.peak_live > 0)
            .map(|p| {
                // An offloaded part's activations are the CPU backend's (what crosses over, the
                // context or the latents, is a few hundred KiB and is counted in the next phase).
                let offloaded = (text_on_cpu && p.name == PHASE_TEXT)
                    || (vae_on_cpu && (p.name == PHASE_VAE_DECODE || p.name == PHASE_VAE_ENCODE));
                PhaseNeed {
                    name: p.name,
                    activations: if offloaded { 0 } else { p.peak_live },
                    reserved: if offloaded { 0 } else { p.peak_reserved },
                }
            })
            .collect();
        let parts = Parts {
            accounting,
            host_is_device: !gpu,
            text_on_cpu,
            vae_on_cpu,
        };
        let mut weights = parts.of_model("", &tally);
        // Both models stay loaded through the run: the refiner's weights count beside the base's.
        if let Some(t) = params
            .refiner
            .as_ref()
            .and_then(|r| r.model.planned_weights())
        {
            weights.extend(parts.of_model("refiner ", t));
        }
        // ControlNets opened for the zero-weight model tallied their own weights; they stream
        // block by block with the UNet.
        let nets: Vec<&Tally> = params
            .controls
            .iter()
            .filter_map(|u| u.model.model().planned_weights())
            .collect();
        for (i, net) in nets.iter().enumerate() {
            let name = if nets.len() == 1 {
                "controlnet".to_string()
            } else {
                format!("controlnet {}", i + 1)
            };
            weights.push(component(name, net, accounting, true, !gpu, false));
        }
        Ok(MemoryPlan {
            device: device.name(),
            accounting,
            weights,
            phases,
        })
    }
}

/// How a plan counts a model's components on its target device.
struct Parts {
    accounting: Accounting,
    host_is_device: bool,
    text_on_cpu: bool,
    vae_on_cpu: bool,
}

impl Parts {
    /// A model's rows, named after `prefix`: the UNet (streamed by blocks), each text encoder it
    /// has (SDXL's second lives where the first does; the refiner has the second alone), the VAE.
    fn of_model(&self, prefix: &str, tally: &ModelTally) -> Vec<ComponentWeights> {
        let part = |name: &str, tally: &Tally, streams, on_cpu| {
            let name = format!("{prefix}{name}");
            component(
                name,
                tally,
                self.accounting,
                streams,
                self.host_is_device,
                on_cpu,
            )
        };
        let has = |t: &Tally| !t.entries().is_empty() || !t.host_entries().is_empty();
        let mut rows = vec![part("unet", &tally.unet, true, false)];
        for (name, t) in [
            ("text encoder", &tally.text_encoder),
            ("text encoder 2", &tally.text_encoder_2),
        ] {
            if has(t) {
                rows.push(part(name, t, false, self.text_on_cpu));
            }
        }
        rows.push(part("vae", &tally.vae, false, self.vae_on_cpu));
        rows
    }
}

/// Device bytes of one weight as the device allocates it.
fn device_bytes(bytes: u64, accounting: Accounting) -> u64 {
    match accounting {
        Accounting::Exact => bytes,
        Accounting::Pool => size_class(bytes.max(4).next_multiple_of(16)),
    }
}

/// One component's device bytes. `host_is_device`: the target is the CPU backend, where weights
/// kept in host memory (token embeddings) are device memory too.
fn component(
    name: impl Into<String>,
    tally: &Tally,
    accounting: Accounting,
    streams: bool,
    host_is_device: bool,
    on_cpu: bool,
) -> ComponentWeights {
    let name = name.into();
    if on_cpu {
        return ComponentWeights {
            name,
            bytes: 0,
            streamed_resident: 0,
            largest_block: 0,
            on_cpu,
        };
    }
    let mut entries = tally.entries();
    if host_is_device {
        entries.extend(tally.host_entries());
    }
    let mut bytes = 0;
    let mut resident = 0;
    let mut blocks = std::collections::BTreeMap::<String, u64>::new();
    for (tensor, b) in entries {
        let b = device_bytes(b, accounting);
        bytes += b;
        match block_of(&tensor).filter(|_| streams) {
            Some(block) => *blocks.entry(block).or_default() += b,
            None => resident += b,
        }
    }
    ComponentWeights {
        name,
        bytes,
        streamed_resident: if streams { resident } else { bytes },
        largest_block: blocks.values().copied().max().unwrap_or(0),
        on_cpu,
    }
}

/// The streamed unit (one `Slot`) a UNet weight belongs to: `down_blocks.1.resnets.0` for
/// `down_blocks.1.resnets.0.conv1.weight`, `mid_block.attentions.0` for its tensors.
fn block_of(name: &str) -> Option<String> {
    let prefix = BLOCK_PREFIXES.iter().find(|p| name.starts_with(*p))?;
    // mid_block.<kind>.<j>, or <down|up>_blocks.<i>.<kind>.<j>.
    let parts = if *prefix == "mid_block." { 3 } else { 4 };
    let unit: Vec<&str> = name.split('.').take(parts).collect();
    (unit.len() == parts).then(|| unit.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> MemoryPlan {
        MemoryPlan {
            device: "cpu".into(),
            accounting: Accounting::Exact,
            weights: vec![
                ComponentWeights {
                    name: "unet".into(),
                    bytes: 1000,
                    streamed_resident: 100,
                    largest_block: 300,
                    on_cpu: false,
                },
                ComponentWeights {
                    name: "vae".into(),
                    bytes: 200,
                    streamed_resident: 200,
                    largest_block: 0,
                    on_cpu: false,
                },
            ],
            phases: vec![
                PhaseNeed {
                    name: PHASE_TEXT.into(),
                    activations: 10,
                    reserved: 10,
                },
                PhaseNeed {
                    name: PHASE_UNET.into(),
                    activations: 50,
                    reserved: 60,
                },
                PhaseNeed {
                    name: PHASE_VAE_DECODE.into(),
                    activations: 400,
                    reserved: 420,
                },
            ],
        }
    }

    #[test]
    fn peaks_and_residency_follow_the_phases() {
        let p = plan();
        assert_eq!(p.peak(), 1600);
        assert_eq!(p.peak_reserved(), 1620);
        // unet step: 300 resident + 300 block + 50; vae decode: 300 + 400.
        assert_eq!(p.streamed_peak(), 700);
        assert_eq!(p.residency_for(1600).unwrap(), Residency::Resident);
        assert_eq!(p.residency_for(1599).unwrap(), Residency::StreamedUnet);
        assert_eq!(p.residency_for(700).unwrap(), Residency::StreamedUnet);
        let err = p.residency_for(699).unwrap_err().to_string();
        assert!(
            err.contains("at least 700 B") && err.contains("1.56 KiB"),
            "{err}"
        );
        assert!(p.report().contains("vae decode"));
    }

    #[test]
    fn block_names() {
        assert_eq!(
            block_of("down_blocks.1.resnets.0.conv1.weight").as_deref(),
            Some("down_blocks.1.resnets.0")
        );
        assert_eq!(
            block_of("mid_block.attentions.0.proj_in.weight").as_deref(),
            Some("mid_block.attentions.0")
        );
        assert_eq!(
            block_of("up_blocks.2.upsamplers.0.conv.bias").as_deref(),
            Some("up_blocks.2.upsamplers.0")
        );
        assert_eq!(block_of("conv_in.weight"), None);
        assert_eq!(block_of("mid_block.weird"), None);
    }
}
