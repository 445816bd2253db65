//! POST /sdapi/v1/txt2img, /sdapi/v1/img2img and /sdapi/v1/png-info.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use kiln_models::image::infotext::{InfoText, PNG_KEYWORD};
use kiln_models::image::png::decode_png;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::body::{parse_json, Body};
use super::images::decode_base64;
use super::info::a1111_response;
use super::jobs::{resolve_model, run};
use super::request::GenerationRequest;
use super::{loras, outpaint, random_seed, xyz, AppState};
use crate::error::{ApiError, ApiResult};

pub async fn txt2img(State(state): State<Arc<AppState>>, body: Body) -> ApiResult<Json<Value>> {
    generation(state, body, false).await
}

pub async fn img2img(State(state): State<Arc<AppState>>, body: Body) -> ApiResult<Json<Value>> {
    generation(state, body, true).await
}

async fn generation(state: Arc<AppState>, body: Body, img2img: bool) -> ApiResult<Json<Value>> {
    let mut req: GenerationRequest = parse_json(body)?;
    req.fill_defaults(img2img);
    let checked = req.check(&state.config, &state.settings(), img2img, random_seed())?;
    let field = if req
        .override_settings
        .as_ref()
        .is_some_and(|o| o.contains_key("sd_model_checkpoint"))
    {
        "override_settings.sd_model_checkpoint"
    } else {
        "sd_model_checkpoint"
    };
    let model = resolve_model(&state, &checked.model, field)?;
    let refiner = match &checked.refiner {
        Some((name, switch)) => Some((resolve_model(&state, name, "refiner_checkpoint")?, *switch)),
        None => None,
    };
    let mut checked = checked;
    let outpainting = match req.script_name.as_deref() {
        Some(name) if outpaint::is_mk2(name) => {
            if !img2img {
                return Err(ApiError::invalid(
                    "script_name",
                    "outpainting mk2 is an img2img script",
                ));
            }
            let args = req.script_args.clone().unwrap_or_default();
            Some(outpaint::prepare(
                &mut checked.params,
                &args,
                &state.config,
            )?)
        }
        _ => None,
    };
    checked.params.loras = loras::resolve(&state, &checked.params).await?;
    let params = checked.params.clone();
    let plot = req.script_name.as_deref().is_some_and(xyz::is_xyz);
    let out = if plot {
        let args = req.script_args.clone().unwrap_or_default();
        let plot = xyz::parse_script_args(&args, img2img, &mut random_seed)?;
        let job = xyz::CellJob {
            model,
            refiner,
            controls: checked.controls,
        };
        xyz::run_xyz(&state, plot, checked.params, job).await?
    } else {
        let mut out = run(&state, checked.params, model, refiner, checked.controls).await?;
        if let Some(o) = &outpainting {
            o.blend(&mut out)?;
        }
        out
    };
    // A1111 leaves the (large) input images out of the echo unless asked to include them.
    if img2img && !req.include_init_images.unwrap_or(false) {
        req.init_images = None;
        req.mask = None;
    }
    let parameters = serde_json::to_value(&req).unwrap_or(Value::Null);
    let mut response = a1111_response(parameters, &params, &out, checked.send_images);
    if plot {
        // A1111's plot answers put the grid first and say the images start after it.
        let info = response["info"].as_str().unwrap_or("{}");
        let mut info: Value = serde_json::from_str(info).unwrap_or(Value::Null);
        info["index_of_first_image"] = json!(1);
        response["info"] = Value::from(info.to_string());
    }
    Ok(Json(response))
}

/// GET /sdapi/v1/scripts: the scripts `script_name` may name, as A1111 lists them (lower case).
pub async fn scripts() -> Json<Value> {
    let name = xyz::SCRIPT_NAME;
    Json(json!({"txt2img": [name], "img2img": [name]}))
}

#[derive(Deserialize)]
pub struct PngInfoRequest {
    image: Option<String>,
}

/// The infotext and every text chunk of a PNG, and the infotext parsed into A1111's fields.
pub async fn png_info(body: Body) -> ApiResult<Json<Value>> {
    let req: PngInfoRequest = parse_json(body)?;
    let image = req
        .image
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::unprocessable("image", "image (a base64 PNG) is required"))?;
    let bytes = decode_base64(&image, "image")?;
    let png = decode_png(&bytes).map_err(|e| ApiError::invalid("image", e.to_string()))?;
    let info = png.text(PNG_KEYWORD).unwrap_or("").to_string();
    let items: Map<String, Value> = png
        .text
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    let mut parameters = Map::new();
    if !info.is_empty() {
        let parsed = InfoText::parse(&info);
        parameters.insert("Prompt".into(), parsed.prompt.clone().into());
        parameters.insert(
            "Negative prompt".into(),
            parsed.negative_prompt.clone().into(),
        );
        for (k, v) in parsed.params {
            parameters.insert(k, v.into());
        }
    }
    Ok(Json(
        json!({"info": info, "items": items, "parameters": parameters}),
    ))
}
