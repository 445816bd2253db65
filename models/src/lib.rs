//! Diffusion models: text encoders, UNet, VAE, schedulers and pipelines, built from config files and
//! weights through `kiln-nn`'s layers.

pub mod clip;
pub mod controlnet;
pub mod embeddings;
pub mod image;
pub mod lora;
pub mod pipeline;
pub mod preprocess;
pub mod prompt;
pub mod rng;
pub mod schedulers;
pub mod single_file;
pub mod tally;
pub mod unet;
pub mod upscale;
pub mod vae;
pub mod xyz;
