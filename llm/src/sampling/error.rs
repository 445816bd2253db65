//! The one error type of sampling: every variant says what was wrong and where.

use std::fmt;

/// Why a sampler could not be built or a token could not be sampled.
#[derive(Debug, Clone, PartialEq)]
pub enum SamplingError {
    /// A parameter outside its allowed range; `message` names the range and the value given.
    InvalidParam {
        field: &'static str,
        message: String,
    },
    /// The vocabulary size is 0 or does not fit a `u32` token id.
    InvalidVocabSize(usize),
    /// The logits row does not have one entry per vocabulary token.
    LogitsLength { expected: usize, got: usize },
    /// A logit is NaN or +inf (usually a numerical blow-up in the model); -inf bans the token.
    NonFiniteLogit { index: usize, value: f32 },
    /// A token id (in `logit_bias` or in the context) that is not in the vocabulary.
    TokenOutOfVocab {
        what: &'static str,
        id: u32,
        vocab_size: usize,
    },
    /// `logit_bias` banned every token, so there is nothing to sample.
    AllTokensBanned,
    /// A stop string is empty (it would match before any text).
    EmptyStopString { index: usize },
}

impl fmt::Display for SamplingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidParam { field, message } => {
                write!(f, "sampling parameter `{field}`: {message}")
            }
            Self::InvalidVocabSize(n) => {
                write!(
                    f,
                    "vocabulary size {n} is invalid: it must be in [1, {}]",
                    u32::MAX
                )
            }
            Self::LogitsLength { expected, got } => {
                write!(
                    f,
                    "logits row has {got} entries but the vocabulary has {expected} tokens"
                )
            }
            Self::NonFiniteLogit { index, value } => {
                write!(
                    f,
                    "logit at position {index} is {value}; every logit must be a finite number (or -inf, banned)"
                )
            }
            Self::TokenOutOfVocab {
                what,
                id,
                vocab_size,
            } => {
                write!(
                    f,
                    "{what}: token id {id} is outside the vocabulary (ids 0..{vocab_size})"
                )
            }
            Self::AllTokensBanned => {
                write!(f, "logit_bias bans every token; nothing is left to sample")
            }
            Self::EmptyStopString { index } => {
                write!(
                    f,
                    "stop string {index} is empty; stop strings must have at least one character"
                )
            }
        }
    }
}

impl std::error::Error for SamplingError {}

/// Shorthand used throughout `sampling`.
pub type Result<T> = std::result::Result<T, SamplingError>;
