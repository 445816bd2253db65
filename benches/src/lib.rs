//! Kernel benchmark cases at standard shapes (taken from SD 1.5 and Mistral-class LLM layers) and the
//! timing loop shared by `kiln bench kernels` and the criterion benches.

pub mod cases;
pub mod timing;

pub use cases::{kernel_cases, Case, Size, Work};
pub use timing::{measure, Measurement, Timing};
