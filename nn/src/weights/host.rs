//! Weight streaming's host side: a source that keeps every tensor it has loaded in host memory,
//! already converted (dtype) or packed (`--weight-type`), and uploads it again on each request.
//! A streamed UNet block is rebuilt from it just before it runs and dropped after, so its weights
//! are on the device only meanwhile; conversion and packing happen once, at load.
//!
//! The host copies are plain bytes, not CPU-backend tensors, so on the CPU backend (whose device
//! memory is its tensors) they count as host memory, as they would beside a GPU.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kiln_runtime::{DType, Device, Error, QTensor, QuantFormat, Result, Tensor};

use super::source::TensorSource;

enum Host {
    Float {
        shape: Vec<usize>,
        dtype: DType,
        bytes: Vec<u8>,
    },
    Packed {
        format: QuantFormat,
        shape: Vec<usize>,
        bytes: Vec<u8>,
    },
    /// `load_packed` found the tensor stored as floats.
    NotPacked,
}

pub struct HostSource {
    inner: Arc<dyn TensorSource>,
    cache: Mutex<HashMap<String, Arc<Host>>>,
}

impl HostSource {
    pub fn new(inner: Arc<dyn TensorSource>) -> HostSource {
        HostSource {
            inner,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Bytes held in host memory.
    pub fn host_bytes(&self) -> u64 {
        self.lock()
            .values()
            .map(|h| match &**h {
                Host::Float { bytes, .. } | Host::Packed { bytes, .. } => bytes.len() as u64,
                Host::NotPacked => 0,
            })
            .sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Host>>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached entry under `key`, or the one `fetch` makes (outside the lock).
    fn entry(&self, key: String, fetch: impl FnOnce() -> Result<Host>) -> Result<Arc<Host>> {
        if let Some(h) = self.lock().get(&key) {
            return Ok(h.clone());
        }
        let host = Arc::new(fetch()?);
        self.lock().insert(key, host.clone());
        Ok(host)
    }

    fn float(t: Tensor) -> Result<Host> {
        Ok(Host::Float {
            shape: t.shape().to_vec(),
            dtype: t.dtype(),
            bytes: t.to_bytes()?,
        })
    }

    fn packed(q: QTensor) -> Result<Host> {
        Ok(Host::Packed {
            format: q.format(),
            shape: q.shape().to_vec(),
            bytes: q.to_packed_bytes()?,
        })
    }

    fn upload_float(&self, host: &Host, device: &Device, name: &str) -> Result<Tensor> {
        match host {
            Host::Float {
                shape,
                dtype,
                bytes,
            } => Tensor::from_bytes(device, shape, *dtype, bytes),
            _ => Err(self.kind_error(name)),
        }
    }

    fn upload_packed(&self, host: &Host, device: &Device, name: &str) -> Result<QTensor> {
        match host {
            Host::Packed {
                format,
                shape,
                bytes,
            } => QTensor::from_packed(device, *format, shape, bytes),
            _ => Err(self.kind_error(name)),
        }
    }

    fn kind_error(&self, name: &str) -> Error {
        Error::load(
            self.origin(),
            format!("streamed tensor `{name}` was asked for both packed and as floats"),
        )
    }
}

impl TensorSource for HostSource {
    fn inner(&self) -> Option<&dyn TensorSource> {
        Some(&*self.inner)
    }

    fn load(
        &self,
        name: &str,
        expected: Option<&[usize]>,
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        let key = format!("{name}|{dtype}|{expected:?}");
        let host = self.entry(key, || {
            Self::float(self.inner.load(name, expected, &Device::Cpu, dtype)?)
        })?;
        self.upload_float(&host, device, name)
    }

    fn load_part(
        &self,
        name: &str,
        offset: usize,
        shape: &[usize],
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        let key = format!("{name}|{dtype}|{offset}|{shape:?}");
        let host = self.entry(key, || {
            Self::float(
                self.inner
                    .load_part(name, offset, shape, &Device::Cpu, dtype)?,
            )
        })?;
        self.upload_float(&host, device, name)
    }

    fn load_packed(
        &self,
        name: &str,
        expected: &[usize],
        device: &Device,
    ) -> Result<Option<QTensor>> {
        let key = format!("{name}|stored-packed");
        let host = self.entry(key, || {
            match self.inner.load_packed(name, expected, &Device::Cpu)? {
                Some(q) => Self::packed(q),
                None => Ok(Host::NotPacked),
            }
        })?;
        match &*host {
            Host::NotPacked => Ok(None),
            h => self.upload_packed(h, device, name).map(Some),
        }
    }

    fn load_quantized(
        &self,
        name: &str,
        expected: &[usize],
        matrix: [usize; 2],
        format: QuantFormat,
        device: &Device,
    ) -> Result<QTensor> {
        let key = format!("{name}|{format}|{matrix:?}");
        let host = self.entry(key, || {
            Self::packed(
                self.inner
                    .load_quantized(name, expected, matrix, format, &Device::Cpu)?,
            )
        })?;
        self.upload_packed(&host, device, name)
    }
}
