//! A1111's upscalers: GET /sdapi/v1/upscalers ("None", "Lanczos", "Nearest", then each
//! `.safetensors` of `--upscaler-dir` under its file stem) and POST
//! /sdapi/v1/extra-single-image (the Extras tab's upscale, run by the worker on its device).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use kiln_models::upscale::extras::ExtrasResize;
use kiln_models::upscale::{Upscaler, UpscalerModel};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::body::{parse_json, Body};
use super::images::{decode_base64_image, encode_base64};
use super::jobs::{queue_full, CancelOnDrop};
use super::AppState;
use crate::error::{ApiError, ApiResult};
use crate::queue::{UpscaleJob, UpscalerChoice, Work};

/// An upscaled image may hold this many times `--max-pixels` (a x4 model makes 16 times its input).
const OUTPUT_PIXELS_FACTOR: usize = 16;

/// The `.safetensors` files of the folder by stem, sorted by name.
pub(crate) fn upscaler_files(dir: Option<&Path>) -> Vec<(String, PathBuf)> {
    let Some(dir) = dir else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
        })
        .filter_map(|p| Some((p.file_stem()?.to_str()?.to_string(), p)))
        .collect();
    files.sort();
    files
}

pub async fn list(State(state): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    let dir = state.config.upscaler_dir.clone();
    let files = tokio::task::spawn_blocking(move || {
        upscaler_files(dir.as_deref())
            .into_iter()
            .map(|(name, path)| {
                let arch = UpscalerModel::probe(&path);
                if let Err(e) = &arch {
                    eprintln!("kiln serve: upscaler {}: {e}", path.display());
                }
                (name, path, arch.ok())
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    // A1111 lists its built-in upscalers with its default scale, 4, and no model.
    let mut list: Vec<Value> = Upscaler::BUILTIN
        .iter()
        .map(|name| {
            json!({"name": name, "model_name": null, "model_path": null, "model_url": null,
                   "scale": 4})
        })
        .collect();
    list.extend(files.into_iter().filter_map(|(name, path, arch)| {
        let arch = arch?;
        Some(json!({
            "name": name,
            "model_name": arch.family(),
            "model_path": path.to_string_lossy(),
            "model_url": null,
            "scale": arch.scale(),
        }))
    }));
    Ok(Json(Value::Array(list)))
}

/// A1111's `ExtrasSingleImageRequest` (its defaults in the comments); the face restorers are
/// accepted and must be off.
#[derive(Deserialize, Serialize, Default)]
pub struct ExtrasRequest {
    image: Option<String>,
    /// 0: by `upscaling_resize`; 1: to `upscaling_resize_w` x `upscaling_resize_h`. Default 0.
    resize_mode: Option<u32>,
    show_extras_results: Option<bool>,
    gfpgan_visibility: Option<f32>,
    codeformer_visibility: Option<f32>,
    codeformer_weight: Option<f32>,
    /// Default 2, in [1, 8].
    upscaling_resize: Option<f64>,
    /// Default 512.
    upscaling_resize_w: Option<usize>,
    /// Default 512.
    upscaling_resize_h: Option<usize>,
    /// Default true.
    upscaling_crop: Option<bool>,
    /// Default "None".
    upscaler_1: Option<String>,
    /// Default "None".
    upscaler_2: Option<String>,
    /// Default 0, in [0, 1].
    extras_upscaler_2_visibility: Option<f32>,
    upscale_first: Option<bool>,
}

/// The upscaler `name` means: `None` for "None", a built-in, or a file of the folder.
fn resolve(state: &AppState, name: &str, field: &str) -> ApiResult<Option<UpscalerChoice>> {
    if name.is_empty() || name.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    if let Some(builtin) = Upscaler::builtin(name).and_then(|u| u.builtin_name()) {
        return Ok(Some(UpscalerChoice::Builtin(builtin)));
    }
    let files = upscaler_files(state.config.upscaler_dir.as_deref());
    let found = files.iter().find(|(stem, _)| stem == name).or_else(|| {
        files
            .iter()
            .find(|(stem, _)| stem.eq_ignore_ascii_case(name))
    });
    if let Some((stem, path)) = found {
        return Ok(Some(UpscalerChoice::File {
            name: stem.clone(),
            path: path.clone(),
        }));
    }
    let mut names: Vec<String> = Upscaler::BUILTIN.iter().map(|s| s.to_string()).collect();
    names.extend(files.into_iter().map(|(n, _)| n));
    let hint = if state.config.upscaler_dir.is_none() {
        " (model upscalers need kiln serve --upscaler-dir DIR)"
    } else {
        ""
    };
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "{field}: no upscaler named {name:?}; this server has: {}{hint}",
            names.join(", ")
        ),
    )
    .field(field))
}

fn check(state: &AppState, req: &ExtrasRequest) -> ApiResult<UpscaleJob> {
    for (field, v) in [
        ("gfpgan_visibility", req.gfpgan_visibility),
        ("codeformer_visibility", req.codeformer_visibility),
    ] {
        if v.is_some_and(|v| v != 0.0) {
            return Err(ApiError::invalid(
                field,
                format!("{field}: face restoration is not supported by kiln; leave it at 0"),
            ));
        }
    }
    let resize = match req.resize_mode.unwrap_or(0) {
        0 => {
            let by = req.upscaling_resize.unwrap_or(2.0);
            if !(1.0..=8.0).contains(&by) {
                return Err(ApiError::invalid(
                    "upscaling_resize",
                    format!("upscaling_resize must be between 1 and 8, got {by}"),
                ));
            }
            ExtrasResize::By(by)
        }
        1 => {
            let (width, height) = (
                req.upscaling_resize_w.unwrap_or(512),
                req.upscaling_resize_h.unwrap_or(512),
            );
            for (field, v) in [
                ("upscaling_resize_w", width),
                ("upscaling_resize_h", height),
            ] {
                if v == 0 {
                    return Err(ApiError::invalid(
                        field,
                        format!("{field} must be at least 1"),
                    ));
                }
            }
            ExtrasResize::To {
                width,
                height,
                crop: req.upscaling_crop.unwrap_or(true),
            }
        }
        other => {
            return Err(ApiError::invalid(
                "resize_mode",
                format!("resize_mode must be 0 (scale by) or 1 (scale to), got {other}"),
            ))
        }
    };
    let visibility = req.extras_upscaler_2_visibility.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&visibility) {
        return Err(ApiError::invalid(
            "extras_upscaler_2_visibility",
            format!("extras_upscaler_2_visibility must be between 0 and 1, got {visibility}"),
        ));
    }
    let first = resolve(
        state,
        req.upscaler_1.as_deref().unwrap_or("None"),
        "upscaler_1",
    )?;
    let second = resolve(
        state,
        req.upscaler_2.as_deref().unwrap_or("None"),
        "upscaler_2",
    )?;
    let image = req
        .image
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::unprocessable("image", "image (a base64 image) is required"))?;
    let image = decode_base64_image(image, "image")?;
    let (w, h) = match resize {
        ExtrasResize::By(s) => (
            (image.width as f64 * s) as usize,
            (image.height as f64 * s) as usize,
        ),
        ExtrasResize::To { width, height, .. } => (width, height),
    };
    let limit = state.config.max_pixels.saturating_mul(OUTPUT_PIXELS_FACTOR);
    if first.is_some() && w.saturating_mul(h) > limit {
        return Err(ApiError::invalid(
            "upscaling_resize",
            format!(
                "a {w}x{h} result is over this server's limit of {limit} pixels ({OUTPUT_PIXELS_FACTOR} \
                 times --max-pixels)"
            ),
        ));
    }
    Ok(UpscaleJob {
        image,
        resize,
        first,
        second: second.map(|s| (s, visibility)),
    })
}

/// Python's `html.escape`, as A1111's `plaintext_to_html` applies it line by line.
fn plaintext_to_html(text: &str) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#x27;")
    };
    let lines: Vec<String> = text.split('\n').map(escape).collect();
    format!("<p>{}</p>", lines.join("<br>\n"))
}

pub async fn extra_single_image(
    State(state): State<Arc<AppState>>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let req: ExtrasRequest = parse_json(body)?;
    let checker = state.clone();
    // Decoding a large image is slow: off the async threads.
    let job = tokio::task::spawn_blocking(move || check(&checker, &req).map(|j| (j, req)))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let (job, req) = job?;
    let (reply, result) = oneshot::channel();
    let id = state
        .queue
        .submit(Work::Upscale {
            job: Box::new(job),
            reply,
        })
        .map_err(|e| queue_full(&state, e))?;
    let mut guard = CancelOnDrop::new(&state, id);
    let out = result.await;
    guard.armed = false;
    let out = out.unwrap_or_else(|_| {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        ))
    })?;
    let image = if req.show_extras_results.unwrap_or(true) {
        Value::from(encode_base64(&out.png))
    } else {
        Value::Null
    };
    Ok(Json(json!({
        "html_info": plaintext_to_html(&out.infotext),
        "image": image,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_info_is_escaped_like_python() {
        assert_eq!(
            plaintext_to_html("a: 1, b: <x>\n'q' & \"r\""),
            "<p>a: 1, b: &lt;x&gt;<br>\n&#x27;q&#x27; &amp; &quot;r&quot;</p>"
        );
    }
}
