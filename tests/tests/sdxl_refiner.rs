//! The SDXL refiner (tests/fixtures/tiny-sdxl-refiner; goldens from
//! tools/make_sdxl_refiner_fixtures.py: 10 steps, float32 on the CPU, torch.Generator("cpu") seeds)
//! against diffusers: tiny-sdxl's StableDiffusionXLPipeline with `denoising_end = switch` then the
//! refiner's StableDiffusionXLImg2ImgPipeline with `denoising_start = switch` on those latents, and
//! the refiner alone as an img2img model. Plus the refusals: a switch outside (0, 1), a non-SDXL
//! refiner, the refiner asked for txt2img on its own.
//!
//! Tolerance: images max |error| <= 1e-3 on [0, 1] before 8-bit quantisation
//! (tests/tests/sdxl_pipeline.rs's bound), CPU backend and GPU under test in f32.

use std::path::PathBuf;
use std::sync::Arc;

use kiln_kernels::testing::with_gpu;
use kiln_models::image::read_image;
use kiln_models::pipeline::{
    generate, GenerationParams, InitImage, PipelineError, Refiner, StableDiffusion,
};
use kiln_models::single_file::{Component, ModelKind, SingleFile};
use kiln_runtime::{DType, Device};
use kiln_tests::golden::{self, assert_images_match, max_err, pixels, read_f32};
use kiln_tests::params::case_params;
use kiln_tests::{fixtures, sdxl};
use serde_json::Value;

const TOL: f32 = 1e-3;

fn refiner_dir() -> PathBuf {
    fixtures().join("tiny-sdxl-refiner")
}

fn load(device: &Device, name: &str) -> Arc<StableDiffusion> {
    Arc::new(StableDiffusion::load(&fixtures().join(name), device, DType::F32).unwrap())
}

fn golden(name: &str) -> (Vec<usize>, Vec<f32>) {
    read_f32(
        &refiner_dir().join("refiner_golden.safetensors"),
        &format!("{name}/image"),
    )
}

fn cases() -> Vec<Value> {
    golden::cases(&refiner_dir().join("refiner_cases.json"))
}

fn init(strength: f64) -> InitImage {
    InitImage {
        image: read_image(&fixtures().join("tiny-sd1/init.png")).unwrap(),
        mask: None,
        strength,
    }
}

fn params_for(case: &Value, refiner: &Arc<StableDiffusion>) -> GenerationParams {
    let mut p = case_params(case);
    p.batch_size = case["batch"].as_u64().unwrap() as usize;
    let mode = case["mode"].as_str().unwrap();
    if mode != "two_stage" {
        p.init = Some(init(case["strength"].as_f64().unwrap()));
    }
    if mode != "img2img" {
        p.refiner = Some(Refiner {
            model: refiner.clone(),
            switch_at: case["switch"].as_f64().unwrap(),
        });
    }
    p
}

fn check_all(device: &Device) {
    let base = load(device, "tiny-sdxl");
    let refiner = load(device, "tiny-sdxl-refiner");
    for case in cases() {
        let name = case["name"].as_str().unwrap();
        let params = params_for(&case, &refiner);
        // The refiner alone runs as the main model; otherwise base, then the refiner.
        let main = if case["mode"] == "img2img" {
            &refiner
        } else {
            &base
        };
        let images = generate(main, &params, &mut |_| {}).unwrap();
        assert_images_match(device, name, &images, golden(name), TOL);
    }
}

#[test]
fn refiner_generations_match_diffusers_on_cpu() {
    check_all(&Device::Cpu);
}

#[test]
fn refiner_generations_match_diffusers_on_gpu() {
    with_gpu(check_all);
}

#[test]
fn refiner_folder_loads_with_big_g_alone() {
    let refiner = load(&Device::Cpu, "tiny-sdxl-refiner");
    assert!(refiner.is_refiner());
    assert!(refiner.text_encoder.is_none() && refiner.tokenizer.is_none());
    let x = refiner.sdxl.as_ref().unwrap();
    assert!(x.requires_aesthetics_score);
    // bigG's 48 columns alone, where base has CLIP-L's 32 beside them.
    assert_eq!(refiner.context_dim(), 48);
    assert_eq!(load(&Device::Cpu, "tiny-sdxl").context_dim(), 80);
    assert!(!load(&Device::Cpu, "tiny-sdxl").is_refiner());
}

/// The refiner's steps change the image (so the golden match is not base's alone), and progress
/// counts both stages' steps as one run.
#[test]
fn the_refiner_runs_the_last_steps() {
    let base = load(&Device::Cpu, "tiny-sdxl");
    let refiner = load(&Device::Cpu, "tiny-sdxl-refiner");
    let case = cases()
        .into_iter()
        .find(|c| c["name"] == "two_stage_euler")
        .unwrap();
    let params = params_for(&case, &refiner);
    let mut seen = Vec::new();
    let two = generate(&base, &params, &mut |p| seen.push((p.step, p.total))).unwrap();
    assert_eq!(seen, (1..=10).map(|s| (s, 10)).collect::<Vec<_>>());
    let alone = generate(
        &base,
        &GenerationParams {
            refiner: None,
            ..params.clone()
        },
        &mut |_| {},
    )
    .unwrap();
    let diff = max_err(&pixels(&two), &pixels(&alone));
    assert!(diff > 1e-2, "the refiner changed the image by only {diff}");
}

fn refusal(model: &StableDiffusion, params: &GenerationParams) -> String {
    match generate(model, params, &mut |_| {}) {
        Ok(_) => panic!("generated, expected a refusal"),
        Err(e) => {
            assert!(matches!(e, PipelineError::Invalid(_)), "{e:?}");
            e.to_string()
        }
    }
}

fn small(refiner: Option<Refiner>) -> GenerationParams {
    let mut p = GenerationParams::new("a red circle");
    p.width = 32;
    p.height = 32;
    p.steps = 4;
    p.refiner = refiner;
    p
}

#[test]
fn a_switch_outside_the_schedule_is_refused() {
    let base = load(&Device::Cpu, "tiny-sdxl");
    let refiner = load(&Device::Cpu, "tiny-sdxl-refiner");
    for switch_at in [0.0, 1.0, 1.5, -0.5] {
        let p = small(Some(Refiner {
            model: refiner.clone(),
            switch_at,
        }));
        let e = refusal(&base, &p);
        assert!(e.contains("between 0 and 1"), "{switch_at}: {e}");
    }
}

#[test]
fn an_sd1_refiner_or_base_is_refused_by_name() {
    let base = load(&Device::Cpu, "tiny-sdxl");
    let sd1 = load(&Device::Cpu, "tiny-sd1");
    let refiner = load(&Device::Cpu, "tiny-sdxl-refiner");
    let e = refusal(
        &base,
        &small(Some(Refiner {
            model: sd1.clone(),
            switch_at: 0.8,
        })),
    );
    assert!(
        e.contains("tiny-sd1") && e.contains("not an SDXL model"),
        "{e}"
    );
    let e = refusal(
        &sd1,
        &small(Some(Refiner {
            model: refiner,
            switch_at: 0.8,
        })),
    );
    assert!(e.contains("tiny-sd1") && e.contains("is not SDXL"), "{e}");
}

#[test]
fn the_refiner_alone_needs_an_init_image() {
    let refiner = load(&Device::Cpu, "tiny-sdxl-refiner");
    let e = refusal(&refiner, &small(None));
    assert!(
        e.contains("tiny-sdxl-refiner") && e.contains("init image"),
        "{e}"
    );
    let mut p = small(None);
    p.init = Some(init(0.5));
    assert_eq!(generate(&refiner, &p, &mut |_| {}).unwrap().len(), 1);
}

/// The refiner as a single file (tests/fixtures/single-file/tiny-sdxl-refiner.safetensors, the
/// folder's weights in the original layout, bigG under `conditioner.embedders.0.model.`): told
/// apart as the refiner, its bigG read from `embedders.0`, it gives the folder's images. As in
/// sdxl_pipeline.rs's single-file test the configs come from the folder (the tiny weights do not
/// fit the configs inferred for a real checkpoint); the public loader gets as far as those.
#[test]
fn a_refiner_single_file_gives_the_folders_result() {
    let path = fixtures().join("single-file/tiny-sdxl-refiner.safetensors");
    let file = SingleFile::open(&path).unwrap();
    assert_eq!(file.kind(), ModelKind::SdxlRefiner);
    assert!(!file.has(Component::TextEncoder));
    let run = |dev: &Device| {
        let base = load(dev, "tiny-sdxl");
        let folder = load(dev, "tiny-sdxl-refiner");
        let from_file = Arc::new(sdxl::from_single_file(
            &file,
            &path,
            "tiny-sdxl-refiner",
            &folder,
            dev,
        ));
        assert!(from_file.is_refiner());
        for name in ["two_stage_euler", "img2img_refiner_only"] {
            let case = cases().into_iter().find(|c| c["name"] == name).unwrap();
            let run_with = |r: &Arc<StableDiffusion>| {
                let main = if name == "img2img_refiner_only" {
                    r
                } else {
                    &base
                };
                pixels(&generate(main, &params_for(&case, r), &mut |_| {}).unwrap())
            };
            let err = max_err(&run_with(&from_file), &run_with(&folder));
            eprintln!("{} {name}: file vs folder max |err| {err:e}", dev.name());
            assert!(err <= 1e-6, "{name}: file vs folder {err}");
        }
    };
    run(&Device::Cpu);
    with_gpu(run);

    // The loader takes the refiner (no "no text encoder" refusal) up to the inferred configs.
    let msg = match StableDiffusion::load(&path, &Device::Cpu, DType::F32) {
        Ok(_) => panic!("the tiny file loaded with inferred configs"),
        Err(e) => e.to_string(),
    };
    assert!(msg.contains("inferred UNet config"), "{msg}");
}
