//! Weights looked up by prefixed names with their shapes checked at load, so a checkpoint that does not
//! fit the architecture fails at load time naming the tensor, not later with a shape error deep in a
//! forward pass.

use std::sync::Arc;

use kiln_runtime::loader::WeightFile;
use kiln_runtime::{DType, Device, Error, Result, Tensor};

/// A view of one or more weight files under a name prefix, loading onto one device in one float dtype.
#[derive(Clone)]
pub struct Weights {
    files: Arc<Vec<WeightFile>>,
    prefix: String,
    device: Device,
    dtype: DType,
}

impl Weights {
    /// `dtype` is the compute dtype wanted for float weights; a device without it gets f32.
    pub fn new(files: Vec<WeightFile>, device: &Device, dtype: DType) -> Weights {
        Weights {
            files: Arc::new(files),
            prefix: String::new(),
            device: device.clone(),
            dtype: device.float_dtype(dtype),
        }
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
        let full = self.full_name(name);
        self.files.iter().any(|f| f.contains(&full))
    }

    fn file_with(&self, full: &str) -> Result<&WeightFile> {
        match self.files.iter().find(|f| f.contains(full)) {
            Some(f) => Ok(f),
            // Let the first file produce the "no tensor named ..., close names ..." error.
            None => match self.files.first() {
                Some(f) => f.entry(full).map(|_| f),
                None => Err(Error::Device(format!(
                    "no weight files given while loading `{full}`"
                ))),
            },
        }
    }

    /// Loads `name` under this prefix, requiring `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let full = self.full_name(name);
        self.file_with(&full)?
            .load_shaped(&full, shape, &self.device, Some(self.dtype))
    }

    /// Loads `name` whatever its shape (for configs inferred from weights).
    pub fn get_unchecked(&self, name: &str) -> Result<Tensor> {
        let full = self.full_name(name);
        self.file_with(&full)?
            .load(&full, &self.device, Some(self.dtype))
    }

    /// The stored shape of `name`, if present.
    pub fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        let full = self.full_name(name);
        self.files
            .iter()
            .find_map(|f| f.entry(&full).ok().map(|e| e.shape.clone()))
    }
}
