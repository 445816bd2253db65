//! Generation settings as the fixture generators recorded them.

use std::path::Path;
use std::sync::Arc;

use kiln_models::embeddings::EmbeddingDb;
use kiln_models::image::read_image;
use kiln_models::pipeline::{GenerationParams, InitImage};
use kiln_models::rng::RngKind;
use kiln_models::schedulers::SamplerSpec;
use serde_json::Value;

/// The settings every case of the fixtures' JSON carries (prompt, negative prompt, steps, CFG
/// scale, size, seed, sampler), with torch's CPU noise as the generators used.
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

/// A pipeline_cases.json case of the model folder `dir`: `case_params` with the batch, the CLIP
/// skip and, where the case uses embeddings, the folder's embeddings/ (the whole folder, as
/// --embeddings-dir loads it; the prompt picks which ones are used). Init images are the caller's.
pub fn pipeline_case_params(case: &Value, dir: &Path) -> GenerationParams {
    let n = |k: &str| case[k].as_u64().unwrap() as usize;
    let mut p = case_params(case);
    p.batch_size = n("batch");
    p.clip_skip = n("clip_skip");
    if !case["embeddings"].as_array().unwrap().is_empty() {
        p.embeddings = Some(Arc::new(
            EmbeddingDb::load_dir(&dir.join("embeddings")).unwrap(),
        ));
    }
    p
}

/// The init image of an img2img or inpainting case: `init{suffix}.png` in `dir`, with
/// `mask{suffix}.png` when inpainting, at the case's strength; None for txt2img.
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

/// tiny-sd1's "txt2img_euler" case (also the ControlNet fixture's "scale1" case without its
/// ControlNet): 4 Euler steps at 32x32, CFG 7.5, seed 42.
pub fn tiny_sd1_euler() -> GenerationParams {
    let mut p = GenerationParams::new("a red circle on a blue background");
    p.negative_prompt = "blurry, dark".into();
    p.steps = 4;
    p.cfg_scale = 7.5;
    p.width = 32;
    p.height = 32;
    p.seed = 42;
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
