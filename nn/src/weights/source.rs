//! Where `Weights` gets its tensors from: safetensors files in diffusers/transformers layout, or any
//! other `TensorSource` (a single-file checkpoint seen under diffusers names, a shape-only manifest).

use std::path::PathBuf;

use kiln_kernels::quant::{dequantize, quantize_tensor};
use kiln_runtime::loader::{close_names, WeightFile};
use kiln_runtime::{DType, Device, Error, QTensor, QuantFormat, Result, Tensor};

/// Tensors by name. Implementations check shapes themselves so their errors can say where a tensor
/// really comes from (a renamed or sliced tensor of a single-file checkpoint names its stored name).
///
/// A wrapper around another source returns it from `inner` and overrides only what it changes:
/// every other method forwards to the inner source. A source with no inner one (files, manifests)
/// implements at least `origin`, `shape_of`, `load` and `load_part`. A wrapper that changes `load`
/// also overrides `load_part`, `load_packed` and `load_quantized`, which would otherwise bypass it.
pub trait TensorSource: Send + Sync {
    /// The source this one wraps, for the forwarding defaults.
    fn inner(&self) -> Option<&dyn TensorSource> {
        None
    }

    /// The file (or other origin) errors are reported against.
    fn origin(&self) -> PathBuf {
        self.inner().map(|i| i.origin()).unwrap_or_default()
    }

    /// The tensor names this source can list, sorted: every name for files and manifests; none for
    /// a renaming view, whose names exist only as answers to lookups.
    fn names(&self) -> Vec<String> {
        self.inner().map(|i| i.names()).unwrap_or_default()
    }

    /// The shape `load` would give for `name`, if present.
    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.inner().and_then(|i| i.shape_of(name))
    }

    /// Loads `name` onto `device` in float dtype `dtype` (f32 where the device lacks it). With
    /// `expected`, a tensor of another shape is an error naming the tensor and both shapes.
    fn load(
        &self,
        name: &str,
        expected: Option<&[usize]>,
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        match self.inner() {
            Some(inner) => inner.load(name, expected, device, dtype),
            None => Err(self.missing(name)),
        }
    }

    /// Loads the `numel(shape)` consecutive elements of `name` from element `offset` as `shape`,
    /// without shape checks: the building block of renaming sources.
    fn load_part(
        &self,
        name: &str,
        offset: usize,
        shape: &[usize],
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        match self.inner() {
            Some(inner) => inner.load_part(name, offset, shape, device, dtype),
            None => Err(self.missing(name)),
        }
    }

    /// `name` as it is stored packed (a file `kiln quantize` wrote), checked against the logical
    /// shape `expected`; `None` when it is stored as floats.
    fn load_packed(
        &self,
        name: &str,
        expected: &[usize],
        device: &Device,
    ) -> Result<Option<QTensor>> {
        match self.inner() {
            Some(inner) => inner.load_packed(name, expected, device),
            None => Ok(None),
        }
    }

    /// `name` (logical shape `expected`) packed into `format` as the `matrix` [out, in]: the float
    /// weight exists only on the host, only meanwhile.
    fn load_quantized(
        &self,
        name: &str,
        expected: &[usize],
        matrix: [usize; 2],
        format: QuantFormat,
        device: &Device,
    ) -> Result<QTensor> {
        if let Some(inner) = self.inner() {
            return inner.load_quantized(name, expected, matrix, format, device);
        }
        let host = self.load(name, Some(expected), &Device::Cpu, DType::F32)?;
        quantize_tensor(&host.reshape(&matrix)?, format, device)
            .map_err(|e| Error::load(self.origin(), format!("packing `{name}` as {format}: {e}")))
    }

    /// The error for a name this source lacks, with close names as a hint.
    fn missing(&self, name: &str) -> Error {
        if let Some(inner) = self.inner() {
            return inner.missing(name);
        }
        let names = self.names();
        Error::MissingTensor {
            path: self.origin(),
            name: name.to_string(),
            close: close_names(name, names.iter().map(String::as_str), 5),
        }
    }
}

/// The "tensor `x` has shape [..], expected [..]" error every source gives.
pub fn wrong_shape(origin: PathBuf, what: &str, found: &[usize], expected: &[usize]) -> Error {
    Error::load(
        origin,
        format!("tensor {what} has shape {found:?}, expected {expected:?}"),
    )
}

/// One or more safetensors files whose names are used as they are (a diffusers component folder).
pub struct FileSource {
    files: Vec<WeightFile>,
}

impl FileSource {
    pub fn new(files: Vec<WeightFile>) -> FileSource {
        FileSource { files }
    }

    pub fn files(&self) -> &[WeightFile] {
        &self.files
    }

    fn file_with(&self, name: &str) -> Result<&WeightFile> {
        match self.files.iter().find(|f| f.contains(name)) {
            Some(f) => Ok(f),
            // Let the first file produce the "no tensor named ..., close names ..." error.
            None => match self.files.first() {
                Some(f) => f.entry(name).map(|_| f),
                None => Err(Error::Device(format!(
                    "no weight files given while loading `{name}`"
                ))),
            },
        }
    }
}

impl TensorSource for FileSource {
    fn origin(&self) -> PathBuf {
        self.files
            .first()
            .map(|f| f.path().to_path_buf())
            .unwrap_or_default()
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .files
            .iter()
            .flat_map(|f| f.names().into_iter().map(str::to_string))
            .collect();
        names.sort_unstable();
        names
    }

    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.files
            .iter()
            .find_map(|f| f.entry(name).ok().map(|e| e.shape.clone()))
    }

    fn load(
        &self,
        name: &str,
        expected: Option<&[usize]>,
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        let file = self.file_with(name)?;
        if file.entry(name)?.packed.is_some() {
            let shape = file.entry(name)?.shape.clone();
            if let Some(expected) = expected.filter(|e| *e != shape.as_slice()) {
                return Err(wrong_shape(
                    self.origin(),
                    &format!("`{name}`"),
                    &shape,
                    expected,
                ));
            }
            return self.load_part(name, 0, &shape, device, dtype);
        }
        match expected {
            Some(shape) => file.load_shaped(name, shape, device, Some(dtype)),
            None => file.load(name, device, Some(dtype)),
        }
    }

    fn load_packed(
        &self,
        name: &str,
        expected: &[usize],
        device: &Device,
    ) -> Result<Option<QTensor>> {
        let Some(file) = self.files.iter().find(|f| f.contains(name)) else {
            return Ok(None);
        };
        let entry = file.entry(name)?;
        if entry.packed.is_none() {
            return Ok(None);
        }
        if entry.shape != expected {
            return Err(wrong_shape(
                self.origin(),
                &format!("`{name}`"),
                &entry.shape,
                expected,
            ));
        }
        file.load_packed(name, device).map(Some)
    }

    fn load_part(
        &self,
        name: &str,
        offset: usize,
        shape: &[usize],
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        let file = self.file_with(name)?;
        let entry = file.entry(name)?;
        let Some(format) = entry.packed else {
            return file.load_part(name, offset, shape, device, Some(dtype));
        };
        // A packed weight asked for as floats (by an op with no quantised path): unpacked on the
        // host, this one tensor only.
        let values = dequantize(format, file.bytes(name)?)?;
        let count: usize = shape.iter().product();
        let part = values.get(offset..offset + count).ok_or_else(|| {
            Error::load(
                self.origin(),
                format!(
                    "tensor `{name}` {:?}: elements {offset}..{} are out of range",
                    entry.shape,
                    offset + count
                ),
            )
        })?;
        Tensor::from_f32(device, shape, device.float_dtype(dtype), part)
    }
}
