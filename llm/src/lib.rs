//! Mistral-family LLMs: the decoder built from a Hugging Face folder, a KV cache owned by each
//! conversation (`Session`), the tokenizer (tekken.json or tokenizer.json), chat templates,
//! sampling and the generation loop.

pub mod bench;
pub mod chat;
pub mod chat_model;
pub mod config;
pub mod constrain;
pub mod conversation;
pub mod engine;
pub mod generate;
pub mod gguf_export;
pub mod kv_cache;
pub mod model;
pub mod quantize;
pub mod sampling;
pub mod sequence;
pub mod session;
pub mod tokenizer;
pub mod vision;

pub use chat::{ChatTemplate, Message, Role, ToolCall, ToolCallIds, ToolSpec};
pub use chat_model::ChatModel;
pub use config::MistralConfig;
pub use conversation::Conversation;
pub use engine::{Engine, EngineEvent, EngineRequest, Sink};
pub use generate::{generate, generate_prompt, Flow, GenerateOptions, Generation};
pub use kv_cache::KvCache;
pub use model::{Logits, Mistral};
pub use sequence::{ModelOutput, Sequence, SequenceStep};
pub use session::{decode_batch, Session};
pub use tokenizer::Tokenizer;
