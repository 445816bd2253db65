//! Hires fix against diffusers doing A1111's two passes (tools/make_hires_goldens.py on the tiny
//! SD 1.x pipeline in tests/fixtures/tiny-sd1): latent upscalers of each interpolation family,
//! an image upscaler ("Nearest"), a second-pass prompt and sampler, a batch of two.
//!
//! Tolerance: max |error| <= 1e-3 on the [0, 1] image, as tests/tests/pipeline.rs, f32 on the CPU
//! backend and the GPU under test.

use std::path::PathBuf;
use std::sync::Arc;

use kiln_kernels::testing::with_gpu;
use kiln_models::pipeline::{
    generate, generate_controlled, hires_fields, infotext, GenerationParams, HiresFix, HiresSize,
    HiresUpscaler, LatentUpscale, NearestUpscaler, StableDiffusion, StepControl,
};
use kiln_models::schedulers::SamplerSpec;
use kiln_runtime::{DType, Device};
use kiln_tests::fixtures;
use kiln_tests::golden::{self, max_err, pixels, read_f32};
use kiln_tests::params::case_params;
use serde_json::Value;

const TOL: f32 = 1e-3;

fn tiny() -> PathBuf {
    fixtures().join("tiny-sd1")
}

fn golden(name: &str) -> Vec<f32> {
    read_f32(&tiny().join("hires_golden.safetensors"), name).1
}

fn cases() -> Vec<Value> {
    golden::cases(&tiny().join("hires_cases.json"))
}

fn params_for(case: &Value) -> GenerationParams {
    let s = |k: &str| case[k].as_str().unwrap().to_string();
    let n = |k: &str| case[k].as_u64().unwrap() as usize;
    let mut p = case_params(case);
    p.batch_size = n("batch");
    let upscaler = s("upscaler");
    p.hires = Some(HiresFix {
        upscaler: match LatentUpscale::from_name(&upscaler) {
            Some(mode) => HiresUpscaler::Latent(mode),
            None => {
                assert_eq!(upscaler, "Nearest");
                HiresUpscaler::Image(Arc::new(NearestUpscaler))
            }
        },
        width: n("hr_width"),
        height: n("hr_height"),
        steps: n("hr_steps"),
        denoising_strength: case["denoising"].as_f64().unwrap(),
        prompt: case["hr_prompt"].as_str().map(String::from),
        negative_prompt: None,
        sampler: case["hr_sampler"]
            .as_str()
            .map(|s| SamplerSpec::parse(s).unwrap()),
        size_label: HiresSize::Resize(n("hr_width"), n("hr_height")),
    });
    p
}

fn check_all(device: &Device) {
    let model = StableDiffusion::load(&tiny(), device, DType::F32).unwrap();
    for case in cases() {
        let name = case["name"].as_str().unwrap();
        let params = params_for(&case);
        let mut steps = Vec::new();
        let images = generate(&model, &params, &mut |p| steps.push((p.step, p.total))).unwrap();
        let want = golden(&format!("{name}/image"));
        let got = pixels(&images);
        let hires = params.hires.as_ref().unwrap();
        assert!(images
            .iter()
            .all(|i| (i.width, i.height) == (hires.width, hires.height)));
        assert_eq!(got.len(), want.len(), "{name}");
        let err = max_err(&got, &want);
        println!("{name} on {}: max error {err:.2e}", device.name());
        assert!(err <= TOL, "{name}: max error {err} > {TOL}");
        // Progress counts both passes, ending at the total.
        let total = params.steps + hires.steps;
        assert_eq!(steps.last(), Some(&(total, total)), "{name}");
    }
}

#[test]
fn hires_fix_matches_diffusers_two_passes_on_cpu() {
    check_all(&Device::Cpu);
}

#[test]
fn hires_fix_matches_diffusers_two_passes_on_gpu() {
    with_gpu(check_all);
}

#[test]
fn interrupting_the_first_pass_returns_its_image_at_the_first_size() {
    let model = StableDiffusion::load(&tiny(), &Device::Cpu, DType::F32).unwrap();
    let params = params_for(&cases()[0]);
    let images = generate_controlled(&model, &params, &mut |_| StepControl::Interrupt).unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(
        (images[0].width, images[0].height),
        (params.width, params.height)
    );
}

#[test]
fn bad_hires_settings_are_refused() {
    let model = StableDiffusion::load(&tiny(), &Device::Cpu, DType::F32).unwrap();
    let mut params = params_for(&cases()[0]);
    params.hires.as_mut().unwrap().denoising_strength = 0.0;
    let err = generate(&model, &params, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("denoising strength"), "{err}");
    let mut params = params_for(&cases()[0]);
    params.hires.as_mut().unwrap().width = 63;
    let err = generate(&model, &params, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("63x64"), "{err}");
}

#[test]
fn infotext_fields_follow_a1111() {
    let params = params_for(&cases()[1]);
    let fields = hires_fields(params.hires.as_ref().unwrap(), &params);
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "Hires resize",
            "Hires steps",
            "Hires upscaler",
            "Hires sampler",
            "Hires prompt"
        ]
    );
    assert_eq!(fields[2].1, "Latent (bicubic antialiased)");
    let info = infotext(&params, 11, "tiny", None).format();
    let last = info.lines().last().unwrap();
    assert!(
        last.contains("Size: 32x24")
            && last.contains("Denoising strength: 0.7")
            && last.contains("RNG: CPU, Hires resize: 48x40, Hires steps: 3"),
        "{last}"
    );
}
