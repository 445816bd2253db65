//! Generation settings as the fixture generators recorded them.

use std::path::Path;
use std::sync::Arc;

use kiln_models::embeddings::EmbeddingDb;
use kiln_models::image::read_image;
use kiln_models::pipeline::{GenerationParams, InitImage};
use kiln_models::rng::RngKind;
use kiln_models::schedulers::SamplerSpec;
use serde_json::Value;

/// The settings every fixture case carries (prompts, steps, CFG, size, seed, sampler).
pub fn case_params(case: &Value) -> GenerationParams {
    let s = |k: &str| case[k].as_str().unwrap().to_string();
    let n = |k: &str| case[k].as_u64().unwrap() as usize;
    let mut p = GenerationParams::new(s("prompt"));
    p.negative_prompt = s("negative");
    p.steps = n("steps");
    p.cfg_scale = case["cfg"].as_f64().unwrap() as f32;
    p.width = n("width");
    p.height = n("height");
    p.seed = case["seed"].as_u64().unwrap();
    p.sampler = SamplerSpec::parse(&s("sampler")).unwrap();
    p.rng = RngKind::TorchCpu;
    p
}

/// A pipeline_cases.json case of model folder `dir`, with its batch, CLIP skip and embeddings.
pub fn pipeline_case_params(case: &Value, dir: &Path) -> GenerationParams {
    let n = |k: &str| case[k].as_u64().unwrap() as usize;
    let mut p = case_params(case);
    p.batch_size = n("batch");
    p.clip_skip = n("clip_skip");
    if !case["embeddings"].as_array().unwrap().is_empty() {
        // The whole folder, as --embeddings-dir loads it; the prompt picks which ones are used.
        p.embeddings = Some(Arc::new(
            EmbeddingDb::load_dir(&dir.join("embeddings")).unwrap(),
        ));
    }
    p
}

/// A case's `init{suffix}.png` (and `mask{suffix}.png` to inpaint) in `dir`; None for txt2img.
pub fn case_init(case: &Value, dir: &Path, suffix: &str) -> Option<InitImage> {
    let mode = case["mode"].as_str().unwrap();
    (mode != "txt2img").then(|| InitImage {
        image: read_image(&dir.join(format!("init{suffix}.png"))).unwrap(),
        mask: (mode == "inpaint").then(|| {
            read_image(&dir.join(format!("mask{suffix}.png")))
                .unwrap()
                .to_gray()
        }),
        strength: case["strength"].as_f64().unwrap(),
    })
}

/// The 32x32 Euler case of the pipeline, ControlNet and refiner goldens, at `steps` and `cfg`.
pub fn small_case(steps: usize, cfg: f32) -> GenerationParams {
    let mut p = GenerationParams::new("a red circle on a blue background");
    p.negative_prompt = "blurry, dark".into();
    (p.steps, p.cfg_scale, p.width, p.height, p.seed) = (steps, cfg, 32, 32, 42);
    p.sampler = SamplerSpec::parse("Euler").unwrap();
    p.rng = RngKind::TorchCpu;
    p
}

/// The plain red-circle prompt at `size` x `size`, `steps` steps, `seed`; defaults otherwise.
pub fn red_circle(size: usize, steps: usize, seed: u64) -> GenerationParams {
    let mut p = GenerationParams::new("a red circle on a blue background");
    p.width = size;
    p.height = size;
    p.steps = steps;
    p.seed = seed;
    p
}
