//! kiln's LLM support for Mistral-family models.
//!
//! `sampling` turns a row of logits into the next token on the host (penalties, truncation,
//! temperature, a seeded draw, log-probabilities) and holds stop strings back from the streamed text.

pub mod sampling;
