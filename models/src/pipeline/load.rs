//! Loading a Stable Diffusion 1.x / 2.x / XL model: a diffusers folder (model_index.json, unet/, vae/,
//! text_encoder/, tokenizer/, scheduler/, for SDXL also text_encoder_2/ and tokenizer_2/, weights as
//! `*.safetensors` or `*.fp16.safetensors`) or a
//! single-file `.safetensors` checkpoint in the original layout (see `single_file`). Pickled
//! checkpoints (`.ckpt` and friends) are refused: unpickling runs arbitrary code.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_runtime::loader::WeightFile;
use kiln_runtime::{DType, Device, QuantFormat};
use serde_json::Value;

use super::error::{PipelineError, Result};
use crate::clip::tokenizer::ClipTokenizer;
use crate::clip::{ClipTextConfig, ClipTextModel, ClipTextModelWithProjection};
use crate::schedulers::SchedulerConfig;
use crate::single_file::{refuse_pickles, Component, ModelKind, SingleFile, VaeFile};
use crate::tally::ModelTally;
use crate::unet::{Unet, UnetConfig};
use crate::vae::{AutoencoderKL, VaeConfig};
use kiln_nn::weights::{FileSource, GgufSource, TensorSource, WeightType, Weights, ZeroSource};

/// The pipeline classes whose components kiln runs (SD 1.x, 2.x, SD-Turbo, SDXL, SDXL-Turbo and
/// their inpainting variants all use these).
pub const SUPPORTED_PIPELINES: [&str; 6] = [
    "StableDiffusionPipeline",
    "StableDiffusionImg2ImgPipeline",
    "StableDiffusionInpaintPipeline",
    "StableDiffusionXLPipeline",
    "StableDiffusionXLImg2ImgPipeline",
    "StableDiffusionXLInpaintPipeline",
];

/// SDXL's second text encoder and what goes with it.
pub struct Sdxl {
    /// OpenCLIP ViT-bigG with its text projection (`text_encoder_2/`).
    pub text_encoder_2: ClipTextModelWithProjection,
    /// `tokenizer_2/`: the same BPE padding with "!".
    pub tokenizer_2: ClipTokenizer,
    /// model_index.json's `requires_aesthetics_score` (the refiner): time ids are (original size,
    /// crop, aesthetic score) rather than (original size, crop, target size).
    pub requires_aesthetics_score: bool,
}

/// How to re-save a diffusers folder whose weights are pickles (`.bin`), for the refusal message.
const CONVERT_HINT: &str = "re-save the folder with safetensors weights, with a tool you trust, \
e.g. in Python: `from diffusers import StableDiffusionPipeline; \
StableDiffusionPipeline.from_pretrained(\"model-folder\").save_pretrained(\"model-folder-st\")` \
(diffusers writes .safetensors), then pass -m model-folder-st";

/// How `StableDiffusion::load_with` loads a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The compute dtype (f32 where the device lacks it).
    pub dtype: DType,
    /// Packs Linear / convolution weights into this format as they load.
    pub quantization: Option<QuantFormat>,
    /// Keep the UNet's down / mid / up blocks in host memory and upload each just before it runs
    /// (`--max-vram` below what the resident model needs).
    pub stream_unet: bool,
    /// The model's names and shapes with zeros for data, on the CPU backend: what `--plan` runs.
    pub zero_weights: bool,
    /// Records each component's weights and their device bytes.
    pub tally: Option<Arc<ModelTally>>,
    /// Components that load and run on the CPU backend instead of the chosen device.
    pub offload: Offload,
    /// A VAE file that replaces the model's VAE (`--vae`; see `single_file::VaeFile`).
    pub vae: Option<PathBuf>,
}

/// Equal options load the same model (the tally is compared by identity).
impl PartialEq for LoadOptions {
    fn eq(&self, other: &LoadOptions) -> bool {
        let tally = match (&self.tally, &other.tally) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (a, b) => a.is_none() && b.is_none(),
        };
        self.dtype == other.dtype
            && self.quantization == other.quantization
            && self.stream_unet == other.stream_unet
            && self.zero_weights == other.zero_weights
            && self.offload == other.offload
            && self.vae == other.vae
            && tally
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions::weight_type(WeightType::F32)
    }
}

impl LoadOptions {
    /// `--weight-type`: f32 / f16 set the float dtype; the quantised types pack layer weights.
    pub fn weight_type(weight_type: WeightType) -> LoadOptions {
        LoadOptions {
            dtype: weight_type.float_dtype(),
            quantization: weight_type.quantization(),
            stream_unet: false,
            zero_weights: false,
            tally: None,
            offload: Offload::default(),
            vae: None,
        }
    }
}

/// Components to run on the CPU backend while the UNet runs on the chosen device
/// (`--vae-on-cpu`, `--text-encoder-on-cpu`): their weights and activations then cost no device
/// memory. Tensors cross between devices through the host, where the pipeline keeps latents and
/// text embeddings anyway.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offload {
    pub vae_on_cpu: bool,
    pub text_encoder_on_cpu: bool,
}

/// The device of each component.
struct Placement<'a> {
    unet: &'a Device,
    vae: &'a Device,
    text_encoder: &'a Device,
}

impl<'a> Placement<'a> {
    fn new(device: &'a Device, offload: Offload) -> Placement<'a> {
        static CPU: Device = Device::Cpu;
        Placement {
            unet: device,
            vae: if offload.vae_on_cpu { &CPU } else { device },
            text_encoder: if offload.text_encoder_on_cpu {
                &CPU
            } else {
                device
            },
        }
    }
}

/// Where a model came from: its display name and the file whose SHA-256 is its A1111 hash.
#[derive(Clone, Debug)]
pub struct ModelSource {
    /// The file's stem or the folder's name (A1111's `Model:` infotext field).
    pub name: String,
    /// The single-file checkpoint, or the UNet weights file of a diffusers folder.
    pub hash_file: PathBuf,
    /// The VAE file that replaced the model's own (`--vae`), for A1111's `VAE` / `VAE hash` fields.
    pub vae: Option<PathBuf>,
}

/// One loaded model: the three networks, the tokenizer and the scheduler config.
pub struct StableDiffusion {
    pub unet: Unet,
    pub vae: AutoencoderKL,
    /// SD's text encoder, SDXL base's CLIP ViT-L; `None` only for the SDXL refiner, which
    /// conditions on bigG alone (`sdxl.text_encoder_2`).
    pub text_encoder: Option<ClipTextModel>,
    /// `tokenizer/`, present exactly when `text_encoder` is.
    pub tokenizer: Option<ClipTokenizer>,
    /// SDXL's second text encoder (None for SD 1.x / 2.x).
    pub sdxl: Option<Sdxl>,
    pub scheduler_config: SchedulerConfig,
    /// The UNet config's `sample_size` (latent pixels): the trained resolution divided by the VAE
    /// factor, which sets the default image size as in diffusers.
    pub sample_size: Option<usize>,
    pub source: ModelSource,
    /// `--plan`'s stand-in (`LoadOptions::zero_weights`): the options it loaded with, whose tally
    /// holds its weights. ControlNets (`open_controlnet`) and refiners (`open_refiner`) opened
    /// for it load zeros too, their weights tallied for the plan.
    pub planned: Option<LoadOptions>,
}

impl StableDiffusion {
    /// Loads the model at `path` onto `device`, computing in `dtype` where the device offers it.
    pub fn load(path: &Path, device: &Device, dtype: DType) -> Result<StableDiffusion> {
        StableDiffusion::load_quantized(path, device, dtype, None)
    }

    /// Loads with weights stored as `weight_type` (`kiln generate --weight-type`): f32 / f16 set
    /// the float dtype; the quantised types pack layer weights as they load (see `WeightType`).
    pub fn load_weight_type(
        path: &Path,
        device: &Device,
        weight_type: WeightType,
    ) -> Result<StableDiffusion> {
        let dtype = weight_type.float_dtype();
        StableDiffusion::load_quantized(path, device, dtype, weight_type.quantization())
    }

    /// `load`, packing Linear / convolution weights into `quantization` when given.
    pub fn load_quantized(
        path: &Path,
        device: &Device,
        dtype: DType,
        quantization: Option<QuantFormat>,
    ) -> Result<StableDiffusion> {
        let options = LoadOptions {
            dtype,
            quantization,
            ..LoadOptions::default()
        };
        StableDiffusion::load_with(path, device, &options)
    }

    /// `load_weight_type` with the components `offload` names on the CPU backend.
    pub fn load_offloaded(
        path: &Path,
        device: &Device,
        weight_type: WeightType,
        offload: Offload,
    ) -> Result<StableDiffusion> {
        let options = LoadOptions {
            offload,
            ..LoadOptions::weight_type(weight_type)
        };
        StableDiffusion::load_with(path, device, &options)
    }

    /// Loads the model at `path` onto `device` as `options` say.
    pub fn load_with(
        path: &Path,
        device: &Device,
        options: &LoadOptions,
    ) -> Result<StableDiffusion> {
        let dtype = options.dtype;
        let device = &Placement::new(device, options.offload);
        if !path.exists() {
            return Err(PipelineError::model(path, "no such file or folder"));
        }
        if path.is_dir() {
            return load_diffusers(path, device, dtype, options);
        }
        // Pickles are refused by extension and by content, before anything parses them.
        refuse_pickles(path)?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let source: Arc<dyn TensorSource> =
            match ext.as_str() {
                "safetensors" => Arc::new(FileSource::new(vec![WeightFile::open(path)?])),
                // stable-diffusion.cpp keeps the original checkpoint's names: a single file in GGUF.
                "gguf" => Arc::new(GgufSource::open(path)?),
                _ => return Err(PipelineError::model(
                    path,
                    "unknown model kind: expected a diffusers folder (with model_index.json), a \
                     .safetensors checkpoint or a stable-diffusion.cpp .gguf file",
                )),
            };
        let file = SingleFile::from_source(with_options(source, options))?
            .quantized(options.quantization)
            .streamed_unet(options.stream_unet, options.tally.clone());
        load_single_file(file, path, device, options)
    }

    /// Assembles a model from loaded parts, checking that they fit together.
    pub fn from_parts(
        unet: Unet,
        vae: AutoencoderKL,
        text_encoder: ClipTextModel,
        tokenizer: ClipTokenizer,
        scheduler_config: SchedulerConfig,
        sample_size: Option<usize>,
        source: ModelSource,
    ) -> Result<StableDiffusion> {
        let model = StableDiffusion {
            unet,
            vae,
            text_encoder: Some(text_encoder),
            tokenizer: Some(tokenizer),
            sdxl: None,
            scheduler_config,
            sample_size,
            source,
            planned: None,
        };
        model.check()?;
        Ok(model)
    }

    /// A model assembled field by field (an SDXL one from parts), checked as `from_parts` checks.
    pub fn checked(self) -> Result<StableDiffusion> {
        self.check()?;
        Ok(self)
    }

    /// What a zero-weight model (`--plan`'s) loaded, by component and weight name; `None` for a
    /// real one.
    pub fn planned_weights(&self) -> Option<&ModelTally> {
        self.planned.as_ref()?.tally.as_deref()
    }

    /// Adds SDXL's second text encoder to a model from `from_parts`, checking that it fits.
    pub fn with_sdxl(mut self, sdxl: Sdxl) -> Result<StableDiffusion> {
        self.sdxl = Some(sdxl);
        self.check()?;
        Ok(self)
    }

    /// Width of the text conditioning: CLIP-L's and bigG's hidden sizes side by side for SDXL.
    pub fn context_dim(&self) -> usize {
        let first = self
            .text_encoder
            .as_ref()
            .map_or(0, |t| t.config().hidden_size);
        first
            + self
                .sdxl
                .as_ref()
                .map_or(0, |x| x.text_encoder_2.config().hidden_size)
    }

    /// The deepest clip skip every text encoder allows. SDXL conditions on hidden state
    /// `-(clip_skip + 1)` of both encoders (its default, clip skip 1, is the penultimate layer), so
    /// one layer less there.
    pub fn max_clip_skip(&self) -> usize {
        let layers = self
            .text_encoder
            .as_ref()
            .map_or(usize::MAX, |t| t.config().num_hidden_layers);
        match &self.sdxl {
            None => layers,
            Some(x) => layers.min(x.text_encoder_2.config().num_hidden_layers) - 1,
        }
    }

    /// The SDXL refiner: bigG is its only text encoder and its time ids carry aesthetic scores.
    /// It continues another model's latents (`--refiner`) or runs img2img; it has no txt2img of
    /// its own (diffusers runs it only as `StableDiffusionXLImg2ImgPipeline`).
    pub fn is_refiner(&self) -> bool {
        self.text_encoder.is_none() && self.sdxl.is_some()
    }

    /// CLIP's tokenizer and text encoder: SD's only one, SDXL base's CLIP-L; an error naming the
    /// model for the refiner, which has none.
    pub fn clip(&self) -> Result<(&ClipTokenizer, &ClipTextModel)> {
        match (&self.tokenizer, &self.text_encoder) {
            (Some(t), Some(e)) => Ok((t, e)),
            _ => Err(PipelineError::model(
                &self.source.hash_file,
                "the model has no text_encoder/ (CLIP) and tokenizer/",
            )),
        }
    }

    /// Image pixels per latent pixel: 2^(VAE levels - 1), 8 for every SD VAE.
    pub fn vae_scale_factor(&self) -> usize {
        self.vae.config().downsample_factor()
    }

    /// What width and height must be multiples of: 8 (A1111's rule), or more if the VAE downsamples
    /// further. The UNet takes any latent size (odd sizes round up on the way down and are restored
    /// on the way up, as in diffusers).
    pub fn size_multiple(&self) -> usize {
        lcm(8, self.vae_scale_factor())
    }

    /// diffusers' default size: `unet.config.sample_size * vae_scale_factor` (512 for SD 1.5).
    pub fn default_size(&self) -> usize {
        self.sample_size
            .map(|s| s * self.vae_scale_factor())
            .unwrap_or(512)
    }

    /// Whether the UNet is an inpainting one: latents + mask + masked-image latents in.
    pub fn is_inpainting(&self) -> bool {
        let latent = self.vae.config().latent_channels;
        self.unet.config().in_channels == 2 * latent + 1
    }

    pub fn device(&self) -> &Device {
        self.unet.device()
    }

    fn check(&self) -> Result<()> {
        let path = &self.source.hash_file;
        let latent = self.vae.config().latent_channels;
        let unet = self.unet.config();
        if unet.in_channels != latent && unet.in_channels != 2 * latent + 1 {
            return Err(PipelineError::model(
                path,
                format!(
                    "unet in_channels {} fits neither the VAE's {latent} latent channels nor an \
                     inpainting UNet's {} (latents + mask + masked image)",
                    unet.in_channels,
                    2 * latent + 1
                ),
            ));
        }
        if unet.out_channels != latent {
            return Err(PipelineError::model(
                path,
                format!(
                    "unet out_channels {} differs from the VAE's latent_channels {latent}",
                    unet.out_channels
                ),
            ));
        }
        let resolved = unet.resolve()?;
        let cross = resolved.levels[0].cross_attention_dim;
        if self.text_encoder.is_some() != self.tokenizer.is_some() {
            return Err(PipelineError::model(
                path,
                "a text encoder without its tokenizer (or a tokenizer without its encoder)",
            ));
        }
        let Some(te) = &self.text_encoder else {
            // The refiner: bigG alone.
            return match &self.sdxl {
                Some(x) => self.check_sdxl(x, &resolved),
                None => Err(PipelineError::model(path, "the model has no text encoder")),
            };
        };
        let hidden = te.config().hidden_size;
        match &self.sdxl {
            None if resolved.added.is_some() => {
                return Err(PipelineError::model(
                    path,
                    "the unet has addition_embed_type \"text_time\" (SDXL) but the model has no \
                     text_encoder_2/ to give it a pooled text embedding",
                ))
            }
            None if cross != hidden => {
                return Err(PipelineError::model(
                    path,
                    format!(
                        "unet cross_attention_dim {cross} differs from the text encoder's \
                         hidden_size {hidden}"
                    ),
                ))
            }
            None => {}
            Some(x) => self.check_sdxl(x, &resolved)?,
        }
        let vocab = te.config().vocab_size;
        let tokens = self.tokenizer.as_ref().map_or(0, |t| t.vocab_size());
        if tokens > vocab {
            return Err(PipelineError::model(
                path,
                format!(
                    "the tokenizer has {tokens} tokens but the text encoder's vocab_size is {vocab}"
                ),
            ));
        }
        Ok(())
    }
}

impl StableDiffusion {
    /// SDXL: the configs fit (`check_sdxl_configs`) and tokenizer_2 fits its encoder.
    fn check_sdxl(&self, x: &Sdxl, unet: &crate::unet::Resolved) -> Result<()> {
        let path = &self.source.hash_file;
        let cfg2 = x.text_encoder_2.config();
        check_sdxl_configs(
            path,
            unet,
            self.text_encoder.as_ref().map(|t| t.config()),
            cfg2,
            x.requires_aesthetics_score,
        )?;
        let vocab = cfg2.vocab_size;
        if x.tokenizer_2.vocab_size() > vocab {
            return Err(PipelineError::model(
                path,
                format!(
                    "tokenizer_2 has {} tokens but text_encoder_2's vocab_size is {vocab}",
                    x.tokenizer_2.vocab_size()
                ),
            ));
        }
        Ok(())
    }
}

/// SDXL: the UNet's cross_attention_dim is both encoders' widths together, and its added
/// embedding takes text_encoder_2's projected pooled output plus 6 (or, with an aesthetic score, 5)
/// time ids. Checked from the configs alone, before any weight loads.
fn check_sdxl_configs(
    path: &Path,
    unet: &crate::unet::Resolved,
    cfg1: Option<&ClipTextConfig>,
    cfg2: &ClipTextConfig,
    requires_aesthetics_score: bool,
) -> Result<()> {
    let h2 = cfg2.hidden_size;
    let cross = unet.levels[0].cross_attention_dim;
    match cfg1 {
        Some(cfg1) if cross != cfg1.hidden_size + h2 => {
            let h1 = cfg1.hidden_size;
            return Err(PipelineError::model(
                path,
                format!(
                    "unet cross_attention_dim {cross} differs from text_encoder hidden_size {h1} + \
                     text_encoder_2 hidden_size {h2} = {}",
                    h1 + h2
                ),
            ));
        }
        None if cross != h2 => {
            return Err(PipelineError::model(
                path,
                format!(
                    "unet cross_attention_dim {cross} differs from text_encoder_2 hidden_size {h2} \
                     (a refiner conditions on text_encoder_2 alone)"
                ),
            ));
        }
        _ => {}
    }
    let Some(added) = unet.added else {
        return Err(PipelineError::model(
            path,
            "the model has a text_encoder_2 (SDXL) but its unet config has no \
             addition_embed_type \"text_time\" to take the pooled embedding",
        ));
    };
    let numbers = if requires_aesthetics_score { 5 } else { 6 };
    let want = cfg2.projection_dim + numbers * added.time_dim;
    if added.input_dim != want {
        return Err(PipelineError::model(
            path,
            format!(
                "unet projection_class_embeddings_input_dim {} differs from text_encoder_2 \
                 projection_dim {} + {numbers} time ids x addition_time_embed_dim {} = {want}{}",
                added.input_dim,
                cfg2.projection_dim,
                added.time_dim,
                if requires_aesthetics_score {
                    " (requires_aesthetics_score is set)"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(())
}

fn lcm(a: usize, b: usize) -> usize {
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    a / gcd(a, b) * b
}

/// The file whose SHA-256 is the model's A1111 hash ([`ModelSource::hash_file`]), found without
/// loading the model: the checkpoint itself, or a diffusers folder's UNet weights.
pub fn model_hash_file(path: &Path) -> Result<PathBuf> {
    if path.is_dir() {
        weights_file(&path.join("unet"), "diffusion_pytorch_model")
    } else {
        Ok(path.to_path_buf())
    }
}

/// A diffusers pipeline folder.
fn load_diffusers(
    dir: &Path,
    device: &Placement,
    dtype: DType,
    options: &LoadOptions,
) -> Result<StableDiffusion> {
    let tally = |pick: fn(&ModelTally) -> &Arc<kiln_nn::weights::Tally>| {
        options.tally.as_ref().map(|t| pick(t).clone())
    };
    let index_path = dir.join("model_index.json");
    if !index_path.is_file() {
        return Err(PipelineError::model(
            dir,
            "not a diffusers model folder: model_index.json is missing",
        ));
    }
    let index = read_json(&index_path)?;
    let class = index
        .get("_class_name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !SUPPORTED_PIPELINES.contains(&class) {
        return Err(PipelineError::model(
            &index_path,
            format!(
                "unknown model kind {class:?} (_class_name); kiln runs Stable Diffusion 1.x/2.x/XL \
                 pipelines: {}",
                SUPPORTED_PIPELINES.join(", ")
            ),
        ));
    }
    let sdxl_parts: &[&str] = if class.starts_with("StableDiffusionXL") {
        &["text_encoder_2", "tokenizer_2"]
    } else {
        &[]
    };
    // The SDXL refiner's model_index.json has `"text_encoder": [null, null]` (and the same for
    // tokenizer): it conditions on text_encoder_2 alone.
    let absent = |part: &str| {
        index
            .get(part)
            .is_none_or(|v| v.get(1).is_some_and(Value::is_null))
    };
    let clip_l = !(class.starts_with("StableDiffusionXL") && absent("text_encoder"));
    let clip_parts: &[&str] = if clip_l {
        &["text_encoder", "tokenizer"]
    } else {
        &[]
    };
    let parts = ["unet", "vae", "scheduler"];
    for part in parts.iter().chain(clip_parts).chain(sdxl_parts) {
        if !dir.join(part).is_dir() {
            return Err(PipelineError::model(
                dir,
                format!("the {part}/ folder of the diffusers model is missing"),
            ));
        }
    }

    let unet_dir = dir.join("unet");
    let unet_config = UnetConfig::from_file(config_file(&unet_dir, "config.json")?)?;
    let sample_size = read_json(&unet_dir.join("config.json"))?
        .get("sample_size")
        .and_then(Value::as_u64)
        .map(|s| s as usize);
    // An SDXL folder: model_index.json names the pipeline, or (for hand-assembled folders) the
    // second text encoder is there.
    let sdxl = class.starts_with("StableDiffusionXL") || dir.join("text_encoder_2").is_dir();
    let requires_aesthetics_score = index
        .get("requires_aesthetics_score")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if sdxl {
        // The configs must fit before gigabytes of weights load.
        let config = |part: &str| {
            ClipTextConfig::from_file(config_file(&dir.join(part), "config.json")?)
                .map_err(PipelineError::from)
        };
        check_sdxl_configs(
            &unet_dir.join("config.json"),
            &unet_config.resolve()?,
            clip_l.then(|| config("text_encoder")).transpose()?.as_ref(),
            &config("text_encoder_2")?,
            requires_aesthetics_score,
        )?;
    }
    let unet_file = weights_file(&unet_dir, "diffusion_pytorch_model")?;
    let mut unet_weights =
        weights(&unet_file, device.unet, dtype, options)?.tallied(tally(|t| &t.unet));
    if options.stream_unet {
        unet_weights = unet_weights.streamed();
    }
    let unet = Unet::new(&unet_config, &unet_weights)?;

    let vae_dir = dir.join("vae");
    let vae_config = VaeConfig::from_file(config_file(&vae_dir, "config.json")?)?;
    // diffusers' SDXL pipelines run an f16 VAE in f32 when its config says `force_upcast` (SDXL's
    // VAE overflows to NaN in f16); SD 1.x / 2.x pipelines ignore the flag.
    let vae_dtype = if sdxl && vae_config.force_upcast {
        DType::F32
    } else {
        dtype
    };
    let vae = match &options.vae {
        Some(file) => vae_override(
            file,
            &vae_config,
            &unet_config,
            dir,
            device.vae,
            vae_dtype,
            options,
        )?,
        None => {
            let vae_file = weights_file(&vae_dir, "diffusion_pytorch_model")?;
            let vae_weights =
                weights(&vae_file, device.vae, vae_dtype, options)?.tallied(tally(|t| &t.vae));
            AutoencoderKL::new(&vae_config, &vae_weights)?
        }
    };

    let (text_encoder, tokenizer) = if clip_l {
        let te_dir = dir.join("text_encoder");
        let te_config = ClipTextConfig::from_file(config_file(&te_dir, "config.json")?)?;
        let te_file = weights_file(&te_dir, "model")?;
        let te_weights = weights(&te_file, device.text_encoder, dtype, options)?
            .tallied(tally(|t| &t.text_encoder));
        (
            Some(ClipTextModel::new(&te_config, &te_weights)?),
            Some(ClipTokenizer::from_dir(&dir.join("tokenizer"))?),
        )
    } else {
        (None, None)
    };
    let scheduler_config = SchedulerConfig::from_file(&config_file(
        &dir.join("scheduler"),
        "scheduler_config.json",
    )?)?;

    let name = dir
        .canonicalize()
        .unwrap_or_else(|_| dir.to_path_buf())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let second = if sdxl {
        Some(load_second_encoder(
            dir,
            requires_aesthetics_score,
            device,
            dtype,
            options,
        )?)
    } else {
        None
    };
    // Checked with the second encoder in place, so a bad SDXL folder names SDXL's fields.
    let model = StableDiffusion {
        unet,
        vae,
        text_encoder,
        tokenizer,
        sdxl: second,
        scheduler_config,
        sample_size,
        source: ModelSource {
            name,
            hash_file: unet_file,
            vae: options.vae.clone(),
        },
        planned: options.zero_weights.then(|| options.clone()),
    };
    model.check()?;
    Ok(model)
}

/// SDXL's `text_encoder_2/` (CLIPTextModelWithProjection) and `tokenizer_2/`.
fn load_second_encoder(
    dir: &Path,
    requires_aesthetics_score: bool,
    device: &Placement,
    dtype: DType,
    options: &LoadOptions,
) -> Result<Sdxl> {
    let te_dir = dir.join("text_encoder_2");
    let config = ClipTextConfig::from_file(config_file(&te_dir, "config.json")?)?;
    let file = weights_file(&te_dir, "model")?;
    let tally = options.tally.as_ref().map(|t| t.text_encoder_2.clone());
    let w = weights(&file, device.text_encoder, dtype, options)?.tallied(tally);
    Ok(Sdxl {
        text_encoder_2: ClipTextModelWithProjection::new(&config, &w)?,
        tokenizer_2: ClipTokenizer::from_dir(&dir.join("tokenizer_2"))?,
        requires_aesthetics_score,
    })
}

/// `--vae FILE`: the file's VAE in place of the model's, configured from its shapes and the model's
/// own VAE config (`model`), refused when its latents are not the UNet's (`model_path` names the
/// model in that message).
fn vae_override(
    file: &Path,
    model: &VaeConfig,
    unet: &UnetConfig,
    model_path: &Path,
    device: &Device,
    dtype: DType,
    options: &LoadOptions,
) -> Result<AutoencoderKL> {
    refuse_pickles(file)?;
    let source = Arc::new(FileSource::new(vec![WeightFile::open(file)?]));
    let vae = VaeFile::from_source(with_options(source, options))?;
    let config = vae.config(model)?;
    if config.latent_channels != unet.out_channels {
        return Err(PipelineError::model(
            file,
            format!(
                "this VAE has {} latent channels, but the UNet of {} works on {}: the VAE belongs to \
                 another model family",
                config.latent_channels,
                model_path.display(),
                unet.out_channels
            ),
        ));
    }
    let tally = options.tally.as_ref().map(|t| t.vae.clone());
    Ok(vae.load(&config, device, dtype, options.quantization, tally)?)
}

/// An original-layout checkpoint: the three components from the file (configs inferred from the
/// weights), OpenAI's CLIP vocabulary built in (padding with "!" for SD 2.x's OpenCLIP), and the
/// scheduler config diffusers' `from_single_file` takes from the model kind's reference repository.
fn load_single_file(
    file: SingleFile,
    path: &Path,
    device: &Placement,
    options: &LoadOptions,
) -> Result<StableDiffusion> {
    let dtype = options.dtype;
    // The refiner's only text encoder is bigG, checked with the SDXL parts.
    let refiner = file.kind() == ModelKind::SdxlRefiner;
    for (part, name) in [
        (Component::Unet, "UNet (model.diffusion_model.*)"),
        (Component::Vae, "VAE (first_stage_model.*)"),
        (Component::TextEncoder, "text encoder (cond_stage_model.*)"),
    ] {
        // A checkpoint shipped without its VAE runs with one given by --vae.
        let from_vae_flag = part == Component::Vae && options.vae.is_some();
        let refiner_text = part == Component::TextEncoder && refiner;
        if !file.has(part) && !from_vae_flag && !refiner_text {
            return Err(PipelineError::model(
                path,
                format!(
                    "the checkpoint has no {name}; kiln needs all three components in it (a VAE \
                     may come from --vae instead)"
                ),
            ));
        }
    }
    let kind = file.kind();
    let unet_config = file.unet_config()?;
    let unet = file.load_unet(Some(&unet_config), device.unet, dtype)?;
    let vae = match &options.vae {
        Some(vae_file) => {
            let own = if file.has(Component::Vae) {
                file.vae_config()?
            } else {
                VaeConfig {
                    scaling_factor: kind_scaling_factor(kind),
                    ..VaeConfig::default()
                }
            };
            vae_override(
                vae_file,
                &own,
                &unet_config,
                path,
                device.vae,
                dtype,
                options,
            )?
        }
        None => {
            // SDXL's VAE overflows in f16: decoded in f32 when its config says force_upcast, as
            // for a diffusers folder.
            let config = file.vae_config()?;
            let vae_dtype = if kind.is_sdxl() && config.force_upcast {
                DType::F32
            } else {
                dtype
            };
            file.load_vae(Some(&config), device.vae, vae_dtype)?
        }
    };
    let (text_encoder, tokenizer) = if refiner {
        (None, None)
    } else {
        let tokenizer = if kind.is_sd2() {
            ClipTokenizer::builtin_openclip()?
        } else {
            ClipTokenizer::builtin()?
        };
        let encoder = file.load_text_encoder(None, device.text_encoder, dtype)?;
        (Some(encoder), Some(tokenizer))
    };
    let sample_size = kind.image_size() / vae.config().downsample_factor();
    let name = path
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let sdxl = if kind.is_sdxl() {
        Some(single_file_sdxl(&file, path, device, dtype)?)
    } else {
        None
    };
    let model = StableDiffusion {
        unet,
        vae,
        text_encoder,
        tokenizer,
        sdxl,
        scheduler_config: single_file_scheduler(kind)?,
        sample_size: Some(sample_size),
        source: ModelSource {
            name,
            hash_file: path.to_path_buf(),
            vae: options.vae.clone(),
        },
        planned: options.zero_weights.then(|| options.clone()),
    };
    model.checked()
}

/// SDXL's second encoder from a single file: OpenCLIP bigG with its projection
/// (`conditioner.embedders.1`), and a tokenizer padding with "!" as SDXL's tokenizer_2 does.
fn single_file_sdxl(
    file: &SingleFile,
    path: &Path,
    device: &Placement,
    dtype: DType,
) -> Result<Sdxl> {
    if !file.has(Component::TextEncoder2) {
        return Err(PipelineError::model(
            path,
            "an SDXL checkpoint without its second text encoder (conditioner.embedders.1.model.*)",
        ));
    }
    let config = ClipTextConfig::from_json(&file.text_encoder_2_config_json()?.to_string(), path)?;
    let text_encoder_2 =
        file.load_component(Component::TextEncoder2, device.text_encoder, dtype, |w| {
            ClipTextModelWithProjection::new(&config, w)
        })?;
    Ok(Sdxl {
        text_encoder_2,
        tokenizer_2: ClipTokenizer::builtin_openclip()?,
        requires_aesthetics_score: file.kind() == ModelKind::SdxlRefiner,
    })
}

/// The latent scaling a single file's kind trains with, for a checkpoint without a VAE.
fn kind_scaling_factor(kind: ModelKind) -> f32 {
    if kind.is_sdxl() {
        0.13025
    } else {
        0.18215
    }
}

/// SD's training noise schedule (shared by 1.x, 2.x and SDXL) with the kind's prediction type, as
/// the reference repositories' scheduler_config.json files have it (SD 1.5: PNDM; SD 2.1: DDIM;
/// SDXL base 1.0, refiner 1.0 and inpainting 0.1: Euler with "leading" spacing).
pub fn single_file_scheduler(kind: ModelKind) -> Result<SchedulerConfig> {
    if kind.is_sdxl() {
        let json = serde_json::json!({
            "_class_name": "EulerDiscreteScheduler",
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "clip_sample": false,
            "interpolation_type": "linear",
            "num_train_timesteps": 1000,
            "prediction_type": kind.prediction_type(),
            "sample_max_value": 1.0,
            "set_alpha_to_one": false,
            "skip_prk_steps": true,
            "steps_offset": 1,
            "timestep_spacing": "leading",
            "trained_betas": null,
            "use_karras_sigmas": false,
        });
        return Ok(SchedulerConfig::from_json(&json)?);
    }
    let class = if kind.is_sd2() {
        "DDIMScheduler"
    } else {
        "PNDMScheduler"
    };
    let json = serde_json::json!({
        "_class_name": class,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
        "prediction_type": kind.prediction_type(),
        "set_alpha_to_one": false,
        "skip_prk_steps": true,
        "steps_offset": 1,
        "clip_sample": false,
    });
    Ok(SchedulerConfig::from_json(&json)?)
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PipelineError::model(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| PipelineError::model(path, format!("not JSON: {e}")))
}

pub(crate) fn config_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(PipelineError::model(&path, "missing"))
    }
}

/// `<stem>.safetensors`, else diffusers' fp16 variant `<stem>.fp16.safetensors`. A pickled
/// `<stem>.bin` alone is refused with the reason.
pub(crate) fn weights_file(dir: &Path, stem: &str) -> Result<PathBuf> {
    let candidates = [
        format!("{stem}.safetensors"),
        format!("{stem}.fp16.safetensors"),
    ];
    if let Some(found) = candidates.iter().map(|c| dir.join(c)).find(|p| p.is_file()) {
        return Ok(found);
    }
    for pickle in [format!("{stem}.bin"), format!("{stem}.fp16.bin")] {
        if dir.join(&pickle).is_file() {
            return Err(PipelineError::model(
                dir.join(pickle),
                format!(
                    "weights stored as a Python pickle; kiln does not load pickles because \
                     loading one can run arbitrary code: {CONVERT_HINT}"
                ),
            ));
        }
    }
    Err(PipelineError::model(
        dir,
        format!("no weights: expected {}", candidates.join(" or ")),
    ))
}

fn weights(file: &Path, device: &Device, dtype: DType, options: &LoadOptions) -> Result<Weights> {
    let source = Arc::new(FileSource::new(vec![WeightFile::open(file)?]));
    Ok(
        Weights::from_source(with_options(source, options), device, dtype)
            .quantized(options.quantization),
    )
}

/// The source itself, or zeros in its names and shapes for `--plan`.
fn with_options(source: Arc<dyn TensorSource>, options: &LoadOptions) -> Arc<dyn TensorSource> {
    if options.zero_weights {
        Arc::new(ZeroSource::new(source))
    } else {
        source
    }
}
