//! Stable Diffusion 1.x / 2.x / XL pipelines: loading a model, and txt2img, img2img and inpainting
//! reproducing diffusers' pipelines (same seed and settings, same image to float32 rounding) with
//! AUTOMATIC1111's prompt syntax, per-image seeds and infotext.
//!
//! ```text
//! let model = StableDiffusion::load(path, &device, DType::F32)?;
//! let mut params = GenerationParams::new("a red circle on a blue background");
//! params.seed = 42;
//! let images = generate(&model, &params, &mut |p| eprintln!("{}/{}", p.step, p.total))?;
//! ```

mod budget;
mod control;
mod control_mode;
mod denoise;
mod error;
mod generate;
mod hash;
mod hires;
mod info;
mod inpaint;
mod latent_upscale;
mod latents;
mod load;
mod noise;
mod outpaint;
mod params;
mod plan;
mod prepare;
mod quantize;
mod refiner;
mod sdxl;
mod text;

pub use budget::{fit_budget, fit_budget_from, BudgetFit};
pub use control::{open_controlnet, ControlUnit, SharedControlNet};
pub use control_mode::ControlMode;
pub use error::PipelineError;
pub use generate::{generate, generate_controlled};
pub use hash::{sha256_file, short_hash};
pub use hires::{
    hires_fields, hires_size, HiresFix, HiresSize, HiresUpscaler, ImageUpscaler, LanczosUpscaler,
    NearestUpscaler,
};
pub use info::{add_refiner, add_vae, infotext};
pub use latent_upscale::LatentUpscale;
pub use load::{
    model_hash_file, single_file_scheduler, LoadOptions, ModelSource, Offload, Sdxl,
    StableDiffusion, SUPPORTED_PIPELINES,
};
pub use noise::BatchNoise;
pub use outpaint::{Outpaint, OutpaintCanvas};
pub use params::{
    GeneratedImage, GenerationParams, InitImage, Progress, Refiner, Step, StepControl,
};
pub use plan::{plan, ComponentWeights, MemoryPlan, PhaseNeed, Planner, Residency};
pub use prepare::{plan_with, prepare, prepare_with, Prepared};
pub use quantize::{quantize_model, QuantizeReport};
pub use refiner::{check_switch as check_refiner_switch, open_refiner};
pub use sdxl::{time_ids, AESTHETIC_SCORE, NEGATIVE_AESTHETIC_SCORE};
pub use text::{encode_pair, encode_prompt, encode_prompt_with, Conditioning};
