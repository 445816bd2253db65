//! A1111's hires-fix fields of a txt2img request (`enable_hr`, `hr_scale`, `hr_resize_x/y`,
//! `hr_upscaler`, `hr_second_pass_steps`, `denoising_strength`, `hr_prompt`,
//! `hr_negative_prompt`, `hr_sampler_name`) as the pipeline's `HiresFix`.

use kiln_models::pipeline::{hires_size, GenerationParams, HiresFix, HiresSize, HiresUpscaler};
use kiln_models::schedulers::SamplerSpec;
use kiln_models::upscale::FileUpscaler;
use std::sync::Arc;

use super::request::GenerationRequest;
use super::upscalers::upscaler_files;
use crate::config::ServerConfig;
use crate::error::{ApiError, ApiResult};

/// A1111's web UI default for the second pass's denoising strength.
const DEFAULT_DENOISING: f64 = 0.7;

/// The hires fix `r` asks for on top of `params` (the first pass), or `None` without `enable_hr`.
pub fn hires(
    r: &GenerationRequest,
    params: &GenerationParams,
    config: &ServerConfig,
) -> ApiResult<Option<HiresFix>> {
    if r.enable_hr != Some(true) {
        return Ok(None);
    }
    if params.init.is_some() {
        return Err(ApiError::invalid(
            "enable_hr",
            "hires fix is a txt2img feature (img2img has no second pass)",
        ));
    }
    let (x, y) = (r.hr_resize_x.unwrap_or(0), r.hr_resize_y.unwrap_or(0));
    if x < 0 || y < 0 {
        return Err(ApiError::invalid(
            "hr_resize_x",
            format!("hr_resize_x / hr_resize_y must be >= 0, got {x} / {y}"),
        ));
    }
    let size = if (x, y) == (0, 0) {
        HiresSize::Scale(r.hr_scale.unwrap_or(2.0))
    } else {
        HiresSize::Resize(x as usize, y as usize)
    };
    let field = if matches!(size, HiresSize::Scale(_)) {
        "hr_scale"
    } else {
        "hr_resize_x"
    };
    let (width, height) = hires_size((params.width, params.height), size, 8)
        .map_err(|e| ApiError::invalid(field, e.to_string()))?;
    if width * height > config.max_pixels {
        return Err(ApiError::invalid(
            field,
            format!(
                "the hires fix makes {width}x{height}, {} pixels; this server allows at most {} \
                 (--max-pixels)",
                width * height,
                config.max_pixels
            ),
        ));
    }
    let name = r.hr_upscaler.as_deref().unwrap_or("Latent");
    let upscaler = match HiresUpscaler::builtin(name) {
        Some(builtin) => builtin,
        None => {
            // A model of --upscaler-dir, by file stem as /sdapi/v1/upscalers lists it.
            let files = upscaler_files(config.upscaler_dir.as_deref());
            let Some((_, path)) = files
                .iter()
                .find(|(stem, _)| stem.eq_ignore_ascii_case(name))
            else {
                let mut known = HiresUpscaler::builtin_names();
                known.extend(files.iter().map(|(n, _)| n.as_str()));
                return Err(ApiError::invalid(
                    "hr_upscaler",
                    format!("unknown hr_upscaler {name:?} (known: {})", known.join(", ")),
                ));
            };
            let file = FileUpscaler::new(path.clone())
                .map_err(|e| ApiError::invalid("hr_upscaler", e.to_string()))?;
            HiresUpscaler::Image(Arc::new(file))
        }
    };
    let steps = r.hr_second_pass_steps.unwrap_or(0);
    if !(0..=1000).contains(&steps) {
        return Err(ApiError::invalid(
            "hr_second_pass_steps",
            format!("hr_second_pass_steps {steps} must be between 0 and 1000"),
        ));
    }
    let d = r.denoising_strength.unwrap_or(DEFAULT_DENOISING);
    if !(d > 0.0 && d <= 1.0) {
        return Err(ApiError::invalid(
            "denoising_strength",
            format!("denoising_strength {d} must be in (0, 1] for the hires fix"),
        ));
    }
    // A1111: an empty hr_prompt / hr_sampler_name means "as the first pass".
    let non_empty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let sampler = match non_empty(&r.hr_sampler_name) {
        Some(name) if name != "Use same sampler" => Some(
            SamplerSpec::parse(&name)
                .map_err(|e| ApiError::invalid("hr_sampler_name", e.to_string()))?,
        ),
        _ => None,
    };
    Ok(Some(HiresFix {
        upscaler,
        width,
        height,
        steps: steps as usize,
        denoising_strength: d,
        prompt: non_empty(&r.hr_prompt),
        negative_prompt: non_empty(&r.hr_negative_prompt),
        sampler,
        size_label: size,
    }))
}
