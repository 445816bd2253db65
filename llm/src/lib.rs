//! Mistral-family LLMs: the decoder built from a Hugging Face folder, a KV cache owned by each
//! conversation (`Session`), and (in their own modules) the tokenizer, chat templates and sampling.

pub mod config;
pub mod kv_cache;
pub mod model;
pub mod sampling;
pub mod session;

pub use config::MistralConfig;
pub use kv_cache::KvCache;
pub use model::{Logits, Mistral};
pub use session::Session;
