//! Benchmark cases at standard shapes (kernels from SD 1.5 and Mistral-class LLM layers; whole SD 1.5
//! UNet and VAE evaluations with random weights) and the timing loop shared by `kiln bench` and the
//! criterion benches.

pub mod cases;
pub mod models;
pub mod timing;

pub use cases::{kernel_cases, Case, Size, Work};
pub use models::model_cases;
pub use timing::{measure, Measurement, Timing};
