//! kiln's kernels. Each op family is one module holding its `.wgsl` file, its Rust launcher, its native
//! CPU implementation (the reference every WGSL kernel is tested against, and the fallback backend) and
//! its tests. An op checks its inputs, works out the output shape, then runs on the tensors' device.

pub mod argmax;
pub mod attention;
pub mod common;
pub mod conv;
pub mod elementwise;
pub mod embedding;
pub mod kv_cache;
pub mod layout;
pub mod matmul;
pub mod norm;
pub mod quant;
pub mod registry;
pub mod rope;
pub mod scatter;
pub mod softmax;
pub mod testing;
pub mod timestep;
pub mod upsample;

pub use kiln_runtime::{DType, Device, Error, Result, Tensor};
