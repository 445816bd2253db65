//! `generate_controlled`: a step callback that sees the latents and can skip a batch or interrupt
//! the run, which then returns the images of the batch in progress; and `model_hash_file`
//! finding the hashed file without loading the model.

use std::path::PathBuf;

use kiln_models::pipeline::{
    generate, generate_controlled, model_hash_file, GenerationParams, StableDiffusion, StepControl,
};
use kiln_runtime::{DType, Device, DeviceChoice};

fn model() -> StableDiffusion {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/bundled");
    let device = Device::open(DeviceChoice::Cpu).unwrap();
    StableDiffusion::load(&path, &device, DType::F32).unwrap()
}

fn params() -> GenerationParams {
    let mut p = GenerationParams::new("a red circle");
    p.width = 64;
    p.height = 64;
    p.steps = 5;
    p.seed = 3;
    p
}

#[test]
fn interrupt_returns_the_batch_in_progress() {
    let model = model();
    let mut p = params();
    p.batch_count = 2;
    let full = generate(&model, &p, &mut |_| {}).unwrap();
    let mut seen = Vec::new();
    let cut = generate_controlled(&model, &p, &mut |s| {
        seen.push(s.progress.step);
        assert_eq!(s.latents.len(), s.shape.iter().product::<usize>());
        assert_eq!(s.shape[0], 1);
        if s.progress.step == 2 {
            StepControl::Interrupt
        } else {
            StepControl::Continue
        }
    })
    .unwrap();
    assert_eq!(seen, [1, 2]);
    assert_eq!(cut.len(), 1, "no second batch after an interrupt");
    assert_eq!(cut[0].seed, 3);
    assert_ne!(
        cut[0].pixels, full[0].pixels,
        "2 of 5 steps give another image"
    );
}

#[test]
fn skip_ends_one_batch_only() {
    let model = model();
    let mut p = params();
    p.batch_count = 2;
    let full = generate(&model, &p, &mut |_| {}).unwrap();
    let mut seen = Vec::new();
    let out = generate_controlled(&model, &p, &mut |s| {
        seen.push(s.progress.step);
        if s.progress.step == 1 {
            StepControl::Skip
        } else {
            StepControl::Continue
        }
    })
    .unwrap();
    assert_eq!(seen, [1, 6, 7, 8, 9, 10]);
    assert_eq!(out.len(), 2);
    assert_ne!(out[0].pixels, full[0].pixels);
    assert_eq!(out[1].pixels, full[1].pixels, "the next batch runs in full");
}

#[test]
fn hash_file_without_loading() {
    let model = model();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/bundled");
    assert_eq!(model_hash_file(&path).unwrap(), model.source.hash_file);
    let file = PathBuf::from("x.safetensors");
    assert_eq!(model_hash_file(&file).unwrap(), file);
    assert!(model_hash_file(&std::env::temp_dir()).is_err());
}
