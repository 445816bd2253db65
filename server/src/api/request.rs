//! A1111's txt2img / img2img request body (field names and defaults as in stable-diffusion-webui's
//! `modules/api/models.py`; every field may be omitted or null), and its translation into the
//! pipeline's `GenerationParams`, naming the field at fault when a value cannot be used.

use kiln_models::pipeline::{check_refiner_switch, GenerationParams, InitImage};
use kiln_models::rng::RngKind;
use kiln_models::schedulers::{parse_schedule, SamplerSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::images::decode_base64_image;
use crate::config::ServerConfig;
use crate::controlnets::{check_units, ControlRequest};
use crate::error::{ApiError, ApiResult};

/// Fields kiln reads are typed (a wrong type is a 422 naming the field); the rest of A1111's many
/// fields are accepted and ignored unless they ask for something kiln does not do.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct GenerationRequest {
    pub prompt: Option<String>,
    pub negative_prompt: Option<String>,
    pub styles: Option<Vec<String>>,
    pub seed: Option<i64>,
    pub subseed: Option<i64>,
    pub subseed_strength: Option<f64>,
    pub sampler_name: Option<String>,
    pub sampler_index: Option<String>,
    pub scheduler: Option<String>,
    pub batch_size: Option<i64>,
    pub n_iter: Option<i64>,
    pub steps: Option<i64>,
    pub cfg_scale: Option<f64>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub clip_skip: Option<i64>,
    pub restore_faces: Option<bool>,
    pub tiling: Option<bool>,
    pub enable_hr: Option<bool>,
    pub hr_scale: Option<f64>,
    pub hr_upscaler: Option<String>,
    pub hr_second_pass_steps: Option<i64>,
    pub hr_resize_x: Option<i64>,
    pub hr_resize_y: Option<i64>,
    pub hr_sampler_name: Option<String>,
    pub hr_prompt: Option<String>,
    pub hr_negative_prompt: Option<String>,
    /// A1111's refiner (txt2img and img2img): a listed model's name, or null / "" / "None" for none.
    pub refiner_checkpoint: Option<String>,
    pub refiner_switch_at: Option<f64>,
    pub override_settings: Option<Map<String, Value>>,
    pub override_settings_restore_afterwards: Option<bool>,
    pub send_images: Option<bool>,
    pub save_images: Option<bool>,
    pub script_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script_args: Option<Vec<Value>>,
    pub alwayson_scripts: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_images: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denoising_strength: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_blur: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inpainting_fill: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inpaint_full_res: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inpaint_full_res_padding: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inpainting_mask_invert: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resize_mode: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_init_images: Option<bool>,
}

/// The settings a request can override (per request in `override_settings`, or server-wide via
/// POST /sdapi/v1/options).
#[derive(Clone, Debug)]
pub struct Settings {
    pub checkpoint: String,
    pub clip_skip: i64,
    pub rng: RngKind,
}

/// A checked request, ready for the queue.
pub struct Checked {
    pub params: GenerationParams,
    pub model: String,
    /// The refiner's name as requested (resolved against the catalog by the caller) and the
    /// switch, checked in (0, 1).
    pub refiner: Option<(String, f64)>,
    pub send_images: bool,
    /// `alwayson_scripts.controlnet` units.
    pub controls: Vec<ControlRequest>,
}

impl GenerationRequest {
    /// Fills omitted fields with A1111's defaults, so `parameters` echoes what ran.
    pub fn fill_defaults(&mut self, img2img: bool) {
        let d = |v: &mut Option<i64>, x| {
            v.get_or_insert(x);
        };
        self.prompt.get_or_insert_with(String::new);
        self.negative_prompt.get_or_insert_with(String::new);
        self.styles.get_or_insert_with(Vec::new);
        d(&mut self.seed, -1);
        d(&mut self.subseed, -1);
        self.subseed_strength.get_or_insert(0.0);
        self.sampler_name
            .get_or_insert_with(|| self.sampler_index.clone().unwrap_or("Euler".into()));
        d(&mut self.batch_size, 1);
        d(&mut self.n_iter, 1);
        d(&mut self.steps, 20);
        self.cfg_scale.get_or_insert(7.0);
        self.override_settings.get_or_insert_with(Map::new);
        self.override_settings_restore_afterwards
            .get_or_insert(true);
        self.send_images.get_or_insert(true);
        self.save_images.get_or_insert(false);
        self.alwayson_scripts.get_or_insert_with(Map::new);
        if img2img {
            self.init_images.get_or_insert_with(Vec::new);
            self.denoising_strength.get_or_insert(0.75);
            d(&mut self.inpainting_mask_invert, 0);
            self.include_init_images.get_or_insert(false);
        }
    }

    /// Checks every field and builds the pipeline's parameters; `img2img` reads the init image
    /// and mask. `random_seed` is used for seed -1.
    pub fn check(
        &self,
        config: &ServerConfig,
        settings: &Settings,
        img2img: bool,
        random_seed: u64,
    ) -> ApiResult<Checked> {
        self.refuse_unsupported()?;
        let overrides = self.override_settings.clone().unwrap_or_default();
        let settings = apply_overrides(settings, &overrides, "override_settings.")?;

        let mut params = GenerationParams::new(self.prompt.clone().unwrap_or_default());
        params.negative_prompt = self.negative_prompt.clone().unwrap_or_default();
        params.steps = in_range(
            "steps",
            self.steps.unwrap_or(20),
            1,
            config.max_steps as i64,
        )?;
        let cfg = self.cfg_scale.unwrap_or(7.0);
        if !(cfg.is_finite() && (0.0..=100.0).contains(&cfg)) {
            return Err(ApiError::invalid(
                "cfg_scale",
                format!("cfg_scale {cfg} must be a number from 0 to 100"),
            ));
        }
        params.cfg_scale = cfg as f32;
        params.seed = match self.seed.unwrap_or(-1) {
            -1 => random_seed,
            s if s >= 0 => s as u64,
            s => {
                return Err(ApiError::invalid(
                    "seed",
                    format!("seed {s} must be -1 (random) or a whole number >= 0"),
                ))
            }
        };
        params.batch_size = in_range("batch_size", self.batch_size.unwrap_or(1), 1, 64)?;
        params.batch_count = in_range("n_iter", self.n_iter.unwrap_or(1), 1, 1000)?;
        if params.batch_size * params.batch_count > config.max_images {
            return Err(ApiError::invalid(
                "batch_size",
                format!(
                    "batch_size * n_iter = {} images; this server makes at most {} per request",
                    params.batch_size * params.batch_count,
                    config.max_images
                ),
            ));
        }
        params.sampler = self.sampler()?;
        params.clip_skip = in_range(
            "clip_skip",
            self.clip_skip.unwrap_or(settings.clip_skip),
            1,
            12,
        )?;
        params.rng = settings.rng;
        params.embeddings = config.embeddings.clone();

        if img2img {
            params.init = Some(self.init_image()?);
        }
        let (w, h) = self.size(config, params.init.as_ref())?;
        let controls = match self
            .alwayson_scripts
            .as_ref()
            .and_then(|s| s.get("controlnet"))
        {
            Some(script) => check_units(script, config.controlnet_dir.as_deref(), (w, h))?,
            None => Vec::new(),
        };
        params.width = w;
        params.height = h;
        params.hires = super::hires::hires(self, &params, config)?;
        Ok(Checked {
            params,
            model: settings.checkpoint,
            refiner: self.refiner()?,
            send_images: self.send_images.unwrap_or(true),
            controls,
        })
    }

    /// `refiner_checkpoint` and `refiner_switch_at` (A1111's default switch 0.8 when omitted).
    fn refiner(&self) -> ApiResult<Option<(String, f64)>> {
        let name = match self.refiner_checkpoint.as_deref() {
            None | Some("" | "None" | "none") => return Ok(None),
            Some(name) => name.to_string(),
        };
        let switch = self.refiner_switch_at.unwrap_or(0.8);
        check_refiner_switch(switch)
            .map_err(|e| ApiError::invalid("refiner_switch_at", e.to_string()))?;
        Ok(Some((name, switch)))
    }

    fn refuse_unsupported(&self) -> ApiResult<()> {
        let flags = [
            ("restore_faces", self.restore_faces, "face restoration"),
            ("tiling", self.tiling, "tiling"),
        ];
        for (field, value, what) in flags {
            if value == Some(true) {
                return Err(ApiError::invalid(
                    field,
                    format!("{what} ({field}) is not supported by kiln"),
                ));
            }
        }
        if self.subseed_strength.unwrap_or(0.0) != 0.0 {
            return Err(ApiError::invalid(
                "subseed_strength",
                "variation seeds (subseed_strength > 0) are not supported by kiln",
            ));
        }
        if let Some(name) = self.script_name.as_deref().filter(|s| !s.is_empty()) {
            if !super::xyz::is_xyz(name) && !super::outpaint::is_mk2(name) {
                return Err(ApiError::invalid(
                    "script_name",
                    format!(
                        "script {name:?} is not supported by kiln (it has \"x/y/z plot\" and \
                         \"outpainting mk2\")"
                    ),
                ));
            }
        }
        if let Some(other) = self
            .alwayson_scripts
            .as_ref()
            .and_then(|s| s.keys().find(|k| k.as_str() != "controlnet"))
        {
            return Err(ApiError::invalid(
                "alwayson_scripts",
                format!("script {other:?} is not supported by kiln (only \"controlnet\")"),
            ));
        }
        Ok(())
    }

    fn sampler(&self) -> ApiResult<SamplerSpec> {
        let (field, name) = match (&self.sampler_name, &self.sampler_index) {
            (Some(n), _) if !n.is_empty() => ("sampler_name", n.as_str()),
            (_, Some(n)) if !n.is_empty() => ("sampler_index", n.as_str()),
            _ => ("sampler_name", "Euler"),
        };
        let mut spec =
            SamplerSpec::parse(name).map_err(|e| ApiError::invalid(field, e.to_string()))?;
        if let Some(s) = &self.scheduler {
            let schedule =
                parse_schedule(s).map_err(|e| ApiError::invalid("scheduler", e.to_string()))?;
            spec = spec
                .with_schedule(schedule)
                .map_err(|e| ApiError::invalid("scheduler", e.to_string()))?;
        }
        Ok(spec)
    }

    /// width/height as given, else the init image's size rounded down to a multiple of 8, else
    /// A1111's 512.
    fn size(&self, config: &ServerConfig, init: Option<&InitImage>) -> ApiResult<(usize, usize)> {
        let pick =
            |field: &str, given: Option<i64>, from_init: Option<usize>| -> ApiResult<usize> {
                let v = match (given, from_init) {
                    (Some(v), _) => v,
                    (None, Some(v)) => (v / 8 * 8).max(8) as i64,
                    (None, None) => 512,
                };
                if v <= 0 || v % 8 != 0 || v > 16384 {
                    return Err(ApiError::invalid(
                        field,
                        format!("{field} {v} must be a positive multiple of 8 (at most 16384)"),
                    ));
                }
                Ok(v as usize)
            };
        let w = pick("width", self.width, init.map(|i| i.image.width))?;
        let h = pick("height", self.height, init.map(|i| i.image.height))?;
        if w * h > config.max_pixels {
            return Err(ApiError::invalid(
                "width",
                format!(
                    "{w}x{h} is {} pixels; this server allows at most {} (--max-pixels)",
                    w * h,
                    config.max_pixels
                ),
            ));
        }
        Ok((w, h))
    }

    fn init_image(&self) -> ApiResult<InitImage> {
        let first = self
            .init_images
            .as_ref()
            .and_then(|v| v.first())
            .ok_or_else(|| {
                ApiError::invalid(
                    "init_images",
                    "img2img needs init_images: a list with at least one base64 image",
                )
            })?;
        let image = decode_base64_image(first, "init_images[0]")?;
        let mask = match &self.mask {
            Some(m) if !m.is_empty() => {
                let mut gray = decode_base64_image(m, "mask")?.to_gray();
                if self.inpainting_mask_invert.unwrap_or(0) == 1 {
                    gray.data.iter_mut().for_each(|v| *v = 255 - *v);
                }
                Some(gray)
            }
            _ => None,
        };
        let strength = self.denoising_strength.unwrap_or(0.75);
        if !(strength > 0.0 && strength <= 1.0) {
            return Err(ApiError::invalid(
                "denoising_strength",
                format!("denoising_strength {strength} must be in (0, 1]"),
            ));
        }
        Ok(InitImage {
            image,
            mask,
            strength,
        })
    }
}

fn in_range(field: &str, v: i64, lo: i64, hi: i64) -> ApiResult<usize> {
    if v < lo || v > hi {
        return Err(ApiError::invalid(
            field,
            format!("{field} {v} must be between {lo} and {hi}"),
        ));
    }
    Ok(v as usize)
}

/// `settings` with the known keys of `overrides` applied (unknown keys are ignored, as A1111
/// ignores settings it has no use for); `prefix` names the object in errors.
pub fn apply_overrides(
    settings: &Settings,
    overrides: &Map<String, Value>,
    prefix: &str,
) -> ApiResult<Settings> {
    let mut out = settings.clone();
    for (key, value) in overrides {
        let field = format!("{prefix}{key}");
        match key.as_str() {
            "sd_model_checkpoint" => {
                out.checkpoint = value
                    .as_str()
                    .ok_or_else(|| {
                        ApiError::unprocessable(&field, "expected a model name (string)")
                    })?
                    .to_string();
            }
            "CLIP_stop_at_last_layers" => {
                let n = value
                    .as_i64()
                    .ok_or_else(|| ApiError::unprocessable(&field, "expected a whole number"))?;
                out.clip_skip = in_range(&field, n, 1, 12)? as i64;
            }
            "randn_source" => {
                out.rng = match value.as_str() {
                    Some("CPU") => RngKind::TorchCpu,
                    Some("GPU") | Some("NV") => RngKind::Philox,
                    _ => {
                        return Err(ApiError::invalid(
                            &field,
                            format!("randn_source {value} must be \"CPU\", \"GPU\" or \"NV\""),
                        ))
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelSet;

    fn config() -> ServerConfig {
        ServerConfig::new(ModelSet::Single("m".into()))
    }

    fn settings() -> Settings {
        Settings {
            checkpoint: "m".into(),
            clip_skip: 1,
            rng: RngKind::TorchCpu,
        }
    }

    fn field_of(json: &str) -> String {
        let req: GenerationRequest = serde_json::from_str(json).unwrap();
        let err = req.check(&config(), &settings(), false, 5).err().unwrap();
        err.field.unwrap()
    }

    #[test]
    fn defaults_and_echo() {
        let mut req: GenerationRequest =
            serde_json::from_str(r#"{"prompt": "x", "steps": null}"#).unwrap();
        req.fill_defaults(false);
        let echo = serde_json::to_value(&req).unwrap();
        assert_eq!(echo["steps"], 20);
        assert_eq!(echo["sampler_name"], "Euler");
        assert!(echo.get("init_images").is_none());
        let checked = req.check(&config(), &settings(), false, 5).unwrap();
        assert_eq!(checked.params.seed, 5);
        assert_eq!((checked.params.width, checked.params.height), (512, 512));
    }

    #[test]
    fn each_bad_value_names_its_field() {
        assert_eq!(field_of(r#"{"steps": -1}"#), "steps");
        assert_eq!(field_of(r#"{"steps": 100000}"#), "steps");
        assert_eq!(field_of(r#"{"width": 100}"#), "width");
        assert_eq!(field_of(r#"{"height": 0}"#), "height");
        assert_eq!(field_of(r#"{"width": 4096, "height": 4096}"#), "width");
        assert_eq!(field_of(r#"{"sampler_name": "nope"}"#), "sampler_name");
        assert_eq!(
            field_of(r#"{"sampler_name": "DDIM", "scheduler": "karras"}"#),
            "scheduler"
        );
        assert_eq!(field_of(r#"{"seed": -7}"#), "seed");
        assert_eq!(field_of(r#"{"cfg_scale": 1000}"#), "cfg_scale");
        assert_eq!(field_of(r#"{"batch_size": 0}"#), "batch_size");
        assert_eq!(field_of(r#"{"batch_size": 64, "n_iter": 2}"#), "batch_size");
        assert_eq!(field_of(r#"{"restore_faces": true}"#), "restore_faces");
        let hr = |extra: &str| field_of(&format!(r#"{{"enable_hr": true, {extra}}}"#));
        assert_eq!(hr(r#""hr_scale": -1"#), "hr_scale");
        assert_eq!(hr(r#""hr_scale": 8"#), "hr_scale");
        assert_eq!(hr(r#""hr_resize_x": -8"#), "hr_resize_x");
        assert_eq!(hr(r#""hr_upscaler": "4x-Magic""#), "hr_upscaler");
        assert_eq!(hr(r#""hr_second_pass_steps": -1"#), "hr_second_pass_steps");
        assert_eq!(hr(r#""denoising_strength": 1.5"#), "denoising_strength");
        assert_eq!(hr(r#""hr_sampler_name": "nope""#), "hr_sampler_name");
        assert_eq!(
            field_of(r#"{"override_settings": {"randn_source": "TPU"}}"#),
            "override_settings.randn_source"
        );
    }

    #[test]
    fn hires_fields_become_the_second_pass() {
        let req: GenerationRequest = serde_json::from_str(
            r#"{"enable_hr": true, "width": 256, "height": 192, "hr_scale": 1.5,
                "hr_upscaler": "Latent (bicubic)", "hr_second_pass_steps": 7,
                "denoising_strength": 0.4, "hr_prompt": "", "hr_sampler_name": "DPM++ 2M"}"#,
        )
        .unwrap();
        let checked = req.check(&config(), &settings(), false, 5).unwrap();
        let h = checked.params.hires.unwrap();
        assert_eq!((h.width, h.height, h.steps), (384, 288, 7));
        assert_eq!(h.upscaler.name(), "Latent (bicubic)");
        assert_eq!(h.denoising_strength, 0.4);
        assert_eq!(h.prompt, None);
        assert!(h.sampler.is_some());
        let resize: GenerationRequest =
            serde_json::from_str(r#"{"enable_hr": true, "hr_resize_x": 1024}"#).unwrap();
        let h = resize
            .check(&config(), &settings(), false, 5)
            .unwrap()
            .params
            .hires
            .unwrap();
        assert_eq!((h.width, h.height), (1024, 1024));
        assert_eq!(h.denoising_strength, 0.7);
    }

    #[test]
    fn overrides_apply() {
        let req: GenerationRequest = serde_json::from_str(
            r#"{"override_settings": {"sd_model_checkpoint": "other [abc]", "CLIP_stop_at_last_layers": 2, "randn_source": "NV"}}"#,
        )
        .unwrap();
        let checked = req.check(&config(), &settings(), false, 0).unwrap();
        assert_eq!(checked.model, "other [abc]");
        assert_eq!(checked.params.clip_skip, 2);
        assert_eq!(checked.params.rng, RngKind::Philox);
    }
}
