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
//! `generate` and the engine's `Sequence` apply a [`Grammar`] given in
//! `GenerateOptions::constraint`; a caller with its own loop does the same by hand:
//! ```
//! use kiln_llm::constrain::{Grammar, ResponseFormat, TokenConstraint, TokenVocabulary};
//! use serde_json::json;
//!
//! // Normally `tokenizer.constraint_vocabulary()?`; here ids 0..3 are control tokens (2 = EOS)
//! // and ids 3.. the 256 bytes.
//! let mut pieces = vec![(b"<unk>".to_vec(), true), (b"<s>".to_vec(), true), (b"</s>".to_vec(), true)];
//! pieces.extend((0..=255u8).map(|b| (vec![b], false)));
//! let vocab = TokenVocabulary::from_pieces(pieces, &[2])?;
//! let format = ResponseFormat::from_openai(&json!({
//!     "type": "json_schema",
//!     "json_schema": {"name": "n", "schema": {"type": "object", "properties": {"n": {"enum": [7]}}, "required": ["n"]}}
//! }))?;
//! let grammar = Grammar::compile(&format, &vocab)?; // once per request
//! let mut constraint = grammar.start(); // once per sequence (choice)
//! let mut text = Vec::new();
//! loop {
//!     let mut logits = vec![0.0f32; vocab.size()]; // the model's row
//!     constraint.mask(&mut logits)?; // before sampling
//!     let id = (0..logits.len()).find(|&i| logits[i].is_finite()).unwrap() as u32; // "sampling"
//!     constraint.commit(id)?; // after sampling, EOS included
//!     if id == 2 {
//!         break;
//!     }
//!     text.push(id as u8 - 3);
//! }
//! assert_eq!(text, br#"{"n": 7}"#);
//! # Ok::<(), kiln_llm::constrain::ConstraintError>(())
//! ```
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
pub use tool_calls::{
    tool_calls_grammar, tool_specs_grammar, tool_specs_grammar_with, tool_specs_or_text_grammar,
    ToolCallRules,
};
pub use vocabulary::TokenVocabulary;

pub type Result<T> = std::result::Result<T, ConstraintError>;
