//! `--plan`'s weights: the model's real tensor names and shapes with zeros for data, so the plan
//! builds the very model the run would (same layers, same dtype, same packing decisions) and runs
//! its phases on the CPU backend without reading a checkpoint's data.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kiln_runtime::{DType, Device, Error, QTensor, QuantFormat, Result, Tensor};

use super::source::{wrong_shape, TensorSource};

/// Answers every load from `inner`'s names and shapes with CPU zeros of the dtype asked for (one
/// tensor per shape and dtype, shared: tensors are immutable); packed requests get zero blocks.
/// Tensors a file stores packed are read as stored (they are small, and their format matters).
pub struct ZeroSource {
    inner: Arc<dyn TensorSource>,
    zeros: Mutex<HashMap<(Vec<usize>, DType), Tensor>>,
}

impl ZeroSource {
    pub fn new(inner: Arc<dyn TensorSource>) -> ZeroSource {
        ZeroSource {
            inner,
            zeros: Mutex::new(HashMap::new()),
        }
    }

    fn zeros(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let mut zeros = self.zeros.lock().unwrap_or_else(|p| p.into_inner());
        let key = (shape.to_vec(), dtype);
        if let Some(t) = zeros.get(&key) {
            return Ok(t.clone());
        }
        let t = Tensor::zeros(&Device::Cpu, shape, dtype)?;
        zeros.insert(key, t.clone());
        Ok(t)
    }
}

impl TensorSource for ZeroSource {
    fn inner(&self) -> Option<&dyn TensorSource> {
        Some(&*self.inner)
    }

    fn load(
        &self,
        name: &str,
        expected: Option<&[usize]>,
        _device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        let shape = self.shape_of(name).ok_or_else(|| self.missing(name))?;
        if let Some(expected) = expected.filter(|e| *e != shape.as_slice()) {
            return Err(wrong_shape(
                self.origin(),
                &format!("`{name}`"),
                &shape,
                expected,
            ));
        }
        self.zeros(&shape, dtype)
    }

    fn load_part(
        &self,
        name: &str,
        offset: usize,
        shape: &[usize],
        _device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        let stored = self.shape_of(name).ok_or_else(|| self.missing(name))?;
        let count: usize = shape.iter().product();
        if offset + count > stored.iter().product() {
            return Err(Error::load(
                self.origin(),
                format!(
                    "tensor `{name}` {stored:?}: elements {offset}.. as {shape:?} are out of range"
                ),
            ));
        }
        self.zeros(shape, dtype)
    }

    fn load_packed(
        &self,
        name: &str,
        expected: &[usize],
        _device: &Device,
    ) -> Result<Option<QTensor>> {
        self.inner.load_packed(name, expected, &Device::Cpu)
    }

    fn load_quantized(
        &self,
        name: &str,
        expected: &[usize],
        matrix: [usize; 2],
        format: QuantFormat,
        _device: &Device,
    ) -> Result<QTensor> {
        self.load(name, Some(expected), &Device::Cpu, DType::F32)?;
        let bytes = format.packed_bytes(name, &matrix)?;
        QTensor::from_packed(&Device::Cpu, format, &matrix, &vec![0u8; bytes])
    }
}
