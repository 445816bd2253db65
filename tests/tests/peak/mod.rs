//! What the plan-against-measurement tests share: their fixtures' small case, a run's measured
//! peak on a device, and the bound the plan must meet.

use std::path::{Path, PathBuf};

use kiln_models::pipeline::GenerationParams;
use kiln_models::rng::RngKind;
use kiln_models::schedulers::SamplerSpec;
use kiln_runtime::Device;

/// memory_budget.rs's bound: the resident plan matched to the byte when written.
pub const MARGIN: f64 = 0.02;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The 32x32 Euler case of the ControlNet and refiner fixtures' goldens (their prompt, negative
/// prompt, seed 42, torch CPU noise) with `steps` at `cfg`.
pub fn small_case(steps: usize, cfg: f32) -> GenerationParams {
    let mut p = GenerationParams::new("a red circle on a blue background");
    p.negative_prompt = "blurry, dark".into();
    (p.steps, p.cfg_scale, p.width, p.height, p.seed) = (steps, cfg, 32, 32, 42);
    p.sampler = SamplerSpec::parse("Euler").unwrap();
    p.rng = RngKind::TorchCpu;
    p
}

/// Runs `run` on `device` from a clean slate (a GPU's cached buffers given back, peaks reset): its
/// result and the peaks (live, reserved) over the run less what was live before.
pub fn measured<T>(device: &Device, run: impl FnOnce() -> T) -> (T, u64, u64) {
    if let Device::Gpu(ctx) = device {
        ctx.trim_pool();
    }
    device.reset_peak_memory();
    let before = device.memory_stats().live;
    let out = run();
    let stats = device.memory_stats();
    (out, stats.peak_live - before, stats.peak_reserved - before)
}

/// Fails unless `planned` is within [`MARGIN`] of `measured`.
pub fn within(planned: u64, measured: u64, what: &str) {
    let diff = (planned as f64 - measured as f64).abs();
    assert!(
        diff <= MARGIN * measured as f64,
        "{what}: planned {planned}, measured {measured}"
    );
}
