//! Sampling on the host: from one row of logits (`&[f32]`, one entry per vocabulary token) to the
//! next token id, plus stop strings over the streamed text.
//!
//! # Stop strings
//! [`StopMatcher`] is fed the decoded text of each token and returns the text that is safe to show,
//! holding back any suffix that could still become a stop string; stop strings are never shown.

mod error;
mod params;
mod stop;

pub use error::{Result, SamplingError};
pub use params::{SamplingParams, BAN_BIAS, MAX_TOP_LOGPROBS};
pub use stop::{StopMatcher, StopStep};
