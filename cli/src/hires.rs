//! `kiln generate`'s hires-fix flags (A1111's txt2img `enable_hr` fields).

use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use kiln_models::pipeline::{hires_size, HiresFix, HiresSize, HiresUpscaler};
use kiln_models::schedulers::SamplerSpec;
use kiln_models::upscale::FileUpscaler;

#[derive(clap::Args, Clone, Debug, Default)]
pub struct HiresArgs {
    /// Hires fix: generate, upscale by this factor, then refine with an img2img pass (A1111's
    /// `hr_scale`).
    #[arg(
        long,
        value_name = "FACTOR",
        allow_negative_numbers = true,
        help_heading = "Hires fix"
    )]
    hr_scale: Option<f64>,
    /// Hires fix to this size instead of a factor (`hr_resize_x` x `hr_resize_y`; a 0 keeps the
    /// aspect ratio).
    #[arg(long, value_name = "WxH", help_heading = "Hires fix")]
    hr_resize: Option<String>,
    /// The upscaler between the passes: Latent, "Latent (antialiased)", "Latent (bicubic)",
    /// "Latent (bicubic antialiased)", "Latent (nearest)", "Latent (nearest-exact)", Lanczos,
    /// Nearest, None (Lanczos, as in A1111), or an ESRGAN / Real-ESRGAN .safetensors file.
    #[arg(long, default_value = "Latent", help_heading = "Hires fix")]
    hr_upscaler: String,
    /// Second-pass steps (0: as many as --steps).
    #[arg(long, default_value_t = 0, help_heading = "Hires fix")]
    hr_steps: usize,
    /// How far the upscaled image is noised back before the second pass, in (0, 1].
    #[arg(long, default_value_t = 0.7, help_heading = "Hires fix")]
    hr_denoising: f64,
    /// Second-pass prompt (default: --prompt).
    #[arg(long, help_heading = "Hires fix")]
    hr_prompt: Option<String>,
    /// Second-pass negative prompt (default: --negative-prompt).
    #[arg(long, help_heading = "Hires fix")]
    hr_negative_prompt: Option<String>,
    /// Second-pass sampler (default: --sampler).
    #[arg(long, help_heading = "Hires fix")]
    hr_sampler: Option<String>,
}

impl HiresArgs {
    /// Whether a hires fix was asked for; its flags are checked before the model loads.
    pub fn requested(&self) -> Result<Option<HiresSize>> {
        match (self.hr_scale, &self.hr_resize) {
            (Some(_), Some(_)) => bail!("give either --hr-scale or --hr-resize, not both"),
            (Some(s), None) => {
                if !(s.is_finite() && s > 0.0) {
                    bail!("--hr-scale {s} must be a positive number");
                }
                Ok(Some(HiresSize::Scale(s)))
            }
            (None, Some(r)) => {
                let (x, y) = r
                    .split_once(['x', 'X'])
                    .and_then(|(x, y)| Some((x.trim().parse().ok()?, y.trim().parse().ok()?)))
                    .ok_or_else(|| anyhow!("--hr-resize {r:?} is not WIDTHxHEIGHT"))?;
                if (x, y) == (0, 0) {
                    bail!("--hr-resize 0x0: give a width, a height or both");
                }
                Ok(Some(HiresSize::Resize(x, y)))
            }
            (None, None) => Ok(None),
        }
    }

    /// The hires fix for a first pass of `size`, or `None` without --hr-scale / --hr-resize.
    pub fn hires(&self, size: (usize, usize), multiple: usize) -> Result<Option<HiresFix>> {
        let Some(label) = self.requested()? else {
            return Ok(None);
        };
        let d = self.hr_denoising;
        if !(d > 0.0 && d <= 1.0) {
            bail!("--hr-denoising {d} must be in (0, 1]");
        }
        let (width, height) = hires_size(size, label, multiple)?;
        Ok(Some(HiresFix {
            upscaler: upscaler(&self.hr_upscaler)?,
            width,
            height,
            steps: self.hr_steps,
            denoising_strength: d,
            prompt: self.hr_prompt.clone(),
            negative_prompt: self.hr_negative_prompt.clone(),
            sampler: self
                .hr_sampler
                .as_deref()
                .map(SamplerSpec::parse)
                .transpose()?,
            size_label: label,
        }))
    }
}

/// A1111's upscaler names for `hr_upscaler`, or an ESRGAN / Real-ESRGAN `.safetensors` file.
pub fn upscaler(name: &str) -> Result<HiresUpscaler> {
    if let Some(builtin) = HiresUpscaler::builtin(name) {
        return Ok(builtin);
    }
    let path = std::path::Path::new(name);
    if path.is_file() {
        let file = FileUpscaler::new(path.to_path_buf()).context("--hr-upscaler")?;
        return Ok(HiresUpscaler::Image(Arc::new(file)));
    }
    bail!(
        "--hr-upscaler {name:?} is neither an upscaler file nor one of: {}",
        HiresUpscaler::builtin_names().join(", ")
    )
}
