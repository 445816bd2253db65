//! Sampling on the host: from one row of logits (`&[f32]`, one entry per vocabulary token, up to
//! 131072 and beyond) to the next token id, plus stop strings over the streamed text.
//!
//! # The chain, in this fixed order
//! 1. **logit_bias**: added to the token's logit; a bias of -100 (the lowest allowed) bans the token
//!    outright (its logit becomes `-inf`), as OpenAI documents, rather than merely lowering it.
//! 2. **repetition_penalty** (llama.cpp): every *distinct* token among the last `repeat_last_n` tokens
//!    of prompt + generated text, once: a positive logit is divided by the penalty, a negative one
//!    multiplied (so the penalty always makes the token less likely).
//! 3. **frequency_penalty / presence_penalty** (OpenAI): `logit -= count * frequency + (count > 0) *
//!    presence`, where `count` is how often the token was *generated* (the prompt does not count).
//! 4. **temperature == 0**: greedy, the highest logit, lowest id on ties (like PyTorch's argmax). The
//!    truncation steps below are skipped; no random number is drawn.
//! 5. **top_k**: the `top_k` most likely tokens (0 = off). An O(V) selection, then a sort of the k only.
//! 6. **top_p**: of the top_k survivors, renormalised, the smallest most-likely-first set whose mass is
//!    at least `top_p` (1 = off; at least one token is always kept). Without top_k, the cut is found by
//!    O(V) selections that halve the range; only the survivors (plus at most 256) are sorted.
//! 7. **min_p**: drop tokens whose probability is below `min_p` times the most likely token's (0 = off).
//! 8. **temperature**: survivors are weighted `exp((logit - max) / temperature)`.
//! 9. **draw**: one uniform f64 from the sampler's stream, walked over the survivors' cumulative weight.
//!
//! Truncation thus works on temperature-1 probabilities, as llama.cpp's default chain does: the
//! temperature reshapes only what survived, and top_p/min_p mean the same at every temperature.
//!
//! # Reported log-probabilities
//! [`Sampled::logprob`] and [`Sampled::top_logprobs`] are OpenAI-like: the log-softmax of the logits
//! after logit_bias and penalties (steps 1-3), *before* temperature and truncation. They therefore
//! describe the model (as steered by bias and penalties), not the sampling settings: over the whole
//! vocabulary they sum to 1, and a token outside top_k still has its true log-probability. Banned tokens
//! (probability 0) are never listed. `logprob` is `None` unless asked for (`logprobs`, or
//! `top_logprobs > 0`): when nothing is asked and the choice is a plain argmax
//! ([`SamplingParams::is_plain_greedy`]), generation takes the argmax on the device and never reads
//! the logits.
//!
//! # Reproducibility
//! The random stream is xoshiro256** seeded through SplitMix64, implemented here, so the same seed,
//! settings and logits give the same tokens on every platform and with every backend that produced the
//! logits. Selections and sorts use a total order (logit, then id), so their result does not depend on
//! the sort algorithm. `seed: None` draws a seed from OS entropy and the clock; [`Sampler::seed`]
//! reports it. (The one platform dependence left is the last bit of `f64::exp`, which can move a draw
//! only when it falls within ~1e-16 of a boundary between two tokens.)
//!
//! # Stop strings
//! [`StopMatcher`] is fed the decoded text of each token and returns the text that is safe to show,
//! holding back any suffix that could still become a stop string; stop strings are never shown.
//!
//! # Example
//! ```
//! use kiln_llm::sampling::{
//!     FinishReason, Sampler, SamplingContext, SamplingParams, StopMatcher, StopStep,
//! };
//!
//! let params = SamplingParams { seed: Some(42), top_logprobs: 2, ..SamplingParams::default() };
//! let mut sampler = Sampler::new(params, 4)?;
//! let mut context = SamplingContext::new(&[1, 2]);
//! let mut stop = StopMatcher::new(["\n\n"])?;
//! let logits = [0.1f32, 2.0, -1.0, 0.5]; // from the model, one row per step
//! let out = sampler.sample(&logits, &context)?;
//! context.push(out.id);
//! assert_eq!(out.top_logprobs[0].0, 1);
//! let shown = match stop.push("Hello\n") {
//!     StopStep::Text(text) => text, // "Hello": the "\n" is held back
//!     StopStep::Stopped { text, .. } => text,
//! };
//! assert_eq!(shown, "Hello");
//! assert_eq!(FinishReason::Stop.as_str(), "stop");
//! # Ok::<(), kiln_llm::sampling::SamplingError>(())
//! ```

mod chain;
mod context;
mod error;
mod params;
mod rng;
mod stop;
#[cfg(test)]
mod tests;

pub use chain::{Sampled, Sampler};
pub use context::SamplingContext;
pub use error::{Result, SamplingError};
pub use params::{SamplingParams, BAN_BIAS, MAX_TOP_LOGPROBS};
pub use stop::{StopMatcher, StopStep};

use serde::{Deserialize, Serialize};

/// Why generation ended, named as OpenAI's `finish_reason` ("stop", "length").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// The model emitted an end-of-sequence token, or a stop string completed.
    Stop,
    /// `max_tokens` (or the context) ran out.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}
