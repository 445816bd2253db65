//! Placeholder: this op family is being written.

use kiln_runtime::preprocess::{KernelSource, Variant};

pub fn variants() -> Vec<(&'static KernelSource, &'static str, Variant)> {
    Vec::new()
}
