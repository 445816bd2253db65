//! The Stable Diffusion text encoders: transformers' `CLIPTextModel`, built from its `config.json`.
//!
//! SD 1.x uses OpenAI's CLIP ViT-L/14 text tower (`quick_gelu`); SD 2.x and SD-Turbo use OpenCLIP's
//! ViT-H/14 tower converted to the same layout (`gelu`); SDXL adds OpenCLIP ViT-bigG/14 with its text
//! projection (`CLIPTextModelWithProjection`, `projection.rs`). Weight names are transformers' state-dict
//! names (`text_model.embeddings.token_embedding.weight`, `...encoder.layers.N.self_attn.q_proj...`),
//! all spelled in the constructors of this module's layers.

mod attention;
mod config;
mod layer;
mod mlp;
mod model;
mod pooling;
mod projection;
pub mod tokenizer;

pub use config::{ClipActivation, ClipTextConfig, TokenIds};
pub use model::{ClipTextModel, ClipTextOutput, TokenOverride, TEXT_MODEL_PREFIX};
pub use pooling::eos_positions;
pub use projection::{ClipTextModelWithProjection, ProjectedOutput};
