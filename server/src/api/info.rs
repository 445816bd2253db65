//! A1111's txt2img / img2img answer: `images` (base64 PNGs with the infotext chunk),
//! `parameters` (the request echoed) and `info` (a JSON *string* describing the run).

use kiln_models::pipeline::GenerationParams;
use serde_json::{json, Value};

use super::images::encode_base64;
use crate::queue::JobOutput;

pub fn a1111_response(
    parameters: Value,
    params: &GenerationParams,
    out: &JobOutput,
    send_images: bool,
) -> Value {
    let images: Vec<String> = if send_images {
        out.images.iter().map(|i| encode_base64(&i.png)).collect()
    } else {
        Vec::new()
    };
    json!({
        "images": images,
        "parameters": parameters,
        "info": info_json(params, out).to_string(),
    })
}

/// The fields of A1111's `Processed.js()`.
pub fn info_json(p: &GenerationParams, out: &JobOutput) -> Value {
    let n = out.images.len();
    let seeds: Vec<u64> = out.images.iter().map(|i| i.seed).collect();
    let infotexts: Vec<&str> = out.images.iter().map(|i| i.infotext.as_str()).collect();
    json!({
        "prompt": p.prompt,
        "all_prompts": vec![&p.prompt; n],
        "negative_prompt": p.negative_prompt,
        "all_negative_prompts": vec![&p.negative_prompt; n],
        "seed": seeds.first().copied().unwrap_or(p.seed),
        "all_seeds": seeds,
        "subseed": -1,
        "all_subseeds": vec![-1; n],
        "subseed_strength": 0,
        "width": p.width,
        "height": p.height,
        "sampler_name": p.sampler.kind.name(),
        "cfg_scale": p.cfg_scale,
        "steps": p.steps,
        "batch_size": p.batch_size,
        "restore_faces": false,
        "face_restoration_model": null,
        "sd_model_name": out.model_name,
        "sd_model_hash": out.model_hash,
        "sd_vae_name": null,
        "sd_vae_hash": null,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": p.init.as_ref().map(|i| i.strength),
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": [],
        "job_timestamp": out.job_timestamp,
        "clip_skip": p.clip_skip,
        "is_using_inpainting_conditioning": false,
        "interrupted": out.interrupted,
        "version": concat!("kiln ", env!("CARGO_PKG_VERSION")),
    })
}
