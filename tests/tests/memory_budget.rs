//! `--plan` and `--max-vram` through the library: the plan against the measured peak of a real run
//! (CPU backend and the GPU under test), a budget below the weight size met by streaming the UNet,
//! a budget with no streaming needed giving the unbudgeted image, and an impossible budget refused
//! with the minimum.
//!
//! The CPU backend's counter and budget are process-wide, so the tests of this file (its own test
//! binary) take turns.

use std::path::{Path, PathBuf};

use kiln_kernels::testing::gpu;
use kiln_models::pipeline::{
    fit_budget, generate, plan, GenerationParams, LoadOptions, MemoryPlan, Offload, Residency,
    StableDiffusion,
};
use kiln_nn::weights::WeightType;
use kiln_runtime::memory::MemoryStats;
use kiln_runtime::Device;
use kiln_tests::memory::{fresh, take_turn, within};
use kiln_tests::params::red_circle;
use kiln_tests::root;

fn bundled() -> PathBuf {
    root().join("models/bundled")
}

fn tiny() -> PathBuf {
    root().join("tests/fixtures/tiny-sd1")
}

fn params(size: usize) -> GenerationParams {
    let mut p = red_circle(size, 2, 7);
    p.negative_prompt = "green".into();
    p
}

/// Loads as `options` and generates, returning the pixels and the peak over load and run (less
/// what was live before).
fn run(
    model: &Path,
    device: &Device,
    options: &LoadOptions,
    p: &GenerationParams,
) -> (Vec<f32>, MemoryStats, u64) {
    fresh(device);
    let before = device.memory_stats().live;
    let sd = StableDiffusion::load_with(model, device, options).unwrap();
    assert_eq!(sd.unet.is_streamed(), options.stream_unet);
    let images = generate(&sd, p, &mut |_| {}).unwrap();
    let stats = device.memory_stats();
    (images[0].pixels.clone(), stats, before)
}

fn check_plan(model: &Path, device: &Device, weight_type: WeightType, size: usize) -> MemoryPlan {
    check_plan_with(model, device, &LoadOptions::weight_type(weight_type), size)
}

fn check_plan_with(
    model: &Path,
    device: &Device,
    options: &LoadOptions,
    size: usize,
) -> MemoryPlan {
    let p = params(size);
    let planned = plan(model, device, options, &p).unwrap();
    let (_, stats, before) = run(model, device, options, &p);
    let what = format!(
        "{} {:?} {:?} on {}",
        model.display(),
        options.quantization,
        options.offload,
        device.name()
    );
    within(planned.peak(), stats.peak_live - before, &what);
    if !device.is_cpu() {
        within(planned.peak_reserved(), stats.peak_reserved - before, &what);
    }
    planned
}

#[test]
fn plan_matches_the_measured_peak() {
    let _turn = take_turn();
    for device in std::iter::once(Device::Cpu).chain(gpu()) {
        let p = check_plan(&tiny(), &device, WeightType::F32, 32);
        assert!(p.phases.iter().any(|ph| ph.name == "vae decode"), "{p:?}");
        check_plan(&bundled(), &device, WeightType::F32, 64);
        check_plan(&bundled(), &device, "q4_0".parse().unwrap(), 64);
    }
    if let Some(device) = gpu() {
        check_plan(&bundled(), &device, WeightType::F16, 64);
    }
}

/// On a GPU, offloaded parts and the host-held token embedding leave the plan's device figure, as
/// they leave the measured one.
#[test]
fn plan_of_an_offloaded_run_matches_the_measured_peak() {
    let _turn = take_turn();
    let Some(device) = gpu() else { return };
    let resident = check_plan(&bundled(), &device, WeightType::F32, 64);
    for offload in [
        Offload {
            text_encoder_on_cpu: true,
            vae_on_cpu: false,
        },
        Offload {
            text_encoder_on_cpu: true,
            vae_on_cpu: true,
        },
    ] {
        let options = LoadOptions {
            offload,
            ..LoadOptions::default()
        };
        let planned = check_plan_with(&bundled(), &device, &options, 64);
        let on_cpu: Vec<_> = planned.weights.iter().filter(|w| w.on_cpu).collect();
        assert_eq!(
            on_cpu.len(),
            1 + usize::from(offload.vae_on_cpu),
            "{}",
            planned.report()
        );
        assert!(on_cpu.iter().all(|w| w.bytes == 0));
        assert!(planned.weights_total() < resident.weights_total());
    }
}

#[test]
fn a_budget_below_the_weight_size_is_met_by_streaming_the_unet() {
    let _turn = take_turn();
    for device in std::iter::once(Device::Cpu).chain(gpu()) {
        let options = LoadOptions::default();
        let p = params(64);
        let planned = plan(&bundled(), &device, &options, &p).unwrap();
        // Halfway between what streaming needs and the weights alone.
        let budget = (planned.streamed_peak() + planned.weights_total()) / 2;
        assert!(budget < planned.weights_total(), "{}", planned.report());
        assert_eq!(
            planned.residency_for(budget).unwrap(),
            Residency::StreamedUnet
        );
        let (reference, _, _) = run(&bundled(), &device, &options, &p);

        device.set_memory_budget(Some(budget));
        let streamed = LoadOptions {
            stream_unet: true,
            ..options.clone()
        };
        let (pixels, stats, _) = run(&bundled(), &device, &streamed, &p);
        device.set_memory_budget(None);
        assert!(
            stats.peak_reserved <= budget && stats.peak_live <= planned.streamed_peak(),
            "{} peak {stats:?}, budget {budget}, planned {}",
            device.name(),
            planned.streamed_peak()
        );
        // Streaming moves weights, not arithmetic: the same image.
        assert_eq!(pixels, reference, "{}", device.name());
    }
}

#[test]
fn a_budget_that_needs_no_streaming_gives_the_same_image() {
    let _turn = take_turn();
    for device in std::iter::once(Device::Cpu).chain(gpu()) {
        let options = LoadOptions::default();
        let p = params(32);
        let planned = plan(&tiny(), &device, &options, &p).unwrap();
        assert_eq!(
            planned.residency_for(planned.peak()).unwrap(),
            Residency::Resident
        );
        let (reference, _, _) = run(&tiny(), &device, &options, &p);
        device.set_memory_budget(Some(planned.peak()));
        let (pixels, stats, _) = run(&tiny(), &device, &options, &p);
        device.set_memory_budget(None);
        assert!(stats.peak_reserved <= planned.peak(), "{stats:?}");
        assert_eq!(pixels, reference, "{}", device.name());
    }
}

#[test]
fn an_impossible_budget_is_refused_with_the_minimum() {
    let _turn = take_turn();
    let planned = plan(
        &bundled(),
        &Device::Cpu,
        &LoadOptions::default(),
        &params(64),
    )
    .unwrap();
    let err = planned
        .residency_for(planned.streamed_peak() - 1)
        .unwrap_err()
        .to_string();
    let minimum = kiln_runtime::memory::format_bytes(planned.streamed_peak());
    assert!(err.contains(&format!("at least {minimum}")), "{err}");

    // Below the plan at run time, the budget is enforced: a clear error naming the tensor.
    Device::Cpu.set_memory_budget(Some(1 << 20));
    let loaded = StableDiffusion::load_with(&bundled(), &Device::Cpu, &LoadOptions::default());
    Device::Cpu.set_memory_budget(None);
    let err = loaded
        .err()
        .expect("1 MiB cannot hold the weights")
        .to_string();
    assert!(err.contains("over the memory budget of 1.00 MiB"), "{err}");
}

/// A budget the whole VAE decode exceeds but tiles meet is met by tiling, with every weight
/// resident (tiling comes before streaming), and the run stays under it. The bundled model at
/// 256x256 without guidance: 32x32 latents, so the 16-latent tiles split and the decode sets the
/// peak.
#[test]
fn a_budget_the_vae_exceeds_is_met_by_tiling_it() {
    let _turn = take_turn();
    for device in std::iter::once(Device::Cpu).chain(gpu()) {
        let options = LoadOptions::default();
        let mut p = params(256);
        p.steps = 1;
        // No guidance: the UNet runs one image, not two, so the decode clearly sets the peak.
        p.cfg_scale = 1.0;
        let whole = plan(&bundled(), &device, &options, &p).unwrap();
        let top = whole.phases.iter().max_by_key(|ph| ph.activations).unwrap();
        assert_eq!(top.name, "vae decode", "{}", whole.report());
        let budget = whole.peak() - 1;
        let fit = fit_budget(&bundled(), &device, &options, &p, budget, true).unwrap();
        assert_eq!(fit.residency, Residency::Resident, "{}", fit.describe());
        let tiling = fit.vae_tiling.expect("a tiling chosen");
        assert_eq!((tiling.tile, tiling.overlap), (16, 4));
        assert!(fit.plan.peak() <= budget);
        // Not allowed to tile (--no-vae-tiling), the same budget takes the costlier measure.
        let untiled = fit_budget(&bundled(), &device, &options, &p, budget, false).unwrap();
        assert_eq!(untiled.residency, Residency::StreamedUnet);
        assert_eq!(untiled.vae_tiling, None);

        p.vae_tiling = fit.vae_tiling;
        device.set_memory_budget(Some(budget));
        let (_, stats, before) = run(&bundled(), &device, &options, &p);
        device.set_memory_budget(None);
        assert!(
            stats.peak_reserved - before <= budget,
            "{} {stats:?} budget {budget}",
            device.name()
        );
    }
}
