//! ControlNets for the A1111 ControlNet extension's API: the models of `--controlnet-dir` (diffusers
//! folders and `.safetensors` files, listed as the extension lists them, `name [hash]`), and the
//! units of `alwayson_scripts.controlnet.args` checked into [`ControlRequest`]s before queueing.
//! The worker loads the models (it owns the device) and turns requests into `ControlUnit`s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use kiln_models::image::RgbImage;
use kiln_models::pipeline::{sha256_file, ControlMode};
use kiln_models::preprocess::{
    pixel_perfect_resolution, processor_res, PreprocessorSettings, ResizeMode,
};
use serde_json::Value;

use crate::api::images::decode_base64_image;
use crate::error::{ApiError, ApiResult};

/// One unit, checked, its image decoded and preprocessed.
#[derive(Clone, Debug)]
pub struct ControlRequest {
    /// `alwayson_scripts.controlnet.args[i]`, for messages.
    pub field: String,
    pub name: String,
    pub path: PathBuf,
    pub module: String,
    pub settings: PreprocessorSettings,
    pub image: RgbImage,
    pub weight: f32,
    pub guidance_start: f32,
    pub guidance_end: f32,
    pub mode: ControlMode,
    pub resize: ResizeMode,
}

/// Every ControlNet in `dir` by name (file stem or folder name), sorted.
pub fn models(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            (p.is_dir() && p.join("config.json").is_file())
                || p.extension().is_some_and(|e| e == "safetensors")
        })
        .filter_map(|p| Some((p.file_stem()?.to_string_lossy().into_owned(), p)))
        .collect();
    out.sort();
    out
}

/// The weights file whose SHA-256 names a ControlNet (the file, or a folder's weights).
fn hash_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        let f = path.join("diffusion_pytorch_model.safetensors");
        if f.exists() {
            return f;
        }
        return path.join("diffusion_pytorch_model.fp16.safetensors");
    }
    path.to_path_buf()
}

/// The extension's short hash: 8 hex digits of the SHA-256, cached per path (files are large).
pub fn short_hash(path: &Path) -> Option<String> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, String>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(h) = cache.lock().ok()?.get(path) {
        return Some(h.clone());
    }
    let hash = sha256_file(&hash_file(path)).ok()?[..8].to_string();
    cache.lock().ok()?.insert(path.to_path_buf(), hash.clone());
    Some(hash)
}

/// `{"model_list": ["name [hash]", ...]}` entries.
pub fn model_list(dir: Option<&Path>) -> Vec<String> {
    let Some(dir) = dir else {
        return Vec::new();
    };
    models(dir)
        .into_iter()
        .map(|(name, path)| match short_hash(&path) {
            Some(h) => format!("{name} [{h}]"),
            None => name,
        })
        .collect()
}

/// The units of `alwayson_scripts.controlnet` (`{"args": [unit, ...]}`) for a generation of
/// `target` (width, height; a hires fix's first pass); disabled units are skipped. Runs on a
/// blocking thread (images are decoded here).
pub fn check_units(
    script: &Value,
    dir: Option<&Path>,
    target: (usize, usize),
) -> ApiResult<Vec<ControlRequest>> {
    const ROOT: &str = "alwayson_scripts.controlnet";
    let args = script
        .get("args")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid(ROOT, "expected {\"args\": [unit, ...]}"))?;
    let mut out = Vec::new();
    for (i, unit) in args.iter().enumerate() {
        let field = format!("{ROOT}.args[{i}]");
        let f = |k: &str| format!("{field}.{k}");
        if unit.get("enabled").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let text = |k: &str| unit.get(k).and_then(Value::as_str);
        let num = |k: &str, default: f64| -> ApiResult<f32> {
            match unit.get(k) {
                None | Some(Value::Null) => Ok(default as f32),
                Some(v) => v
                    .as_f64()
                    .filter(|x| x.is_finite())
                    .map(|x| x as f32)
                    .ok_or_else(|| ApiError::invalid(&f(k), format!("{k} must be a number"))),
            }
        };
        let model = text("model").unwrap_or("None");
        if model == "None" || model.is_empty() {
            return Err(ApiError::invalid(&f("model"), "no ControlNet model given"));
        }
        // The extension's names carry the hash: "control_v11p_sd15_canny [d14c016b]".
        let name = model.split(" [").next().unwrap_or(model).to_string();
        let Some(dir) = dir else {
            return Err(ApiError::invalid(
                &f("model"),
                "this server has no ControlNets: start kiln serve with --controlnet-dir DIR",
            ));
        };
        let path = models(dir)
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p)
            .ok_or_else(|| {
                ApiError::invalid(
                    &f("model"),
                    format!("unknown ControlNet {model:?}: GET /controlnet/model_list lists them"),
                )
            })?;
        // Newer versions send {"image": b64, "mask": b64}; older ones the base64 string.
        let image = match unit.get("image").or_else(|| unit.get("input_image")) {
            Some(Value::String(s)) => decode_base64_image(s, &f("image"))?,
            Some(Value::Object(o)) => match o.get("image") {
                Some(Value::String(s)) => decode_base64_image(s, &f("image.image"))?,
                _ => {
                    return Err(ApiError::invalid(
                        &f("image"),
                        "expected {\"image\": base64}",
                    ))
                }
            },
            _ => {
                return Err(ApiError::invalid(
                    &f("image"),
                    "a ControlNet unit needs a control image (base64)",
                ))
            }
        };
        let module = text("module").unwrap_or("none").to_string();
        let raw_res = match unit.get("processor_res") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_f64().ok_or_else(|| {
                ApiError::invalid(&f("processor_res"), "processor_res must be a number")
            })?),
        };
        let res = processor_res(raw_res)
            .map_err(|e| ApiError::invalid(&f("processor_res"), e.to_string()))?;
        let pixel_perfect = match unit.get("pixel_perfect") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ApiError::invalid(
                    &f("pixel_perfect"),
                    "pixel_perfect must be true or false",
                ))
            }
        };
        // The extension's sliders (canny's low / high thresholds, threshold's and
        // scribble_xdog's threshold): outside the module's range, -1 among them, the default.
        let slider = |k: &str| unit.get(k).and_then(Value::as_f64);
        let settings = PreprocessorSettings::settle(
            &module,
            raw_res,
            slider("threshold_a"),
            slider("threshold_b"),
            pixel_perfect,
        )
        .map_err(|e| ApiError::invalid(&f("module"), e.to_string()))?;
        let pre = settings
            .preprocessor(&module)
            .map_err(|e| ApiError::invalid(&f("module"), e.to_string()))?;
        let mode = a1111_choice(
            unit,
            "control_mode",
            &f,
            ControlMode::names(),
            ControlMode::from_a1111,
        )?
        .unwrap_or_default();
        // Absent, the extension's default: "Crop and Resize".
        let resize = a1111_choice(
            unit,
            "resize_mode",
            &f,
            ResizeMode::names(),
            ResizeMode::from_a1111,
        )?
        .unwrap_or_default();
        let (start, end) = (num("guidance_start", 0.0)?, num("guidance_end", 1.0)?);
        if !(0.0..=1.0).contains(&start) || !(0.0..=1.0).contains(&end) || start > end {
            return Err(ApiError::invalid(
                &f("guidance_start"),
                format!("guidance_start {start} and guidance_end {end} must satisfy 0 <= start <= end <= 1"),
            ));
        }
        let weight = num("weight", 1.0)?;
        // "Pixel Perfect": the resolution the output's own pixel density gives, in place of
        // processor_res (which the extension still checks and records, as here).
        let res = if pixel_perfect {
            pixel_perfect_resolution((image.width, image.height), target, resize)
        } else {
            res
        };
        // The preprocessor last, after every cheap check.
        let image = pre
            .apply_at(&image, res)
            .map_err(|e| ApiError::invalid(&f("module"), e.to_string()))?;
        out.push(ControlRequest {
            field: field.clone(),
            name,
            path,
            module,
            settings,
            image,
            weight,
            guidance_start: start,
            guidance_end: end,
            mode,
            resize,
        });
    }
    Ok(out)
}

/// One of the extension's enum fields, by name or index; None when absent.
fn a1111_choice<T>(
    unit: &Value,
    key: &str,
    field: &dyn Fn(&str) -> String,
    names: &[&str],
    parse: impl Fn(&str) -> Option<T>,
) -> ApiResult<Option<T>> {
    let given = match unit.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    match parse(&given) {
        Some(v) => Ok(Some(v)),
        None => Err(ApiError::invalid(
            &field(key),
            format!(
                "{key} {given:?} is not one of {} (or their index, 0 to {})",
                names
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                names.len() - 1
            ),
        )),
    }
}
