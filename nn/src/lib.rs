//! The layers both model families (diffusion in `kiln-models`, LLMs in `kiln-llm`) are assembled
//! from: the `Weights` view over a `TensorSource` (files, manifests, GGUF, renaming views) with
//! `--weight-type` packing, and layers built from it with their shapes checked, whose `forward`
//! calls kernels.

mod attention;
mod conv;
mod embedding;
mod linear;
pub mod lora;
mod norm;
mod weight;
pub mod weights;

pub use attention::{Attention, AttentionConfig, KvBuffers};
pub use conv::Conv2d;
pub use embedding::Embedding;
pub use linear::Linear;
pub use norm::{GroupNorm, LayerNorm, RmsNorm};
pub use weight::LayerWeight;
