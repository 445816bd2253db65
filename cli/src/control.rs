//! `kiln generate --control MODEL:IMAGE[:WEIGHT]`: ControlNet units from the command line. The
//! images are read and preprocessed before the base model loads (a bad file fails fast); the
//! ControlNets load after it, since a single file takes its config from the base UNet.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use kiln_models::image::{read_image, RgbImage};
use kiln_models::pipeline::{open_controlnet, sha256_file, ControlUnit, StableDiffusion};
use kiln_models::preprocess::Preprocessor;
use kiln_nn::weights::WeightType;

/// One `--control` before its model is loaded.
pub struct ControlSpec {
    arg: String,
    model: PathBuf,
    image: RgbImage,
    module: String,
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

/// Every `--control` with its `--control-pre` (one per --control, or none for all: "none").
pub fn read_controls(controls: &[String], pre: &[String]) -> Result<Vec<ControlSpec>> {
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
        let preprocessor =
            Preprocessor::from_name(module).with_context(|| format!("--control-pre {module}"))?;
        let image = read_image(&image)
            .with_context(|| format!("--control {arg}: the control image {}", image.display()))?;
        let image = preprocessor
            .apply(&image)
            .with_context(|| format!("--control-pre {module}"))?;
        out.push(ControlSpec {
            arg: arg.clone(),
            model,
            image,
            module: module.to_string(),
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
    (start, end): (f32, f32),
    guess_mode: bool,
) -> Result<Vec<ControlUnit>> {
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
                image: s.image.clone(),
                scale: s.weight,
                guidance_start: start,
                guidance_end: end,
                guess_mode,
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
}
