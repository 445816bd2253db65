//! Hires fix with an SDXL refiner, as A1111 runs it by default (`hires_fix_refiner_pass` "second
//! pass"), on tests/fixtures/tiny-sdxl with tests/fixtures/tiny-sdxl-refiner: the first pass is
//! the main model's alone (its step latents equal those of the same run without a refiner), and
//! the second pass hands over at the switch (its steps above the cut equal too, the ones below it
//! differ, and so does the image). Each step's latents come from the step callback.

use std::sync::Arc;

use kiln_models::pipeline::{
    generate_controlled, GenerationParams, HiresFix, HiresSize, HiresUpscaler, Refiner,
    StableDiffusion, StepControl,
};
use kiln_models::schedulers::SamplerSpec;
use kiln_runtime::{DType, Device};
use kiln_tests::fixtures;

const FIRST_STEPS: usize = 4;

fn params(refiner: Option<&Arc<StableDiffusion>>) -> GenerationParams {
    let mut p = GenerationParams::new("a red circle on a blue background");
    p.negative_prompt = "blurry".into();
    (p.width, p.height, p.steps, p.seed) = (32, 32, FIRST_STEPS, 7);
    p.sampler = SamplerSpec::parse("Euler").unwrap();
    p.hires = Some(HiresFix {
        upscaler: HiresUpscaler::builtin("Latent (nearest)").unwrap(),
        width: 64,
        height: 64,
        steps: 3,
        // A1111's second-pass schedule: int(3 / 0.9) = 3 steps, none skipped, so the second
        // pass starts high enough for the main model to run its first step before the cut.
        denoising_strength: 0.9,
        prompt: None,
        negative_prompt: None,
        sampler: None,
        size_label: HiresSize::Scale(2.0),
    });
    p.refiner = refiner.map(|r| Refiner {
        model: r.clone(),
        switch_at: 0.5,
    });
    p
}

/// Each step's latents and the image.
fn run(model: &StableDiffusion, p: &GenerationParams) -> (Vec<Vec<f32>>, Vec<f32>) {
    let mut steps = Vec::new();
    let images = generate_controlled(model, p, &mut |step| {
        steps.push(step.latents.to_vec());
        StepControl::Continue
    })
    .unwrap();
    (steps, images[0].pixels.clone())
}

#[test]
fn the_refiner_takes_over_in_the_second_pass_only() {
    let device = Device::Cpu;
    let base = StableDiffusion::load(&fixtures().join("tiny-sdxl"), &device, DType::F32).unwrap();
    let refiner = Arc::new(
        StableDiffusion::load(&fixtures().join("tiny-sdxl-refiner"), &device, DType::F32).unwrap(),
    );
    let (plain_steps, plain_image) = run(&base, &params(None));
    let (steps, image) = run(&base, &params(Some(&refiner)));
    assert_eq!(plain_steps.len(), FIRST_STEPS + 3);
    assert_eq!(steps.len(), plain_steps.len(), "every step is reported");
    let same = steps
        .iter()
        .zip(&plain_steps)
        .take_while(|(a, b)| a == b)
        .count();
    // The whole first pass and the second pass's first step (timestep above the cut at 500)
    // are the main model's; the last two steps are the refiner's.
    assert_eq!(
        same,
        FIRST_STEPS + 1,
        "steps equal to the run without a refiner"
    );
    assert!(steps[same..]
        .iter()
        .zip(&plain_steps[same..])
        .all(|(a, b)| a != b));
    assert_ne!(image, plain_image);
    assert_eq!(image.len(), 3 * 64 * 64);
}
