//! Models: text encoders, UNet, VAE, schedulers and pipelines, built from config files and weights.

pub mod clip;
pub mod image;
pub mod nn;
pub mod pipeline;
pub mod prompt;
pub mod rng;
pub mod schedulers;
pub mod single_file;
pub mod tokenizer;
pub mod unet;
pub mod vae;
pub mod weights;
