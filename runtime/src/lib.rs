//! kiln's runtime: devices, tensors, the device memory pool, the pipeline cache, command batching and
//! weight loading. It holds no math: kernels and their CPU references live in `kiln-kernels`.

pub mod adapters;
pub mod device;
pub mod dtype;
pub mod error;
pub mod gguf;
pub mod gpu;
pub mod loader;
pub mod memory;
pub mod pool;
pub mod preprocess;
pub mod qtensor;
pub mod tensor;
pub mod trace;

pub use device::{Device, DeviceChoice};
pub use dtype::DType;
pub use error::{Error, Result};
pub use qtensor::{QTensor, QuantFormat};
pub use tensor::{CpuData, Storage, Tensor};
