//! Errors of scheduler construction and stepping. Each names the field, sampler or argument at
//! fault so a user can fix a config file or a command line without reading the source.

/// Everything that can go wrong building or running a scheduler.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchedulerError {
    #[error("scheduler config is not valid JSON: {0}")]
    Json(String),
    #[error("scheduler config must be a JSON object, found {0}")]
    NotAnObject(&'static str),
    #[error("scheduler config field '{field}': expected {expected}, found {found}")]
    FieldType {
        field: &'static str,
        expected: &'static str,
        found: String,
    },
    #[error("scheduler config field '{field}': {message}")]
    FieldValue {
        field: &'static str,
        message: String,
    },
    #[error(
        "scheduler config field '{field}' = {value} is not supported by kiln's {sampler} sampler"
    )]
    Unsupported {
        field: &'static str,
        value: String,
        sampler: &'static str,
    },
    #[error("unknown sampler '{given}'; valid names: {valid}")]
    UnknownSampler { given: String, valid: String },
    #[error("unknown schedule type '{given}'; valid names: {valid}")]
    UnknownSchedule { given: String, valid: String },
    #[error("the {sampler} sampler has no {schedule} schedule (diffusers' {class} supports none)")]
    ScheduleNotSupported {
        sampler: &'static str,
        schedule: &'static str,
        class: &'static str,
    },
    #[error("{name} = {value}: {reason}")]
    Argument {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("num_inference_steps = {steps}: {reason}")]
    Steps { steps: usize, reason: String },
    #[error("step index {index} is outside the schedule of {len} steps")]
    StepIndex { index: usize, len: usize },
    #[error(
        "the {sampler} sampler keeps history between steps: expected step {expected}, got {got}"
    )]
    StepOrder {
        sampler: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{what} has {got} elements, expected {expected} (the sample's length)")]
    Length {
        what: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("strength = {0}: must be in (0, 1]")]
    Strength(f64),
    #[error("strength = {strength} with {steps} steps leaves no denoising step; raise either")]
    NoStepsLeft { strength: f64, steps: usize },
}
