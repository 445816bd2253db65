//! OpenAI's images API as stable-diffusion.cpp's server offers it: POST /v1/images/generations
//! (`response_format` b64_json) and GET /v1/models. kiln also reads a few A1111-style extras
//! (negative_prompt, steps, cfg_scale, seed, sampler) when present.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::Json;
use kiln_models::pipeline::GenerationParams;
use kiln_models::schedulers::SamplerSpec;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::{parse_json, Body};
use super::images::encode_base64;
use super::jobs::{resolve_model, run};
use super::{random_seed, AppState};
use crate::error::{ApiError, ApiResult};

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct GenerationsRequest {
    prompt: Option<String>,
    model: Option<String>,
    n: Option<i64>,
    size: Option<String>,
    response_format: Option<String>,
    negative_prompt: Option<String>,
    steps: Option<i64>,
    cfg_scale: Option<f64>,
    seed: Option<i64>,
    sampler: Option<String>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub async fn generations(State(state): State<Arc<AppState>>, body: Body) -> ApiResult<Json<Value>> {
    let req: GenerationsRequest = parse_json(body)?;
    let prompt = req
        .prompt
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::invalid("prompt", "prompt is required"))?;
    match req.response_format.as_deref() {
        None | Some("b64_json") => {}
        Some(other) => {
            return Err(ApiError::invalid(
                "response_format",
                format!("response_format {other:?} is not supported; use \"b64_json\""),
            ))
        }
    }
    let config = &state.config;
    let mut params = GenerationParams::new(prompt.clone());
    params.negative_prompt = req.negative_prompt.unwrap_or_default();
    let n = req.n.unwrap_or(1);
    if !(1..=10).contains(&n) || n as usize > config.max_images {
        return Err(ApiError::invalid(
            "n",
            format!("n {n} must be between 1 and 10"),
        ));
    }
    params.batch_size = n as usize;
    let (w, h) = parse_size(req.size.as_deref().unwrap_or("512x512"))?;
    if w * h > config.max_pixels {
        return Err(ApiError::invalid(
            "size",
            format!(
                "{w}x{h} is over this server's --max-pixels {}",
                config.max_pixels
            ),
        ));
    }
    (params.width, params.height) = (w, h);
    let steps = req.steps.unwrap_or(20);
    if steps < 1 || steps > config.max_steps as i64 {
        return Err(ApiError::invalid(
            "steps",
            format!("steps {steps} must be between 1 and {}", config.max_steps),
        ));
    }
    params.steps = steps as usize;
    let cfg = req.cfg_scale.unwrap_or(7.0);
    if !(cfg.is_finite() && (0.0..=100.0).contains(&cfg)) {
        return Err(ApiError::invalid(
            "cfg_scale",
            "cfg_scale must be from 0 to 100",
        ));
    }
    params.cfg_scale = cfg as f32;
    params.seed = match req.seed.unwrap_or(-1) {
        -1 => random_seed(),
        s if s >= 0 => s as u64,
        s => {
            return Err(ApiError::invalid(
                "seed",
                format!("seed {s} must be -1 or >= 0"),
            ))
        }
    };
    if let Some(s) = &req.sampler {
        params.sampler =
            SamplerSpec::parse(s).map_err(|e| ApiError::invalid("sampler", e.to_string()))?;
    }
    let settings = state.settings();
    params.rng = settings.rng;
    params.clip_skip = settings.clip_skip as usize;
    params.embeddings = config.embeddings.clone();
    let model = match &req.model {
        Some(m) if !m.is_empty() => resolve_model(&state, m, "model")?,
        _ => resolve_model(&state, &settings.checkpoint, "model")?,
    };
    let out = run(&state, params, model, None, Vec::new()).await?;
    let data: Vec<Value> = out
        .images
        .iter()
        .map(|i| json!({"b64_json": encode_base64(&i.png), "revised_prompt": prompt}))
        .collect();
    Ok(Json(
        json!({"created": unix_now(), "data": data, "output_format": "png"}),
    ))
}

/// OpenAI's `size`: "WIDTHxHEIGHT", each a positive multiple of 8.
fn parse_size(size: &str) -> ApiResult<(usize, usize)> {
    let bad = || {
        ApiError::invalid(
            "size",
            format!("size {size:?} must be WIDTHxHEIGHT with multiples of 8, e.g. \"512x512\""),
        )
    };
    let (w, h) = size.split_once('x').ok_or_else(bad)?;
    let w: usize = w.trim().parse().map_err(|_| bad())?;
    let h: usize = h.trim().parse().map_err(|_| bad())?;
    if w == 0 || h == 0 || !w.is_multiple_of(8) || !h.is_multiple_of(8) {
        return Err(bad());
    }
    Ok((w, h))
}

pub async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    let data: Vec<Value> = state
        .catalog
        .list()
        .into_iter()
        .map(|m| {
            json!({
                "id": m.name,
                "object": "model",
                "created": 0,
                "owned_by": "kiln",
                "kind": m.kind.as_str(),
            })
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64x128").unwrap(), (64, 128));
        for bad in ["64", "63x64", "0x64", "axb", "-8x8"] {
            assert_eq!(parse_size(bad).unwrap_err().field.as_deref(), Some("size"));
        }
    }
}
