//! Weights looked up by prefixed names with their shapes checked at load, so a checkpoint that does not
//! fit the architecture fails at load time naming the tensor, not later with a shape error deep in a
//! forward pass.
//!
//! Names are always the diffusers / transformers state-dict names; a `TensorSource` other than plain
//! files (a single-file checkpoint in the original SD layout) translates them.

mod random;
mod shapes;
mod source;

use std::path::PathBuf;
use std::sync::Arc;

use kiln_runtime::loader::WeightFile;
use kiln_runtime::{DType, Device, Result, Tensor};

pub use random::RandomSource;
pub use shapes::ShapeSource;
pub use source::{wrong_shape, FileSource, TensorSource};

/// A view of a tensor source under a name prefix, loading onto one device in one float dtype.
#[derive(Clone)]
pub struct Weights {
    source: Arc<dyn TensorSource>,
    prefix: String,
    device: Device,
    dtype: DType,
}

impl Weights {
    /// Weights from safetensors files whose names are diffusers' / transformers' own. `dtype` is the
    /// compute dtype wanted for float weights; a device without it gets f32.
    pub fn new(files: Vec<WeightFile>, device: &Device, dtype: DType) -> Weights {
        Weights::from_source(Arc::new(FileSource::new(files)), device, dtype)
    }

    /// Weights from any source of diffusers-named tensors.
    pub fn from_source(source: Arc<dyn TensorSource>, device: &Device, dtype: DType) -> Weights {
        Weights {
            source,
            prefix: String::new(),
            device: device.clone(),
            dtype: device.float_dtype(dtype),
        }
    }

    /// The file (or other origin) the tensors come from, for messages.
    pub fn origin(&self) -> PathBuf {
        self.source.origin()
    }

    /// The same files under `prefix.name`.
    pub fn pp(&self, name: impl AsRef<str>) -> Weights {
        let name = name.as_ref();
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Weights {
            prefix,
            ..self.clone()
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.source.shape_of(&self.full_name(name)).is_some()
    }

    /// Loads `name` under this prefix, requiring `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.source
            .load(&self.full_name(name), Some(shape), &self.device, self.dtype)
    }

    /// Loads `name` whatever its shape (for configs inferred from weights).
    pub fn get_unchecked(&self, name: &str) -> Result<Tensor> {
        self.source
            .load(&self.full_name(name), None, &self.device, self.dtype)
    }

    /// The stored shape of `name`, if present.
    pub fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.source.shape_of(&self.full_name(name))
    }
}
