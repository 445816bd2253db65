//! Constrained decoding ("structured output"): at every step, every token the grammar cannot
//! accept is masked out of the logits before sampling, so the reply parses (and validates against
//! its JSON schema) whatever the model would have preferred. Prompting alone does not guarantee
//! that, and a server that returns unconstrained text for a schema it accepted is the complaint
//! users have of other engines.
//!
//! The matching is llguidance's (an Earley parser over a derivative-based lexer, walking a trie
//! of the vocabulary's bytes):
//! - [`TokenVocabulary`]: the tokenizer's bytes per id, built once per tokenizer and shared.
//! - [`ResponseFormat`]: what an OpenAI-style request asks for (text, any JSON object, a schema).
//! - [`Grammar`]: a compiled format, schema or Lark grammar; bad schemas fail here, before any
//!   token is generated. [`tool_calls_grammar`] builds Mistral's `[TOOL_CALLS][...]` reply.
//! - [`TokenConstraint`] / [`GrammarConstraint`]: one per sequence; `mask` before sampling,
//!   `commit` after.
//!
//! JSON is generated compact (`{"a": 1, "b": [1, 2]}`, the separators of Python's `json.dumps`):
//! no free whitespace, which a weak model could otherwise repeat until `max_tokens`.

mod error;
mod format;
mod grammar;
mod matcher;
#[cfg(test)]
mod tests;
mod tool_calls;
mod vocabulary;

pub use error::ConstraintError;
pub use format::ResponseFormat;
pub use grammar::Grammar;
pub use matcher::{GrammarConstraint, TokenConstraint};
pub use tool_calls::{tool_calls_grammar, tool_specs_grammar};
pub use vocabulary::TokenVocabulary;

pub type Result<T> = std::result::Result<T, ConstraintError>;
