//! ControlNets in the denoising loop, as diffusers' StableDiffusion(XL)ControlNet(Img2Img)Pipeline
//! runs them: each unit's control image prepared once (fitted to the output size in its resize
//! mode, [0, 1], one row per UNet row), each step the units whose [guidance_start, guidance_end]
//! covers the step run on the UNet's batch (on the conditional half only when the control mode
//! says so, the unconditional half getting zeros), and their residuals summed
//! (`MultiControlNetModel`) for the UNet.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use kiln_kernels::layout::{concat, narrow};
use kiln_runtime::{DType, Tensor};

use super::control_mode::ControlMode;
use super::error::{PipelineError, Result};
use super::load::StableDiffusion;
use crate::controlnet::{check_base, ControlInputs, ControlNetLoad, ControlNetModel};
use crate::image::RgbImage;
use crate::preprocess::{fit, PreprocessorSettings, ResizeMode};
use crate::unet::{AddedCond, ControlResiduals};

/// A loaded ControlNet as generation parameters hold it. A trait object: its `Send + Sync` bound
/// is stated once, so the compiler does not prove it again through every layer and device buffer of
/// the model wherever parameters cross threads (in the server that overflows its recursion limit).
pub trait SharedControlNet: Send + Sync {
    fn model(&self) -> &ControlNetModel;
}

impl SharedControlNet for ControlNetModel {
    fn model(&self) -> &ControlNetModel {
        self
    }
}

/// One ControlNet with its control image and settings (A1111's ControlNet unit).
#[derive(Clone)]
pub struct ControlUnit {
    /// An `Arc<ControlNetModel>`.
    pub model: Arc<dyn SharedControlNet>,
    /// How the user named the model (for messages and the infotext).
    pub name: String,
    /// The model file's short hash (A1111's ControlNet extension: 8 hex digits of its SHA-256).
    pub hash: Option<String>,
    /// The preprocessor that made `image` (A1111's "Module"), for the infotext.
    pub module: String,
    /// Its resolution and thresholds as the extension settles and records them.
    pub settings: PreprocessorSettings,
    /// The control image, already preprocessed (canny edges, ...); fitted to the output size.
    pub image: RgbImage,
    /// How `image` is fitted to the output size.
    pub resize: ResizeMode,
    /// `controlnet_conditioning_scale`.
    pub scale: f32,
    /// The fraction of the steps where the unit starts and stops acting.
    pub guidance_start: f32,
    pub guidance_end: f32,
    /// How the residuals are weighted and which half of guidance gets them.
    pub mode: ControlMode,
}

impl fmt::Debug for ControlUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlUnit")
            .field("name", &self.name)
            .field("image", &(self.image.width, self.image.height))
            .field("scale", &self.scale)
            .field("guidance_start", &self.guidance_start)
            .field("guidance_end", &self.guidance_end)
            .field("resize", &self.resize)
            .field("mode", &self.mode)
            .finish()
    }
}

impl ControlUnit {
    /// A1111's ControlNet extension infotext value for this unit (`ControlNet N: "..."`).
    pub fn infotext(&self) -> String {
        // Python's float repr for whole numbers ("1.0"), as the extension writes them.
        let num = |v: f32| {
            if v.fract() == 0.0 {
                format!("{v:.1}")
            } else {
                v.to_string()
            }
        };
        let model = match &self.hash {
            Some(h) => format!("{} [{h}]", self.name),
            None => self.name.clone(),
        };
        format!(
            "Module: {}, Model: {model}, Weight: {}, Resize Mode: {}, {}, Guidance Start: {}, \
             Guidance End: {}, Pixel Perfect: {}, Control Mode: {}",
            self.module,
            num(self.scale),
            self.resize,
            self.settings.sliders_infotext(),
            num(self.guidance_start),
            num(self.guidance_end),
            self.settings.pixel_perfect_infotext(),
            self.mode
        )
    }

    /// Whether the unconditional half goes without residuals: the mode's cfg injection, or a
    /// `global_pool_conditions` model (diffusers forces guess mode, the extension cond-masks).
    fn conditional_only(&self) -> bool {
        self.mode.conditional_only() || self.model.model().forces_guess_mode()
    }

    /// The extension forces soft injection for canny and mlsd maps in a hires-fix pass.
    fn soft_in_hires(&self) -> bool {
        self.module.contains("canny") || self.module.contains("mlsd")
    }

    /// diffusers' `controlnet_keep[i]` for step `i` of `n` (the steps this run denoises).
    fn keeps(&self, i: usize, n: usize) -> bool {
        let (i, n) = (i as f64, n as f64);
        !(i / n < f64::from(self.guidance_start) || (i + 1.0) / n > f64::from(self.guidance_end))
    }
}

/// Opens the ControlNet at `path` (a diffusers folder or a single file) for `model`, as its UNet
/// loaded: on its device, in its dtype, streamed when it streams, packed as `quantization` (the
/// model's `--weight-type`); zeros with their bytes tallied when `model` is `--plan`'s zero-weight
/// stand-in, so the plan and the `--max-vram` fit count the ControlNet. One made for another base
/// model is refused naming both; `name` is how the user named it.
pub fn open_controlnet(
    path: &Path,
    name: &str,
    model: &StableDiffusion,
    quantization: Option<kiln_runtime::QuantFormat>,
) -> kiln_runtime::Result<ControlNetModel> {
    let unet = &model.unet;
    let load = ControlNetLoad {
        dtype: unet.dtype(),
        quantization,
        streamed: unet.is_streamed(),
        zero_weights: model.planned.is_some(),
    };
    let net = ControlNetModel::open(path, unet.config(), unet.device(), &load)?;
    check_base(name, &net, unet.resolved())?;
    Ok(net)
}

/// Checks each unit's numbers before anything runs.
pub fn check_units(units: &[ControlUnit]) -> Result<()> {
    for (k, u) in units.iter().enumerate() {
        let bad = |what: String| {
            Err(PipelineError::invalid(format!(
                "ControlNet unit {k} ({}): {what}",
                u.name
            )))
        };
        if !u.scale.is_finite() {
            return bad(format!("weight {} is not a finite number", u.scale));
        }
        let (s, e) = (u.guidance_start, u.guidance_end);
        if !(0.0..=1.0).contains(&s) || !(0.0..=1.0).contains(&e) || s > e {
            return bad(format!(
                "guidance start {s} and end {e} must satisfy 0 <= start <= end <= 1"
            ));
        }
    }
    Ok(())
}

/// The units of one batch with their images on the device.
pub struct Controls {
    units: Vec<(ControlUnit, Tensor)>,
    /// Images in the batch.
    batch: usize,
    guidance: bool,
    /// The second pass of a hires fix.
    hires_pass: bool,
}

/// What the Denoiser hands over for one step.
pub struct StepInputs<'a> {
    /// The scaled latents of the batch, `[b, c, h, w]` row-major (not the inpainting channels).
    pub x: &'a [f32],
    pub shape: [usize; 4],
    pub timestep: &'a Tensor,
    /// The UNet's context rows (unconditional half first with guidance).
    pub context: &'a Tensor,
    pub added: Option<(&'a Tensor, &'a Tensor)>,
    /// Step `index` of `count` denoised in this run.
    pub index: usize,
    pub count: usize,
}

impl Controls {
    /// Each unit's image at `width` x `height` in [0, 1], `[rows, 3, H, W]` on `device`, rows as
    /// the ControlNet will see them; `hires_pass` for a hires fix's second pass.
    pub fn prepare(
        units: &[ControlUnit],
        device: &kiln_runtime::Device,
        (width, height): (usize, usize),
        batch: usize,
        guidance: bool,
        hires_pass: bool,
    ) -> Result<Controls> {
        let mut out = Vec::with_capacity(units.len());
        for u in units {
            let img = fit(&u.image, width, height, u.resize)?;
            let plane = width * height;
            let mut chw = vec![0f32; 3 * plane];
            for (p, px) in img.data.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    chw[c * plane + p] = f32::from(px[c]) / 255.0;
                }
            }
            let rows = if guidance && !u.conditional_only() {
                2 * batch
            } else {
                batch
            };
            let mut values = Vec::with_capacity(rows * chw.len());
            for _ in 0..rows {
                values.extend_from_slice(&chw);
            }
            let t = Tensor::from_f32(device, &[rows, 3, height, width], DType::F32, &values)?;
            out.push((u.clone(), t));
        }
        Ok(Controls {
            units: out,
            batch,
            guidance,
            hires_pass,
        })
    }

    /// The summed residuals of the units active at this step, or None when none is.
    pub fn residuals(&self, s: &StepInputs) -> Result<Option<ControlResiduals>> {
        let b = self.batch;
        let device = s.context.device();
        let mut total: Option<ControlResiduals> = None;
        for (unit, image) in &self.units {
            if !unit.keeps(s.index, s.count) {
                continue;
            }
            let half = self.guidance && unit.conditional_only();
            let copies = if self.guidance && !half { 2 } else { 1 };
            let mut values = Vec::with_capacity(copies * s.x.len());
            for _ in 0..copies {
                values.extend_from_slice(s.x);
            }
            let [_, c, h, w] = s.shape;
            let sample = Tensor::from_f32(device, &[copies * b, c, h, w], DType::F32, &values)?;
            let rows = |t: &Tensor| -> Result<Tensor> {
                Ok(if half { narrow(t, 0, b, b)? } else { t.clone() })
            };
            let context = rows(s.context)?;
            let added = match s.added {
                Some((text, ids)) => Some((rows(text)?, rows(ids)?)),
                None => None,
            };
            let mut r = unit.model.model().forward(&ControlInputs {
                sample: &sample,
                timesteps: s.timestep,
                context: &context,
                added: added.as_ref().map(|(text_embeds, time_ids)| AddedCond {
                    text_embeds,
                    time_ids,
                }),
                cond: image,
                scale: unit.scale,
                curve: unit.mode.curve(self.hires_pass && unit.soft_in_hires()),
            })?;
            if half {
                let pad = |t: &Tensor| -> Result<Tensor> {
                    let zeros = Tensor::zeros(t.device(), t.shape(), t.dtype())?;
                    Ok(concat(&[&zeros, t], 0)?)
                };
                r = ControlResiduals {
                    down: r.down.iter().map(pad).collect::<Result<_>>()?,
                    mid: pad(&r.mid)?,
                };
            }
            total = Some(match total {
                None => r,
                Some(prev) => prev.sum(&r)?,
            });
        }
        Ok(total)
    }
}

#[cfg(test)]
#[path = "control_tests.rs"]
mod tests;
