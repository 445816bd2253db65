//! Sampling on the host: from one row of logits (`&[f32]`, one entry per vocabulary token) to the
//! next token id, plus stop strings over the streamed text.

mod error;
mod params;

pub use error::{Result, SamplingError};
pub use params::{SamplingParams, BAN_BIAS, MAX_TOP_LOGPROBS};
