//! The axis types: A1111's `axis_options` list (its order is the API's `x_type` index), the ones
//! kiln can plot, and the names `kiln generate --xyz` accepts.

use super::XyzError;

/// An axis kiln can plot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AxisKind {
    Nothing,
    Seed,
    Steps,
    CfgScale,
    /// Prompt search and replace: the first value is searched for, each value replaces it.
    PromptSr,
    Sampler,
    CheckpointName,
    ClipSkip,
    Denoising,
    HiresUpscaler,
}

/// How an axis's values are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    Int,
    Float,
    Text,
}

/// Which generation mode lists an option (A1111's `AxisOptionTxt2Img` / `AxisOptionImg2Img`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Both,
    Txt2Img,
    Img2Img,
}

/// A1111's `axis_options` in its order; `None` where kiln has no such setting.
const OPTIONS: &[(&str, Mode, Option<AxisKind>)] = &[
    ("Nothing", Mode::Both, Some(AxisKind::Nothing)),
    ("Seed", Mode::Both, Some(AxisKind::Seed)),
    ("Var. seed", Mode::Both, None),
    ("Var. strength", Mode::Both, None),
    ("Steps", Mode::Both, Some(AxisKind::Steps)),
    ("Hires steps", Mode::Txt2Img, None),
    ("CFG Scale", Mode::Both, Some(AxisKind::CfgScale)),
    ("Image CFG Scale", Mode::Img2Img, None),
    ("Prompt S/R", Mode::Both, Some(AxisKind::PromptSr)),
    ("Prompt order", Mode::Both, None),
    ("Sampler", Mode::Txt2Img, Some(AxisKind::Sampler)),
    ("Hires sampler", Mode::Txt2Img, None),
    ("Sampler", Mode::Img2Img, Some(AxisKind::Sampler)),
    (
        "Checkpoint name",
        Mode::Both,
        Some(AxisKind::CheckpointName),
    ),
    ("Negative Guidance minimum sigma", Mode::Both, None),
    ("Sigma Churn", Mode::Both, None),
    ("Sigma min", Mode::Both, None),
    ("Sigma max", Mode::Both, None),
    ("Sigma noise", Mode::Both, None),
    ("Schedule type", Mode::Both, None),
    ("Schedule min sigma", Mode::Both, None),
    ("Schedule max sigma", Mode::Both, None),
    ("Schedule rho", Mode::Both, None),
    ("Eta", Mode::Both, None),
    ("Clip skip", Mode::Both, Some(AxisKind::ClipSkip)),
    ("Denoising", Mode::Both, Some(AxisKind::Denoising)),
    ("Initial noise multiplier", Mode::Both, None),
    ("Extra noise", Mode::Both, None),
    (
        "Hires upscaler",
        Mode::Txt2Img,
        Some(AxisKind::HiresUpscaler),
    ),
    ("Cond. Image Mask Weight", Mode::Img2Img, None),
    ("VAE", Mode::Both, None),
    ("Styles", Mode::Both, None),
    ("UniPC Order", Mode::Both, None),
    ("Face restore", Mode::Both, None),
    ("Token merging ratio", Mode::Both, None),
    ("Token merging ratio high-res", Mode::Both, None),
    ("Always discard next-to-last sigma", Mode::Both, None),
    ("SGM noise multiplier", Mode::Both, None),
    ("Refiner checkpoint", Mode::Both, None),
    ("Refiner switch at", Mode::Both, None),
    ("RNG source", Mode::Both, None),
];

/// The labels of A1111's X/Y/Z plot axis dropdown for txt2img or img2img, in its order: the
/// API's `x_type` / `y_type` / `z_type` index into this list.
pub fn axis_labels(img2img: bool) -> Vec<&'static str> {
    mode_options(img2img).map(|(label, _)| label).collect()
}

fn mode_options(img2img: bool) -> impl Iterator<Item = (&'static str, Option<AxisKind>)> {
    OPTIONS
        .iter()
        .filter(move |(_, mode, _)| match mode {
            Mode::Both => true,
            Mode::Txt2Img => !img2img,
            Mode::Img2Img => img2img,
        })
        .map(|&(label, _, kind)| (label, kind))
}

impl AxisKind {
    /// A1111's label.
    pub fn label(self) -> &'static str {
        match self {
            AxisKind::Nothing => "Nothing",
            AxisKind::Seed => "Seed",
            AxisKind::Steps => "Steps",
            AxisKind::CfgScale => "CFG Scale",
            AxisKind::PromptSr => "Prompt S/R",
            AxisKind::Sampler => "Sampler",
            AxisKind::CheckpointName => "Checkpoint name",
            AxisKind::ClipSkip => "Clip skip",
            AxisKind::Denoising => "Denoising",
            AxisKind::HiresUpscaler => "Hires upscaler",
        }
    }

    pub fn value_type(self) -> ValueType {
        match self {
            AxisKind::Seed | AxisKind::Steps | AxisKind::ClipSkip => ValueType::Int,
            AxisKind::CfgScale | AxisKind::Denoising => ValueType::Float,
            AxisKind::Nothing
            | AxisKind::PromptSr
            | AxisKind::Sampler
            | AxisKind::CheckpointName
            | AxisKind::HiresUpscaler => ValueType::Text,
        }
    }

    /// The axis at `index` of A1111's txt2img or img2img list (the API's `x_type`); an option
    /// kiln cannot plot is an error naming its label.
    pub fn from_index(index: i64, img2img: bool) -> Result<AxisKind, XyzError> {
        let options: Vec<_> = mode_options(img2img).collect();
        let (label, kind) = usize::try_from(index)
            .ok()
            .and_then(|i| options.get(i).copied())
            .ok_or_else(|| XyzError::UnknownAxis(format!("index {index}")))?;
        kind.ok_or_else(|| XyzError::UnsupportedAxis(label.to_string()))
    }

    /// An A1111 label (any case) or a short name: seed, steps, cfg, sampler, prompt (Prompt S/R),
    /// denoising, checkpoint / model, clip-skip, hires-upscaler, nothing.
    pub fn from_name(name: &str) -> Result<AxisKind, XyzError> {
        let n = name.trim().to_lowercase();
        let short = match n.replace(['_', ' '], "-").as_str() {
            "seed" => Some(AxisKind::Seed),
            "steps" => Some(AxisKind::Steps),
            "cfg" | "cfg-scale" => Some(AxisKind::CfgScale),
            "sampler" => Some(AxisKind::Sampler),
            "prompt" | "prompt-s/r" | "prompt-sr" => Some(AxisKind::PromptSr),
            "denoising" | "denoising-strength" | "strength" => Some(AxisKind::Denoising),
            "checkpoint" | "model" | "checkpoint-name" => Some(AxisKind::CheckpointName),
            "clip-skip" => Some(AxisKind::ClipSkip),
            "hires-upscaler" => Some(AxisKind::HiresUpscaler),
            "nothing" => Some(AxisKind::Nothing),
            _ => None,
        };
        if let Some(kind) = short {
            return Ok(kind);
        }
        match OPTIONS
            .iter()
            .find(|(label, _, _)| label.to_lowercase() == n)
        {
            Some((_, _, Some(kind))) => Ok(*kind),
            Some((label, _, None)) => Err(XyzError::UnsupportedAxis(label.to_string())),
            None => Err(XyzError::UnknownAxis(name.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt2img_indices_are_a1111s() {
        let labels = axis_labels(false);
        assert_eq!(labels.len(), 38);
        assert_eq!(
            labels[..7],
            [
                "Nothing",
                "Seed",
                "Var. seed",
                "Var. strength",
                "Steps",
                "Hires steps",
                "CFG Scale"
            ]
        );
        assert_eq!(AxisKind::from_index(4, false).unwrap(), AxisKind::Steps);
        assert_eq!(AxisKind::from_index(6, false).unwrap(), AxisKind::CfgScale);
        assert_eq!(AxisKind::from_index(7, false).unwrap(), AxisKind::PromptSr);
        assert_eq!(AxisKind::from_index(9, false).unwrap(), AxisKind::Sampler);
        assert_eq!(
            AxisKind::from_index(11, false).unwrap(),
            AxisKind::CheckpointName
        );
        assert_eq!(
            AxisKind::from_index(23, false).unwrap(),
            AxisKind::Denoising
        );
        assert_eq!(
            AxisKind::from_index(26, false).unwrap(),
            AxisKind::HiresUpscaler
        );
        assert_eq!(labels[37], "RNG source");
        let e = AxisKind::from_index(2, false).unwrap_err().to_string();
        assert!(e.contains("Var. seed"), "{e}");
        assert!(AxisKind::from_index(38, false).is_err());
        assert!(AxisKind::from_index(-1, false).is_err());
    }

    #[test]
    fn img2img_indices_are_a1111s() {
        let labels = axis_labels(true);
        assert_eq!(labels.len(), 37);
        assert_eq!(labels[6], "Image CFG Scale");
        assert_eq!(AxisKind::from_index(9, true).unwrap(), AxisKind::Sampler);
        assert_eq!(AxisKind::from_index(22, true).unwrap(), AxisKind::Denoising);
        assert_eq!(labels[25], "Cond. Image Mask Weight");
        assert!(AxisKind::from_index(26, true).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(AxisKind::from_name("CFG").unwrap(), AxisKind::CfgScale);
        assert_eq!(
            AxisKind::from_name("cfg scale").unwrap(),
            AxisKind::CfgScale
        );
        assert_eq!(
            AxisKind::from_name("Prompt S/R").unwrap(),
            AxisKind::PromptSr
        );
        assert_eq!(
            AxisKind::from_name("model").unwrap(),
            AxisKind::CheckpointName
        );
        assert_eq!(
            AxisKind::from_name("Checkpoint name").unwrap(),
            AxisKind::CheckpointName
        );
        assert_eq!(
            AxisKind::from_name("hires-upscaler").unwrap(),
            AxisKind::HiresUpscaler
        );
        let e = AxisKind::from_name("eta").unwrap_err().to_string();
        assert!(e.contains("Eta"), "{e}");
        let e = AxisKind::from_name("colour").unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
    }
}
