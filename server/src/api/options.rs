//! Models, samplers, schedulers and settings: GET /sdapi/v1/sd-models, /samplers, /schedulers,
//! GET and POST /sdapi/v1/options, POST /sdapi/v1/refresh-checkpoints.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use kiln_models::rng::RngKind;
use kiln_models::schedulers::{SamplerKind, SigmaSchedule};
use serde_json::{json, Map, Value};

use super::body::{parse_json, Body};
use super::jobs::resolve_model;
use super::request::apply_overrides;
use super::AppState;
use crate::catalog::{ModelEntry, ModelKind};
use crate::error::{ApiError, ApiResult};

/// Each model with its hash; hashing a new multi-GB file takes a while, so it runs off the
/// async threads (and is cached).
pub async fn sd_models(State(state): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    let catalog = state.catalog.clone();
    let list = tokio::task::spawn_blocking(move || {
        catalog
            .list_kind(ModelKind::Image)
            .into_iter()
            .map(|m| model_json(&m, catalog.sha256(&m)))
            .collect::<Vec<Value>>()
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(Value::Array(list)))
}

fn model_json(m: &ModelEntry, sha256: Option<String>) -> Value {
    let short = sha256.as_ref().map(|h| h[..h.len().min(10)].to_string());
    json!({
        "title": m.title(short.as_deref()),
        "model_name": m.model_name,
        "hash": short,
        "sha256": sha256,
        "filename": m.path.to_string_lossy(),
        "config": null,
    })
}

/// The models folder is read on every listing, so there is nothing to refresh.
pub async fn refresh() -> Json<Value> {
    Json(json!({}))
}

pub async fn samplers() -> Json<Value> {
    let list: Vec<Value> = SamplerKind::ALL
        .iter()
        .map(|k| {
            let aliases: &[&str] = match k {
                SamplerKind::Euler => &["k_euler", "euler"],
                SamplerKind::EulerAncestral => &["k_euler_a", "euler_a"],
                SamplerKind::Heun => &["k_heun", "heun"],
                SamplerKind::Dpm2 => &["k_dpm_2", "dpm2"],
                SamplerKind::Ddim => &["ddim", "ddim_trailing"],
                SamplerKind::Ddpm => &["ddpm"],
                SamplerKind::DpmPp2m => &["k_dpmpp_2m", "dpm++2m"],
                SamplerKind::DpmPp2mSde => &["k_dpmpp_2m_sde", "dpm++2m_sde"],
                SamplerKind::UniPc => &["unipc"],
                SamplerKind::DpmPpSde => &["k_dpmpp_sde"],
                SamplerKind::Lcm => &["lcm"],
            };
            // A1111's options: the schedule its menu suggests, and the two-evaluation samplers.
            let mut options = Map::new();
            if matches!(
                k,
                SamplerKind::Euler
                    | SamplerKind::DpmPp2m
                    | SamplerKind::DpmPp2mSde
                    | SamplerKind::DpmPpSde
            ) {
                options.insert("scheduler".into(), "karras".into());
            }
            if matches!(
                k,
                SamplerKind::Heun | SamplerKind::Dpm2 | SamplerKind::DpmPpSde
            ) {
                options.insert("second_order".into(), true.into());
            }
            json!({"name": k.name(), "aliases": aliases, "options": options})
        })
        .collect();
    Json(Value::Array(list))
}

/// A1111's `/sdapi/v1/embeddings`: `loaded` by name with their vector count and width (`shape`),
/// `skipped` the files that could not be read. A1111 fills `step` and `sd_checkpoint*` from
/// training metadata that safetensors embeddings rarely carry: null here.
pub async fn embeddings(State(state): State<Arc<AppState>>) -> Json<Value> {
    let item = |shape: Option<usize>, vectors: Option<usize>| {
        json!({"step": null, "sd_checkpoint": null, "sd_checkpoint_name": null,
               "shape": shape, "vectors": vectors})
    };
    let mut loaded = Map::new();
    let mut skipped = Map::new();
    if let Some(db) = &state.config.embeddings {
        for e in db.all() {
            loaded.insert(e.name.clone(), item(Some(e.first.width), Some(e.count())));
        }
        for (path, _) in &db.skipped {
            let name = path.file_stem().unwrap_or_default().to_string_lossy();
            skipped.insert(name.into_owned(), item(None, None));
        }
    }
    Json(json!({"loaded": loaded, "skipped": skipped}))
}

pub async fn schedulers() -> Json<Value> {
    // A1111's fields; rho is Karras's, and SGM Uniform needs the model's own sigmas in A1111.
    let list: Vec<Value> = SigmaSchedule::ALL
        .iter()
        .map(|s| {
            let (rho, inner, aliases) = match s {
                SigmaSchedule::Karras => (json!(7.0), false, Value::Null),
                SigmaSchedule::SgmUniform => (json!(-1), true, json!(["SGMUniform"])),
                _ => (json!(-1), false, Value::Null),
            };
            json!({"name": s.api_name(), "label": s.label(), "aliases": aliases,
                   "default_rho": rho, "need_inner_model": inner})
        })
        .collect();
    Json(Value::Array(list))
}

pub async fn get_options(State(state): State<Arc<AppState>>) -> Json<Value> {
    let (settings, others) = state.options().clone();
    let mut out = others;
    let entry = state.catalog.resolve(&settings.checkpoint);
    let catalog = state.catalog.clone();
    let (title, hash) = match entry {
        Some(e) => {
            let sha = tokio::task::spawn_blocking(move || catalog.sha256(&e).map(|h| (e, h)))
                .await
                .ok()
                .flatten();
            match sha {
                Some((e, h)) => (e.title(Some(&h)), Value::from(h)),
                None => (settings.checkpoint.clone(), Value::Null),
            }
        }
        None => (settings.checkpoint.clone(), Value::Null),
    };
    out.insert("sd_model_checkpoint".into(), title.into());
    out.insert("sd_checkpoint_hash".into(), hash);
    out.insert("CLIP_stop_at_last_layers".into(), settings.clip_skip.into());
    let rng = match settings.rng {
        RngKind::Philox => "GPU",
        _ => "CPU",
    };
    out.insert("randn_source".into(), rng.into());
    out.entry("samples_format").or_insert("png".into());
    Json(Value::Object(out))
}

/// Stores settings; `sd_model_checkpoint` must name a listed model (the worker loads it on the
/// next job). A1111 answers null.
pub async fn set_options(State(state): State<Arc<AppState>>, body: Body) -> ApiResult<Json<Value>> {
    let req: Map<String, Value> = parse_json(body)?;
    let current = state.settings();
    let mut next = apply_overrides(&current, &req, "")?;
    if req.contains_key("sd_model_checkpoint") {
        let entry = resolve_model(&state, &next.checkpoint, "sd_model_checkpoint")?;
        next.checkpoint = entry.name;
    }
    let mut options = state.options();
    options.0 = next;
    for (k, v) in req {
        if !matches!(
            k.as_str(),
            "sd_model_checkpoint" | "CLIP_stop_at_last_layers" | "randn_source"
        ) {
            options.1.insert(k, v);
        }
    }
    Ok(Json(Value::Null))
}

/// GET /controlnet/model_list: the ControlNet extension's `{"model_list": ["name [hash]", ...]}`
/// for `--controlnet-dir` (hashing new files runs off the async threads, then is cached).
pub async fn controlnet_models(State(state): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    let dir = state.config.controlnet_dir.clone();
    let list = tokio::task::spawn_blocking(move || crate::controlnets::model_list(dir.as_deref()))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(json!({ "model_list": list })))
}

/// GET /controlnet/module_list: the preprocessors (the extension's `{"module_list": [...]}`).
pub async fn controlnet_modules() -> Json<Value> {
    let names = kiln_models::preprocess::Preprocessor::names();
    Json(json!({ "module_list": names }))
}

/// GET /sdapi/v1/latent-upscale-modes: A1111's hires-fix latent upscalers, `[{"name": ...}]`.
pub async fn latent_upscale_modes() -> Json<Value> {
    let names: Vec<Value> = kiln_models::pipeline::LatentUpscale::names()
        .map(|name| json!({ "name": name }))
        .collect();
    Json(Value::Array(names))
}
