//! What to generate: the settings of one `kiln generate` run (A1111's txt2img / img2img request).

use std::sync::Arc;

use super::control::ControlUnit;
use super::hires::HiresFix;
use super::load::StableDiffusion;
use crate::embeddings::EmbeddingDb;
use crate::image::{GrayImage, RgbImage};
use crate::lora::ActiveLora;
use crate::rng::RngKind;
use crate::schedulers::{SamplerKind, SamplerSpec};
use crate::vae::VaeTiling;

/// An img2img or inpainting source.
#[derive(Clone, Debug)]
pub struct InitImage {
    /// Resized to the output size if it differs.
    pub image: RgbImage,
    /// White (>= 128 after PIL's grayscale conversion) marks what to repaint; black is kept.
    pub mask: Option<GrayImage>,
    /// How much of the schedule runs: 1.0 starts from pure noise, 0.6 skips the first 40% of steps
    /// and starts from the image noised to that level.
    pub strength: f64,
}

#[derive(Clone, Debug)]
pub struct GenerationParams {
    /// A1111 emphasis syntax: `(word:1.3)`, `(word)`, `[word]`, `\(`, `BREAK`.
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    /// Classifier-free guidance scale; <= 1 skips the unconditional pass.
    pub cfg_scale: f32,
    pub width: usize,
    pub height: usize,
    /// Image i of batch k is seeded with `seed + k * batch_size + i`, as A1111 does.
    pub seed: u64,
    pub sampler: SamplerSpec,
    /// Images denoised together in one UNet batch.
    pub batch_size: usize,
    /// Batches run one after another.
    pub batch_count: usize,
    /// 1 = the text encoder's last layer; 2 = A1111's "clip skip 2".
    pub clip_skip: usize,
    pub rng: RngKind,
    pub init: Option<InitImage>,
    /// VAE decode (and img2img / inpainting encode) in overlapping tiles, one at a time; `None`
    /// runs the VAE on the whole image.
    pub vae_tiling: Option<VaeTiling>,
    /// Textual-inversion embeddings the prompts may name (`--embeddings-dir`).
    pub embeddings: Option<Arc<EmbeddingDb>>,
    /// LoRA adapters for this generation: `--lora` files and those the prompts' `<lora:...>` tags
    /// name (`LoraLibrary::resolve`). Every tag in the prompts must have its file here.
    pub loras: Vec<ActiveLora>,
    /// A1111's hires fix: a second, larger img2img pass (txt2img only).
    pub hires: Option<HiresFix>,
    /// A second model that finishes the sampling (A1111's "Refiner"; see `refiner.rs`).
    pub refiner: Option<Refiner>,
    /// ControlNet units, their residuals summed (diffusers' MultiControlNet).
    pub controls: Vec<ControlUnit>,
}

/// A1111's "Refiner" / "Switch at": the main model samples the start of the schedule, then
/// `model` (an SDXL refiner, or any SDXL model) continues from the same latents with its own
/// conditioning.
#[derive(Clone)]
pub struct Refiner {
    pub model: Arc<StableDiffusion>,
    /// The fraction of the schedule the main model runs, in (0, 1): diffusers' `denoising_end` of
    /// the first pipeline and `denoising_start` of the refiner's.
    pub switch_at: f64,
}

impl std::fmt::Debug for Refiner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refiner")
            .field("model", &self.model.source.name)
            .field("switch_at", &self.switch_at)
            .finish()
    }
}

impl GenerationParams {
    /// A1111-like defaults: 20 steps of Euler at CFG 7, 512x512, one image, torch CPU noise.
    pub fn new(prompt: impl Into<String>) -> GenerationParams {
        GenerationParams {
            prompt: prompt.into(),
            negative_prompt: String::new(),
            steps: 20,
            cfg_scale: 7.0,
            width: 512,
            height: 512,
            seed: 0,
            sampler: SamplerSpec::new(SamplerKind::Euler),
            batch_size: 1,
            batch_count: 1,
            clip_skip: 1,
            rng: RngKind::TorchCpu,
            init: None,
            vae_tiling: None,
            embeddings: None,
            loras: Vec::new(),
            hires: None,
            refiner: None,
            controls: Vec::new(),
        }
    }

    /// The seed of every image, batch by batch.
    pub fn seeds(&self) -> Vec<u64> {
        (0..self.batch_count * self.batch_size)
            .map(|i| self.seed.wrapping_add(i as u64))
            .collect()
    }
}

/// One finished image.
#[derive(Clone, Debug)]
pub struct GeneratedImage {
    pub seed: u64,
    pub width: usize,
    pub height: usize,
    /// `clamp(decoded / 2 + 0.5, 0, 1)`, rows top to bottom, RGB interleaved (diffusers'
    /// `output_type="np"` for one image).
    pub pixels: Vec<f32>,
}

impl GeneratedImage {
    /// 8-bit RGB as diffusers' `numpy_to_pil` rounds it: numpy's `round(x * 255)`, ties to even.
    pub fn to_rgb8(&self) -> RgbImage {
        RgbImage {
            width: self.width,
            height: self.height,
            data: self
                .pixels
                .iter()
                .map(|&v| (v * 255.0).round_ties_even().clamp(0.0, 255.0) as u8)
                .collect(),
        }
    }
}

/// Sampling progress, reported after every UNet step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Steps done over all batches.
    pub step: usize,
    /// Steps in all batches.
    pub total: usize,
}

/// What the step callback of [`generate_controlled`](super::generate_controlled) asks for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StepControl {
    /// Run the next step.
    #[default]
    Continue,
    /// End this batch now (its images are decoded from the current latents) and go on with the
    /// next one: A1111's "skip".
    Skip,
    /// End this batch now, decode it, and run no further batches: A1111's "interrupt".
    Interrupt,
}

/// One finished denoising step as the controlling callback sees it.
#[derive(Clone, Copy, Debug)]
pub struct Step<'a> {
    pub progress: Progress,
    /// The batch's current (noisy) latents, `[batch, channels, height, width]` row-major: enough
    /// for a cheap preview.
    pub latents: &'a [f32],
    pub shape: [usize; 4],
}
