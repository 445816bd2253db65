//! Weights looked up by prefixed names with their shapes checked at load, so a checkpoint that does not
//! fit the architecture fails at load time naming the tensor, not later with a shape error deep in a
//! forward pass.
//!
//! Names are always the diffusers / transformers state-dict names; a `TensorSource` other than plain
//! files (a single-file checkpoint in the original SD layout) translates them.

mod capture;
mod folder;
mod gguf;
mod host;
mod random;
mod shapes;
mod source;
mod weight_type;
mod zeros;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use kiln_runtime::loader::WeightFile;
use kiln_runtime::{DType, Device, Error, QTensor, QuantFormat, Result, Tensor};

pub use capture::{convert_folder, CaptureSource, QuantizeReport};
pub use folder::{folder_weight_files, folder_weight_paths};
pub use gguf::{GgufName, GgufSource};
pub use host::HostSource;
pub use random::RandomSource;
pub use shapes::ShapeSource;
pub use source::{wrong_shape, FileSource, TensorSource};
pub use weight_type::WeightType;
pub use zeros::ZeroSource;

use crate::lora::{LoraRegistry, LoraSlot, LoraTarget};
use crate::LayerWeight;

/// A view of a tensor source under a name prefix, loading onto one device in one float dtype.
#[derive(Clone)]
pub struct Weights {
    source: Arc<dyn TensorSource>,
    prefix: String,
    device: Device,
    dtype: DType,
    /// Packs Linear / 1x1-conv weights into this format at load (see `WeightType`).
    quantization: Option<QuantFormat>,
    /// Weights packed so far through this view and every view derived from it.
    packed: Arc<AtomicUsize>,
    /// Records every tensor loaded and its bytes on the device, when set (`--plan`).
    tally: Option<Arc<Tally>>,
    /// Whether the model built from this view streams its large blocks (see `HostSource`).
    stream: bool,
    /// Tensors of this view live in host memory (the CPU backend) whatever the model's device.
    host: bool,
    /// Layers built from this view register a LoRA slot here (`with_lora`).
    lora: Option<Arc<LoraRegistry>>,
}

/// Bytes of each weight loaded through a view, by full name: those on the model's device, and
/// apart those kept in host memory whatever the device (`Weights::in_host_memory`).
#[derive(Debug, Default)]
pub struct Tally {
    device: Mutex<BTreeMap<String, u64>>,
    host: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    /// Weights on the model's device.
    pub fn entries(&self) -> BTreeMap<String, u64> {
        self.device.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Weights in host memory: device memory too when the device is the CPU backend.
    pub fn host_entries(&self) -> BTreeMap<String, u64> {
        self.host.lock().map(|t| t.clone()).unwrap_or_default()
    }

    fn add(&self, name: String, bytes: u64, host: bool) {
        let map = if host { &self.host } else { &self.device };
        if let Ok(mut t) = map.lock() {
            t.insert(name, bytes);
        }
    }
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
            quantization: None,
            packed: Arc::new(AtomicUsize::new(0)),
            tally: None,
            stream: false,
            host: false,
            lora: None,
        }
    }

    /// The same view, recording each loaded tensor's device bytes in `tally`.
    pub fn tallied(self, tally: Option<Arc<Tally>>) -> Weights {
        Weights { tally, ..self }
    }

    /// The same view with its tensors kept in host memory once loaded and uploaded on each
    /// request, for a model that streams its blocks (the UNet builds them just before use).
    pub fn streamed(self) -> Weights {
        Weights {
            source: Arc::new(HostSource::new(self.source.clone())),
            stream: true,
            ..self
        }
    }

    /// The same view whose Linear / Conv2d layers register LoRA slots in `registry`, named by
    /// their module path below this view's prefix.
    pub fn with_lora(&self, registry: Arc<LoraRegistry>) -> Weights {
        registry.set_root(&self.prefix);
        Weights {
            lora: Some(registry),
            ..self.clone()
        }
    }

    /// The LoRA slot of the layer at this view's prefix, when the view has a registry.
    pub fn lora_slot(&self, target: LoraTarget) -> Option<Arc<LoraSlot>> {
        let registry = self.lora.as_ref()?;
        registry.register(&self.prefix, target, &self.device, self.dtype)
    }

    pub fn is_streamed(&self) -> bool {
        self.stream
    }

    /// The same view loading into host memory (the CPU backend) whatever the model's device, for
    /// tables only a few rows of which are read per run (token embeddings); float, never packed.
    pub fn in_host_memory(&self) -> Weights {
        Weights {
            device: Device::Cpu,
            quantization: None,
            host: true,
            ..self.clone()
        }
    }

    fn count(&self, name: &str, bytes: u64) {
        if let Some(t) = &self.tally {
            t.add(self.full_name(name), bytes, self.host);
        }
    }

    fn counted(&self, name: &str, t: Tensor) -> Tensor {
        self.count(name, t.size_in_bytes());
        t
    }

    fn counted_packed(&self, name: &str, q: QTensor) -> LayerWeight {
        self.count(name, q.words().size_in_bytes());
        self.packed.fetch_add(1, Ordering::Relaxed);
        LayerWeight::Packed(q)
    }

    /// The same view, packing layer weights into `format` as they load (`None`: all float).
    pub fn quantized(self, format: Option<QuantFormat>) -> Weights {
        Weights {
            quantization: format,
            ..self
        }
    }

    pub fn quantization(&self) -> Option<QuantFormat> {
        self.quantization
    }

    /// How many weights were loaded packed, for reports and tests.
    pub fn packed_count(&self) -> usize {
        self.packed.load(Ordering::Relaxed)
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
        let t = self
            .source
            .load(&self.full_name(name), Some(shape), &self.device, self.dtype)?;
        Ok(self.counted(name, t))
    }

    /// Loads the weight of a Linear or 1x1 convolution, stored as `shape` and used as `[out, inp]`:
    /// packed when quantisation is on and `inp` is a whole number of blocks, else float in `shape`.
    /// The float tensor is only ever on the host, one at a time, while it is packed.
    pub fn get_packable(
        &self,
        name: &str,
        shape: &[usize],
        out: usize,
        inp: usize,
    ) -> Result<LayerWeight> {
        let full = self.full_name(name);
        let matrix = [out, inp];
        // A weight stored packed loads as it is, whatever was asked: repacking could only lose more.
        if let Some(packed) = self.source.load_packed(&full, shape, &self.device)? {
            if packed.shape() != matrix {
                return Err(Error::load(
                    self.origin(),
                    format!(
                        "packed tensor `{full}` is {:?}, expected {matrix:?}",
                        packed.shape()
                    ),
                ));
            }
            return Ok(self.counted_packed(name, packed));
        }
        let Some(format) = self
            .quantization
            .filter(|f| inp.is_multiple_of(f.block_len()))
        else {
            return Ok(LayerWeight::Float(self.get(name, shape)?));
        };
        let packed = self
            .source
            .load_quantized(&full, shape, matrix, format, &self.device)?;
        Ok(self.counted_packed(name, packed))
    }

    /// Loads `name` whatever its shape (for configs inferred from weights).
    pub fn get_unchecked(&self, name: &str) -> Result<Tensor> {
        let t = self
            .source
            .load(&self.full_name(name), None, &self.device, self.dtype)?;
        Ok(self.counted(name, t))
    }

    /// The stored shape of `name`, if present.
    pub fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.source.shape_of(&self.full_name(name))
    }
}
