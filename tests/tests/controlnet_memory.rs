//! ControlNets with quantised weights, `--plan` / `--max-vram` and streaming (tiny-sd1 with the
//! tiny random ControlNet of tests/fixtures/controlnet, its "scale1" case):
//!
//! - The plan of a run with a ControlNet lists its weights and matches the measured peak of the
//!   real run (within memory_budget.rs's 2 %, `memory::MARGIN`), f32 and q8_0, on the CPU backend and the GPU under
//!   test: the ControlNet's weights and activations are counted, as `--max-vram` needs.
//! - A budget below the resident peak streams the ControlNet's blocks with the UNet's, stays under
//!   the budget, and gives the resident image exactly.
//! - Quantised ControlNets stay within a PSNR bound of diffusers' f32 image (bounds about 5 dB under
//!   what was measured, as in quantized.rs), and packing the ControlNet changes the image (so
//!   something in it was packed).
//!
//! The CPU backend's counter and budget are process-wide: the tests of this file take turns.

use std::path::PathBuf;
use std::sync::Arc;

use kiln_kernels::testing::gpu;
use kiln_models::image::read_image;
use kiln_models::pipeline::{
    generate, open_controlnet, plan_with, prepare_with, ControlMode, ControlUnit, GenerationParams,
    LoadOptions, PipelineError, Residency, StableDiffusion,
};
use kiln_models::preprocess::ResizeMode;
use kiln_nn::weights::WeightType;
use kiln_runtime::Device;
use kiln_tests::fixtures;
use kiln_tests::golden::{psnr, read_f32};
use kiln_tests::memory::{measured, take_turn, within};
use kiln_tests::params::small_case;

fn tiny() -> PathBuf {
    fixtures().join("tiny-sd1")
}

fn controlnet_dir() -> PathBuf {
    fixtures().join("controlnet/sd1-a")
}

/// The "scale1" case of tests/fixtures/controlnet/cases.json without its ControlNet.
fn base_params() -> GenerationParams {
    small_case(4, 7.5)
}

/// The case's parameters with its ControlNet opened for `model` (zeros for a plan's model).
fn params_for(
    model: &StableDiffusion,
    weight_type: WeightType,
) -> Result<GenerationParams, PipelineError> {
    let mut p = base_params();
    let net = open_controlnet(
        &controlnet_dir(),
        "sd1-a",
        model,
        weight_type.quantization(),
    )?;
    p.controls = vec![ControlUnit {
        model: Arc::new(net),
        name: "sd1-a".into(),
        hash: None,
        module: "none".into(),
        settings: kiln_models::preprocess::PreprocessorSettings::defaults("none").unwrap(),
        image: read_image(&fixtures().join("controlnet/control.png")).unwrap(),
        resize: ResizeMode::JustResize,
        scale: 1.0,
        guidance_start: 0.0,
        guidance_end: 1.0,
        mode: ControlMode::Balanced,
    }];
    Ok(p)
}

/// Loads the model and its ControlNet as `options` say and generates: the image, and the peaks
/// (live, reserved) over load and run less what was live before.
fn run(device: &Device, options: &LoadOptions, weight_type: WeightType) -> (Vec<f32>, u64, u64) {
    measured(device, || {
        let model = StableDiffusion::load_with(&tiny(), device, options).unwrap();
        let params = params_for(&model, weight_type).unwrap();
        let net = params.controls[0].model.model();
        assert_eq!(net.is_streamed(), options.stream_unet);
        assert!(net.planned_weights().is_none(), "a real ControlNet");
        generate(&model, &params, &mut |_| {})
            .unwrap()
            .remove(0)
            .pixels
    })
}

#[test]
fn plan_with_a_controlnet_matches_the_measured_peak() {
    let _turn = take_turn();
    for device in std::iter::once(Device::Cpu).chain(gpu()) {
        for weight_type in [WeightType::F32, "q8_0".parse().unwrap()] {
            let options = LoadOptions::weight_type(weight_type);
            let planned =
                plan_with(&tiny(), &device, &options, |m| params_for(m, weight_type)).unwrap();
            let without = plan_with(&tiny(), &device, &options, |_| {
                Ok::<_, PipelineError>(base_params())
            })
            .unwrap();
            let net = planned
                .weights
                .iter()
                .find(|w| w.name == "controlnet")
                .unwrap_or_else(|| panic!("no ControlNet weights in\n{}", planned.report()));
            assert!(net.bytes > 0 && net.largest_block > 0, "{net:?}");
            assert_eq!(
                planned.weights_total(),
                without.weights_total() + net.bytes,
                "{}",
                planned.report()
            );
            let what = format!("{weight_type:?} on {}", device.name());
            let (_, live, reserved) = run(&device, &options, weight_type);
            within(planned.peak(), live, &what);
            if !device.is_cpu() {
                within(planned.peak_reserved(), reserved, &what);
            }
        }
    }
}

#[test]
fn a_budget_below_the_resident_peak_streams_the_controlnet_too() {
    let _turn = take_turn();
    let weight_type = WeightType::F32;
    for device in std::iter::once(Device::Cpu).chain(gpu()) {
        let options = LoadOptions::weight_type(weight_type);
        let planned =
            plan_with(&tiny(), &device, &options, |m| params_for(m, weight_type)).unwrap();
        let budget = planned.streamed_peak();
        assert!(budget < planned.peak(), "{}", planned.report());
        let prepared = prepare_with(
            &tiny(),
            &device,
            options.clone(),
            Some(budget),
            false,
            |m| params_for(m, weight_type),
        )
        .unwrap();
        let fit = prepared.fit.as_ref().unwrap();
        assert_eq!(fit.residency, Residency::StreamedUnet, "{}", fit.describe());
        let (reference, _, _) = run(&device, &options, weight_type);
        prepared.set_device_budget(&device);
        let (pixels, live, reserved) = run(&device, &prepared.options, weight_type);
        device.set_memory_budget(None);
        assert!(
            reserved <= budget && live <= budget,
            "{}: peak live {live}, reserved {reserved}, budget {budget}",
            device.name()
        );
        // Streaming moves weights, not arithmetic: the same image.
        assert_eq!(pixels, reference, "{}", device.name());
    }
}

fn golden() -> Vec<f32> {
    read_f32(
        &fixtures().join("controlnet/golden.safetensors"),
        "scale1/image",
    )
    .1
}

/// Measured PSNR against diffusers' f32 image, UNet and ControlNet packed: q8_0 50.6 dB on the CPU
/// backend, 53.3 dB on llvmpipe; q4_0 27.7 dB on both.
#[test]
fn quantised_controlnets_stay_near_the_f32_image() {
    let _turn = take_turn();
    let want = golden();
    for device in std::iter::once(Device::Cpu).chain(gpu()) {
        for (name, bound) in [("q8_0", 45.0), ("q4_0", 22.0)] {
            let weight_type: WeightType = name.parse().unwrap();
            let model = StableDiffusion::load_with(
                &tiny(),
                &device,
                &LoadOptions::weight_type(weight_type),
            )
            .unwrap();
            let packed = params_for(&model, weight_type).unwrap();
            let got = generate(&model, &packed, &mut |_| {})
                .unwrap()
                .remove(0)
                .pixels;
            let p = psnr(&got, &want);
            // The same run with the ControlNet's weights left in f32.
            let unpacked = params_for(&model, WeightType::F32).unwrap();
            let f32_net = generate(&model, &unpacked, &mut |_| {})
                .unwrap()
                .remove(0)
                .pixels;
            eprintln!(
                "{} {name}: PSNR {p:.2} dB (ControlNet in f32: {:.2} dB)",
                device.name(),
                psnr(&f32_net, &want)
            );
            assert_ne!(got, f32_net, "{name}: nothing in the ControlNet was packed");
            assert!(p >= bound, "{name}: PSNR {p:.2} dB < {bound} dB");
        }
    }
}
