//! Loading and running whole pipelines in tests.

use std::path::Path;

use kiln_models::pipeline::{generate, GenerationParams, StableDiffusion};
use kiln_runtime::{DType, Device};

/// The error loading `path` gives on the CPU backend; panics if it loads.
pub fn load_err(path: &Path) -> String {
    match StableDiffusion::load(path, &Device::Cpu, DType::F32) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

/// Generates without watching progress: the pixels of every image, one after another.
pub fn run(model: &StableDiffusion, params: &GenerationParams) -> Vec<f32> {
    let images = generate(model, params, &mut |_| {}).unwrap();
    images.into_iter().flat_map(|i| i.pixels).collect()
}
