//! The SDXL refiner under `--plan` / `--max-vram` (tiny-sdxl with tests/fixtures/tiny-sdxl-refiner,
//! the "two_stage_euler" case of its refiner_cases.json):
//!
//! - The plan of a run with a refiner lists the refiner's weights (UNet, its bigG text encoder,
//!   its VAE, which decodes) beside the base's, and its peak matches the measured peak of the real
//!   run (within memory_budget.rs's 2 %, `memory::MARGIN`), on the CPU backend and the GPU under test: both models
//!   are resident through the run, as `--max-vram` needs.
//! - A budget below the resident peak but at the streamed one streams both UNets, stays under
//!   the budget, and gives the resident image exactly.
//!
//! The CPU backend's counter and budget are process-wide: the tests of this file take turns.

use std::path::PathBuf;
use std::sync::Arc;

use kiln_kernels::testing::gpu;
use kiln_models::pipeline::{
    generate, open_refiner, plan_with, prepare_with, GenerationParams, LoadOptions, MemoryPlan,
    PipelineError, Refiner, Residency, StableDiffusion,
};
use kiln_runtime::Device;
use kiln_tests::fixtures;
use kiln_tests::memory::{measured, take_turn, within};
use kiln_tests::params::small_case;

fn base() -> PathBuf {
    fixtures().join("tiny-sdxl")
}

/// The "two_stage_euler" case of tests/fixtures/tiny-sdxl-refiner/refiner_cases.json without
/// its refiner.
fn base_params() -> GenerationParams {
    small_case(10, 5.0)
}

/// The case's parameters with its refiner opened for `model` (zeros for a plan's model), loaded
/// on `device` as `options` say otherwise.
fn params_for(
    model: &StableDiffusion,
    device: &Device,
    options: &LoadOptions,
) -> Result<GenerationParams, PipelineError> {
    let mut p = base_params();
    let refiner = open_refiner(
        &fixtures().join("tiny-sdxl-refiner"),
        model,
        device,
        options,
    )?;
    p.refiner = Some(Refiner {
        model: Arc::new(refiner),
        switch_at: 0.8,
    });
    Ok(p)
}

/// Loads the base and its refiner as `options` say and generates: the image, and the peaks
/// (live, reserved) over load and run less what was live before.
fn run(device: &Device, options: &LoadOptions) -> (Vec<f32>, u64, u64) {
    measured(device, || {
        let model = StableDiffusion::load_with(&base(), device, options).unwrap();
        let params = params_for(&model, device, options).unwrap();
        let refiner = &params.refiner.as_ref().unwrap().model;
        assert_eq!(refiner.unet.is_streamed(), options.stream_unet);
        assert!(refiner.planned_weights().is_none(), "a real refiner");
        generate(&model, &params, &mut |_| {})
            .unwrap()
            .remove(0)
            .pixels
    })
}

/// The plan of the case with its refiner, loaded as `options` say, on `device`.
fn planned(device: &Device, options: &LoadOptions) -> MemoryPlan {
    plan_with(&base(), device, options, |m| params_for(m, device, options)).unwrap()
}

#[test]
fn plan_with_a_refiner_matches_the_measured_peak() {
    let _turn = take_turn();
    for device in std::iter::once(Device::Cpu).chain(gpu()) {
        let options = LoadOptions::default();
        let planned = planned(&device, &options);
        let without = plan_with(&base(), &device, &options, |_| {
            Ok::<_, PipelineError>(base_params())
        })
        .unwrap();
        let report = planned.report();
        let row = |name: &str| {
            planned
                .weights
                .iter()
                .find(|w| w.name == name)
                .unwrap_or_else(|| panic!("no {name} row in\n{report}"))
                .clone()
        };
        let unet = row("refiner unet");
        assert!(unet.bytes > 0 && unet.largest_block > 0, "{unet:?}");
        let refiner: u64 = ["refiner unet", "refiner text encoder 2", "refiner vae"]
            .iter()
            .map(|n| row(n).bytes)
            .sum();
        // The refiner conditions on bigG alone: no first text encoder.
        assert!(
            !planned
                .weights
                .iter()
                .any(|w| w.name == "refiner text encoder"),
            "{report}"
        );
        assert_eq!(
            planned.weights_total(),
            without.weights_total() + refiner,
            "{report}"
        );
        assert!(
            planned.phases.iter().any(|p| p.name == "refiner step"),
            "{report}"
        );
        let what = format!("f32 on {}", device.name());
        let (_, live, reserved) = run(&device, &options);
        eprintln!(
            "{what}: planned peak {} (reserved {}), measured {live} ({reserved})",
            planned.peak(),
            planned.peak_reserved()
        );
        within(planned.peak(), live, &what);
        if !device.is_cpu() {
            within(planned.peak_reserved(), reserved, &what);
        }
    }
}

#[test]
fn a_budget_below_the_resident_peak_streams_both_unets() {
    let _turn = take_turn();
    for device in std::iter::once(Device::Cpu).chain(gpu()) {
        let options = LoadOptions::default();
        let planned = planned(&device, &options);
        let budget = planned.streamed_peak();
        assert!(budget < planned.peak(), "{}", planned.report());
        let prepared = prepare_with(
            &base(),
            &device,
            options.clone(),
            Some(budget),
            false,
            |m| params_for(m, &device, &options),
        )
        .unwrap();
        let fit = prepared.fit.as_ref().unwrap();
        assert_eq!(fit.residency, Residency::StreamedUnet, "{}", fit.describe());
        let (reference, _, _) = run(&device, &options);
        prepared.set_device_budget(&device);
        // `run` checks that the refiner's UNet streams as the base's does.
        let (pixels, live, reserved) = run(&device, &prepared.options);
        device.set_memory_budget(None);
        eprintln!(
            "{}: budget {budget}, streamed peak live {live}, reserved {reserved}",
            device.name()
        );
        assert!(
            reserved <= budget && live <= budget,
            "{}: peak live {live}, reserved {reserved}, budget {budget}",
            device.name()
        );
        // Streaming moves weights, not arithmetic: the same image.
        assert_eq!(pixels, reference, "{}", device.name());
    }
}
