//! Helpers the cross-crate tests in tests/tests share: fixture paths, goldens and error measures,
//! generation settings from fixture cases, memory-peak windows, temporary folders, and models put
//! together from single files.

pub mod golden;
pub mod lora;
pub mod memory;
pub mod model;
pub mod params;
pub mod sdxl;
pub mod temp;

use std::path::{Path, PathBuf};

use kiln_kernels::testing::with_gpu;
use kiln_runtime::{DType, Device};

/// tests/fixtures, where the tiny models and their recorded outputs live.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The workspace root (models/bundled lives there).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `body` on the GPU under test if it computes in f16; says so when it does not.
pub fn with_f16_gpu(body: impl FnOnce(&Device)) {
    with_gpu(|gpu| {
        if gpu.supports(DType::F16) {
            body(gpu);
        } else {
            eprintln!("{} has no f16: skipped", gpu.name());
        }
    });
}
