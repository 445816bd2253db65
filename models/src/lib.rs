//! Models: text encoders, UNet, VAE, schedulers and pipelines, built from config files and weights.

pub mod prompt;
pub mod rng;
pub mod schedulers;
pub mod tokenizer;
