//! `kiln generate --control MODEL:IMAGE[:WEIGHT]`: ControlNet units from the command line. The
//! images are read and preprocessed before the base model loads (a bad file fails fast); the
//! ControlNets load after it, since a single file takes its config from the base UNet.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use kiln_models::image::{read_image, RgbImage};
use kiln_models::pipeline::{
    open_controlnet, sha256_file, ControlMode, ControlUnit, StableDiffusion,
};
use kiln_models::preprocess::{processor_res, PreprocessorSettings, ResizeMode};
use kiln_nn::weights::WeightType;

/// One `--control` before its model is loaded.
pub struct ControlSpec {
    arg: String,
    model: PathBuf,
    image: RgbImage,
    module: String,
    settings: PreprocessorSettings,
    weight: f32,
}

/// `MODEL:IMAGE[:WEIGHT]`: a trailing part that parses as a number is the weight.
pub fn parse_control(arg: &str) -> Result<(PathBuf, PathBuf, f32)> {
    let mut parts: Vec<&str> = arg.split(':').collect();
    let weight = match parts.last().map(|w| w.parse::<f32>()) {
        Some(Ok(w)) if parts.len() >= 3 => {
            parts.pop();
            w
        }
        _ => 1.0,
    };
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        bail!("--control {arg}: expected MODEL:IMAGE[:WEIGHT]");
    }
    if !weight.is_finite() {
        bail!("--control {arg}: the weight {weight} is not a finite number");
    }
    let model = PathBuf::from(parts[0]);
    let image = PathBuf::from(parts[1..].join(":"));
    Ok((model, image, weight))
}

/// What `--control-start/end`, `--control-mode` and `--control-resize` set for every unit.
#[derive(Clone, Copy, Debug)]
pub struct UnitSettings {
    pub window: (f32, f32),
    pub mode: ControlMode,
    pub resize: ResizeMode,
}

/// `--control-mode`: the A1111 extension's control modes by a short name (or its own name).
pub fn parse_control_mode(value: &str) -> Result<ControlMode> {
    Ok(match value {
        "balanced" => ControlMode::Balanced,
        "prompt" => ControlMode::Prompt,
        "controlnet" => ControlMode::ControlNet,
        other => ControlMode::from_a1111(other).with_context(|| {
            format!(
                "--control-mode {other}: expected balanced, prompt (\"My prompt is more \
                 important\") or controlnet (\"ControlNet is more important\")"
            )
        })?,
    })
}

/// `--control-resize`: the A1111 extension's resize modes by a short name (or its own name).
pub fn parse_control_resize(value: &str) -> Result<ResizeMode> {
    Ok(match value {
        "just" => ResizeMode::JustResize,
        "crop" => ResizeMode::CropAndResize,
        "fill" => ResizeMode::ResizeAndFill,
        other => ResizeMode::from_a1111(other).with_context(|| {
            format!(
                "--control-resize {other}: expected just (\"Just Resize\"), crop (\"Crop and \
                 Resize\") or fill (\"Resize and Fill\")"
            )
        })?,
    })
}

/// Every `--control` with its `--control-pre` (one per --control, or none for all: "none"), the
/// preprocessors run at `--control-res` (`None`: their default).
pub fn read_controls(
    controls: &[String],
    pre: &[String],
    res: Option<u32>,
) -> Result<Vec<ControlSpec>> {
    let raw_res = res.map(f64::from);
    let res = processor_res(raw_res).context("--control-res")?;
    if !pre.is_empty() && pre.len() != controls.len() {
        bail!(
            "--control-pre was given {} times for {} --control: give one per --control, in order",
            pre.len(),
            controls.len()
        );
    }
    let mut out = Vec::with_capacity(controls.len());
    for (i, arg) in controls.iter().enumerate() {
        let (model, image, weight) = parse_control(arg)?;
        if !model.exists() {
            bail!(
                "--control {arg}: no ControlNet file or folder {}",
                model.display()
            );
        }
        let module = pre.get(i).map_or("none", String::as_str);
        let settings = PreprocessorSettings::settle(module, raw_res, None, None, false)
            .with_context(|| format!("--control-pre {module}"))?;
        let preprocessor = settings
            .preprocessor(module)
            .with_context(|| format!("--control-pre {module}"))?;
        let image = read_image(&image)
            .with_context(|| format!("--control {arg}: the control image {}", image.display()))?;
        let image = preprocessor
            .apply_at(&image, res)
            .with_context(|| format!("--control-pre {module}"))?;
        out.push(ControlSpec {
            arg: arg.clone(),
            model,
            image,
            module: module.to_string(),
            settings,
            weight,
        });
    }
    Ok(out)
}

/// A ControlNet's display name (file stem or folder name) and its extension-style short hash.
pub fn name_and_hash(path: &Path) -> Result<(String, String)> {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = if path.is_dir() {
        let f = path.join("diffusion_pytorch_model.safetensors");
        if f.exists() {
            f
        } else {
            path.join("diffusion_pytorch_model.fp16.safetensors")
        }
    } else {
        path.to_path_buf()
    };
    let hash = sha256_file(&file)?;
    Ok((name, hash[..8].to_string()))
}

/// Loads each unit's ControlNet for `model` as its UNet loaded (device, dtype, `weight_type`,
/// streaming; zeros for the plan's zero-weight model), checking that it fits the base.
pub fn load_controls(
    specs: &[ControlSpec],
    model: &StableDiffusion,
    weight_type: WeightType,
    settings: UnitSettings,
) -> Result<Vec<ControlUnit>> {
    let (start, end) = settings.window;
    specs
        .iter()
        .map(|s| {
            let (name, hash) = name_and_hash(&s.model)?;
            let net = open_controlnet(&s.model, &name, model, weight_type.quantization())
                .with_context(|| format!("--control {}", s.arg))?;
            Ok(ControlUnit {
                model: Arc::new(net),
                name,
                hash: Some(hash),
                module: s.module.clone(),
                settings: s.settings.clone(),
                image: s.image.clone(),
                resize: settings.resize,
                scale: s.weight,
                guidance_start: start,
                guidance_end: end,
                mode: settings.mode,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_args_parse() {
        let (m, i, w) = parse_control("cn:edges.png:0.5").unwrap();
        assert_eq!(
            (m.to_str(), i.to_str(), w),
            (Some("cn"), Some("edges.png"), 0.5)
        );
        let (_, i, w) = parse_control("cn:edges.png").unwrap();
        assert_eq!((i.to_str(), w), (Some("edges.png"), 1.0));
        assert!(parse_control("cn").is_err());
        assert!(parse_control("cn::1").is_err());
    }

    #[test]
    fn modes_parse_by_short_and_a1111_names() {
        assert_eq!(parse_control_mode("prompt").unwrap(), ControlMode::Prompt);
        assert_eq!(
            parse_control_mode("ControlNet is more important").unwrap(),
            ControlMode::ControlNet
        );
        let e = format!("{:#}", parse_control_mode("loud").unwrap_err());
        assert!(e.contains("--control-mode loud"), "{e}");
        assert_eq!(
            parse_control_resize("fill").unwrap(),
            ResizeMode::ResizeAndFill
        );
        assert_eq!(
            parse_control_resize("Just Resize").unwrap(),
            ResizeMode::JustResize
        );
        assert!(parse_control_resize("stretch").is_err());
    }
}
