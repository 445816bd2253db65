//! Prompt handling as AUTOMATIC1111's web UI does it, since that is the syntax users type:
//! emphasis parsing (`(word)`, `[word]`, `(word:1.5)`, `BREAK`), the split into 75-token chunks
//! with per-token weights, and the weighting of the text-encoder output.

mod chunks;
mod emphasis;
mod weighting;

#[cfg(test)]
mod tests;

pub use chunks::{ChunkFix, ChunkOptions, PromptChunks, PromptEmbedding, CHUNK_TOKENS};
pub use emphasis::{parse_emphasis, Segment};
pub use weighting::apply_emphasis;

use crate::clip::tokenizer::TokenizerError;

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("emphasis weight {weight:?} is not a number")]
    BadWeight { weight: String },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("an embedding of {values} values does not split into {tokens} token rows")]
    Shape { values: usize, tokens: usize },
    #[error("textual-inversion embedding {name:?} has {count} vectors: more than a 75-token chunk holds")]
    EmbeddingTooLong { name: String, count: usize },
    /// A textual-inversion embedding the prompt names that this model cannot use.
    #[error("{0}")]
    Embedding(String),
}
