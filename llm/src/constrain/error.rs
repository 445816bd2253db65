//! One error type for the constraint layer; each message says which step failed and why, so a
//! server can return it to the client as is.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConstraintError {
    /// The tokenizer's vocabulary cannot be used for matching.
    Vocabulary(String),
    /// The response format, schema or grammar is invalid or unsupported.
    Grammar(String),
    /// Matching failed while generating (a token the mask did not allow, an internal error).
    Matching(String),
}

impl fmt::Display for ConstraintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConstraintError::Vocabulary(m) => write!(f, "constraint vocabulary: {m}"),
            ConstraintError::Grammar(m) => write!(f, "{m}"),
            ConstraintError::Matching(m) => write!(f, "constrained decoding: {m}"),
        }
    }
}

impl std::error::Error for ConstraintError {}

impl From<ConstraintError> for kiln_runtime::Error {
    fn from(e: ConstraintError) -> Self {
        kiln_runtime::Error::shape("constraint", e.to_string())
    }
}
