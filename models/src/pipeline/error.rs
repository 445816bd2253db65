//! The pipeline's error: each message says what was wrong with the model or the request, in
//! terms a command-line user can act on.

use std::path::PathBuf;

use crate::clip::tokenizer::TokenizerError;
use crate::image::ImageError;
use crate::lora::LoraError;
use crate::prompt::PromptError;
use crate::schedulers::SchedulerError;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A model path that cannot be loaded: missing files, an unsupported kind, a pickle.
    #[error("{}: {msg}", path.display())]
    Model { path: PathBuf, msg: String },
    /// Generation parameters the model cannot honour (size, strength, missing mask, ...).
    #[error("{0}")]
    Invalid(String),
    /// The run does not fit the device-memory budget (`--max-vram`) in any way kiln knows:
    /// `minimum` is the smallest budget that would do.
    #[error("{msg}")]
    OverBudget { minimum: u64, msg: String },
    #[error(transparent)]
    Runtime(#[from] kiln_runtime::Error),
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error(transparent)]
    Prompt(#[from] PromptError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Lora(#[from] LoraError),
}

impl PipelineError {
    pub(crate) fn model(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        PipelineError::Model {
            path: path.into(),
            msg: msg.into(),
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        PipelineError::Invalid(msg.into())
    }
}

pub type Result<T> = std::result::Result<T, PipelineError>;
