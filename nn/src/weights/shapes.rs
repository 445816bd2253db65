//! A source that has names and shapes but no data: building a model from it checks which tensors the
//! model asks for, at full size, without reading a checkpoint (the manifests of the real SD models).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;

use kiln_runtime::{DType, Device, Error, Result, Tensor};

use super::source::{wrong_shape, TensorSource};

/// Names and shapes, answered with zero tensors; every tensor loaded is recorded.
///
/// The zeros are CPU f32 tensors whatever device and dtype are asked for, one per distinct shape and
/// shared by every tensor of that shape (tensors are immutable), so building SD's 3.4 GB UNet from a
/// manifest takes a few hundred MB.
pub struct ShapeSource {
    origin: PathBuf,
    shapes: BTreeMap<String, Vec<usize>>,
    loaded: Mutex<BTreeMap<String, Vec<usize>>>,
    zeros: Mutex<HashMap<Vec<usize>, Tensor>>,
}

impl ShapeSource {
    /// `origin` names the manifest in errors.
    pub fn new(origin: impl Into<PathBuf>, shapes: BTreeMap<String, Vec<usize>>) -> ShapeSource {
        ShapeSource {
            origin: origin.into(),
            shapes,
            loaded: Mutex::new(BTreeMap::new()),
            zeros: Mutex::new(HashMap::new()),
        }
    }

    /// Every tensor loaded so far (whole or in part), with the shape it was loaded as.
    pub fn loaded(&self) -> BTreeMap<String, Vec<usize>> {
        self.loaded.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        let mut zeros = self
            .zeros
            .lock()
            .map_err(|_| Error::Device("shape source: a builder panicked".into()))?;
        if let Some(t) = zeros.get(shape) {
            return Ok(t.clone());
        }
        let t = Tensor::zeros(&Device::Cpu, shape, DType::F32)?;
        zeros.insert(shape.to_vec(), t.clone());
        Ok(t)
    }

    fn record(&self, name: &str, shape: &[usize]) {
        if let Ok(mut loaded) = self.loaded.lock() {
            loaded.insert(name.to_string(), shape.to_vec());
        }
    }
}

impl TensorSource for ShapeSource {
    fn origin(&self) -> PathBuf {
        self.origin.clone()
    }

    fn names(&self) -> Vec<String> {
        self.shapes.keys().cloned().collect()
    }

    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.shapes.get(name).cloned()
    }

    fn load(
        &self,
        name: &str,
        expected: Option<&[usize]>,
        _device: &Device,
        _dtype: DType,
    ) -> Result<Tensor> {
        let shape = self.shapes.get(name).ok_or_else(|| self.missing(name))?;
        if let Some(expected) = expected {
            if expected != shape.as_slice() {
                return Err(wrong_shape(
                    self.origin(),
                    &format!("`{name}`"),
                    shape,
                    expected,
                ));
            }
        }
        self.record(name, shape);
        self.zeros(shape)
    }

    fn load_part(
        &self,
        name: &str,
        offset: usize,
        shape: &[usize],
        _device: &Device,
        _dtype: DType,
    ) -> Result<Tensor> {
        let stored = self.shapes.get(name).ok_or_else(|| self.missing(name))?;
        let count: usize = shape.iter().product();
        if offset + count > stored.iter().product() {
            return Err(Error::load(
                self.origin(),
                format!(
                    "tensor `{name}` {stored:?}: elements {offset}.. as {shape:?} are out of range"
                ),
            ));
        }
        self.record(name, stored);
        self.zeros(shape)
    }
}
