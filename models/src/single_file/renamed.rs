//! A `TensorSource` that shows an original-layout checkpoint under diffusers names, so the model
//! builders load it unchanged. It records which stored tensors were used, so tensors the built model
//! did not take can be reported.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use kiln_runtime::loader::close_names;
use kiln_runtime::{DType, Device, Error, QTensor, QuantFormat, Result, Tensor};

use super::stored::{Part, Stored};
use super::NameMap;
use kiln_nn::weights::{wrong_shape, TensorSource};

/// Stored names loaded so far, shared between a component's source and its `SingleFile`.
pub type UsedNames = Arc<Mutex<BTreeSet<String>>>;

pub struct RenamedSource {
    inner: Arc<dyn TensorSource>,
    map: Box<dyn NameMap>,
    used: UsedNames,
}

impl RenamedSource {
    pub fn new(inner: Arc<dyn TensorSource>, map: Box<dyn NameMap>, used: UsedNames) -> Self {
        RenamedSource { inner, map, used }
    }

    /// The stored form of `name` and its stored shape, or the error naming what is missing.
    fn find(&self, name: &str) -> Result<(Stored, Vec<usize>)> {
        let stored = self.map.stored(name).ok_or_else(|| {
            Error::load(
                self.inner.origin(),
                format!(
                    "`{name}` has no place in the original SD layout (the model asked for a tensor \
                     single-file checkpoints do not have)"
                ),
            )
        })?;
        match self.inner.shape_of(&stored.name) {
            Some(shape) => Ok((stored, shape)),
            None => Err(self.missing_stored(name, &stored)),
        }
    }

    fn missing_stored(&self, name: &str, stored: &Stored) -> Error {
        let names = self.inner.names();
        let close = close_names(&stored.name, names.iter().map(String::as_str), 5);
        let hint = if close.is_empty() {
            String::new()
        } else {
            format!("; close names: {}", close.join(", "))
        };
        Error::load(
            self.inner.origin(),
            format!(
                "no tensor named `{}` (kiln's `{name}`{}){hint}",
                stored.name,
                stored.part.describe()
            ),
        )
    }

    /// The stored name and shape when `name` is a whole stored tensor (perhaps a 1x1 conv read as a
    /// Linear: same bytes, same rows) of shape `expected`, so packed forms carry over unchanged.
    fn whole(&self, name: &str, expected: &[usize]) -> Result<Option<(String, Vec<usize>)>> {
        let (stored, stored_shape) = self.find(name)?;
        let shape = stored.part.shape(&stored_shape);
        if shape != expected || !stored.part.is_stored_bytes() {
            return Ok(None);
        }
        let same = stored.part.offset(&shape) == 0
            && shape.first() == stored_shape.first()
            && shape.iter().product::<usize>() == stored_shape.iter().product::<usize>();
        Ok(same.then_some((stored.name, stored_shape)))
    }

    fn record(&self, stored: &str) {
        if let Ok(mut used) = self.used.lock() {
            used.insert(stored.to_string());
        }
    }
}

impl TensorSource for RenamedSource {
    fn inner(&self) -> Option<&dyn TensorSource> {
        Some(&*self.inner)
    }

    /// None: a renaming view's names exist only as answers to lookups.
    fn names(&self) -> Vec<String> {
        Vec::new()
    }

    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        let stored = self.map.stored(name)?;
        let shape = self.inner.shape_of(&stored.name)?;
        Some(stored.part.shape(&shape))
    }

    fn load(
        &self,
        name: &str,
        expected: Option<&[usize]>,
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        let (stored, stored_shape) = self.find(name)?;
        let shape = stored.part.shape(&stored_shape);
        if let Some(expected) = expected {
            if expected != shape.as_slice() {
                let what = format!(
                    "`{name}` (stored as `{}` {stored_shape:?}{})",
                    stored.name,
                    stored.part.describe()
                );
                return Err(wrong_shape(self.origin(), &what, &shape, expected));
            }
        }
        self.record(&stored.name);
        if stored.part == Part::Transposed {
            // Small (a text projection): read whole on the host, transposed there, then moved.
            let host =
                self.inner
                    .load(&stored.name, Some(&stored_shape), &Device::Cpu, DType::F32)?;
            let t = kiln_kernels::layout::transpose(&host, 0, 1)?;
            return Tensor::from_f32(device, t.shape(), dtype, &t.to_vec_f32()?);
        }
        self.inner.load_part(
            &stored.name,
            stored.part.offset(&shape),
            &shape,
            device,
            dtype,
        )
    }

    fn load_part(
        &self,
        name: &str,
        offset: usize,
        shape: &[usize],
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        let (stored, stored_shape) = self.find(name)?;
        if stored.part == Part::Transposed {
            return Err(Error::load(
                self.origin(),
                format!(
                    "`{name}` is stored transposed as `{}`; it loads only whole",
                    stored.name
                ),
            ));
        }
        let whole = stored.part.shape(&stored_shape);
        self.record(&stored.name);
        self.inner.load_part(
            &stored.name,
            stored.part.offset(&whole) + offset,
            shape,
            device,
            dtype,
        )
    }

    fn load_packed(
        &self,
        name: &str,
        expected: &[usize],
        device: &Device,
    ) -> Result<Option<QTensor>> {
        let Some((stored, stored_shape)) = self.whole(name, expected)? else {
            return Ok(None);
        };
        let packed = self.inner.load_packed(&stored, &stored_shape, device)?;
        if packed.is_some() {
            self.record(&stored);
        }
        Ok(packed)
    }

    fn load_quantized(
        &self,
        name: &str,
        expected: &[usize],
        matrix: [usize; 2],
        format: QuantFormat,
        device: &Device,
    ) -> Result<QTensor> {
        match self.whole(name, expected)? {
            Some((stored, stored_shape)) => {
                self.record(&stored);
                self.inner
                    .load_quantized(&stored, &stored_shape, matrix, format, device)
            }
            // A slice (one of OpenCLIP's fused q/k/v thirds) or a transposed matrix: packed from
            // its floats.
            None => {
                let host = self.load(name, Some(expected), &Device::Cpu, DType::F32)?;
                kiln_kernels::quant::quantize_tensor(&host.reshape(&matrix)?, format, device)
            }
        }
    }

    fn missing(&self, name: &str) -> Error {
        match self.find(name) {
            Err(e) => e,
            Ok((stored, _)) => Error::load(
                self.origin(),
                format!("`{name}` is stored as `{}`", stored.name),
            ),
        }
    }
}
