//! A tensor: a shape, a dtype and contiguous storage on one device. Tensors are immutable; ops make new
//! ones. `reshape` is a view sharing the storage.

use std::sync::Arc;

use half::f16;

use crate::gpu::GpuBuffer;
use crate::memory::CPU_TENSOR_BYTES;
use crate::{DType, Device, Error, Result};

/// Host data of a CPU-backend tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum CpuData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    U32(Vec<u32>),
}

impl CpuData {
    pub fn dtype(&self) -> DType {
        match self {
            CpuData::F32(_) => DType::F32,
            CpuData::F16(_) => DType::F16,
            CpuData::U32(_) => DType::U32,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            CpuData::F32(v) => v.len(),
            CpuData::F16(v) => v.len(),
            CpuData::U32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn size_in_bytes(&self) -> u64 {
        (self.len() * self.dtype().size_in_bytes()) as u64
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            CpuData::F32(v) => bytemuck::cast_slice(v),
            CpuData::F16(v) => bytemuck::cast_slice(v),
            CpuData::U32(v) => bytemuck::cast_slice(v),
        }
    }

    /// Builds data of `dtype` from raw little-endian bytes.
    pub fn from_bytes(dtype: DType, bytes: &[u8]) -> CpuData {
        match dtype {
            DType::F32 => CpuData::F32(bytemuck::pod_collect_to_vec(bytes)),
            DType::F16 => CpuData::F16(bytemuck::pod_collect_to_vec(bytes)),
            DType::U32 => CpuData::U32(bytemuck::pod_collect_to_vec(bytes)),
        }
    }

    /// Converts floats from f32, rounding to nearest for f16.
    pub fn from_f32(dtype: DType, values: &[f32]) -> Result<CpuData> {
        match dtype {
            DType::F32 => Ok(CpuData::F32(values.to_vec())),
            DType::F16 => Ok(CpuData::F16(
                values.iter().map(|&x| f16::from_f32(x)).collect(),
            )),
            DType::U32 => Err(Error::dtype("tensor from f32 values", "u32 (use from_u32)")),
        }
    }
}

#[derive(Debug)]
pub enum Storage {
    Cpu(CpuData),
    Gpu(GpuBuffer),
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Storage::Cpu(data) = self {
            CPU_TENSOR_BYTES.sub(data.size_in_bytes());
            crate::trace::free(self as *const Storage as usize);
        }
    }
}

fn storage_bytes(storage: &Storage) -> u64 {
    match storage {
        Storage::Cpu(data) => data.size_in_bytes(),
        Storage::Gpu(buffer) => buffer.bytes(),
    }
}

#[derive(Clone, Debug)]
pub struct Tensor {
    storage: Arc<Storage>,
    shape: Vec<usize>,
    dtype: DType,
    device: Device,
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// Wraps host data as a CPU-backend tensor.
    pub fn from_cpu_data(data: CpuData, shape: &[usize]) -> Result<Tensor> {
        if data.len() != numel(shape) {
            return Err(Error::shape(
                "tensor",
                format!("{} values do not fill shape {shape:?}", data.len()),
            ));
        }
        crate::memory::check_cpu_budget(data.size_in_bytes(), shape)?;
        CPU_TENSOR_BYTES.add(data.size_in_bytes());
        let dtype = data.dtype();
        let storage = Arc::new(Storage::Cpu(data));
        crate::trace::alloc(Arc::as_ptr(&storage) as usize, storage_bytes(&storage));
        Ok(Tensor {
            storage,
            shape: shape.to_vec(),
            dtype,
            device: Device::Cpu,
        })
    }

    /// Wraps an already filled GPU buffer.
    pub fn from_gpu_buffer(buffer: GpuBuffer, shape: &[usize], dtype: DType) -> Tensor {
        let device = Device::Gpu(buffer.context().clone());
        Tensor {
            storage: Arc::new(Storage::Gpu(buffer)),
            shape: shape.to_vec(),
            dtype,
            device,
        }
    }

    /// Creates a tensor on `device` from raw little-endian bytes of `dtype`.
    pub fn from_bytes(
        device: &Device,
        shape: &[usize],
        dtype: DType,
        bytes: &[u8],
    ) -> Result<Tensor> {
        let expected = numel(shape) * dtype.size_in_bytes();
        if bytes.len() != expected {
            return Err(Error::shape(
                "tensor",
                format!(
                    "{} bytes given for {dtype} shape {shape:?} ({expected} bytes)",
                    bytes.len()
                ),
            ));
        }
        match device {
            Device::Cpu => Tensor::from_cpu_data(CpuData::from_bytes(dtype, bytes), shape),
            Device::Gpu(ctx) => {
                ctx.check_dtype(dtype, "tensor upload")?;
                let buffer = ctx.alloc(bytes.len() as u64, "tensor upload", shape)?;
                ctx.write_buffer(&buffer, bytes)?;
                Ok(Tensor::from_gpu_buffer(buffer, shape, dtype))
            }
        }
    }

    /// Creates a float tensor of `dtype` from f32 values.
    pub fn from_f32(
        device: &Device,
        shape: &[usize],
        dtype: DType,
        values: &[f32],
    ) -> Result<Tensor> {
        if values.len() != numel(shape) {
            return Err(Error::shape(
                "tensor",
                format!("{} values for shape {shape:?}", values.len()),
            ));
        }
        let data = CpuData::from_f32(dtype, values)?;
        match device {
            Device::Cpu => Tensor::from_cpu_data(data, shape),
            Device::Gpu(_) => Tensor::from_bytes(device, shape, dtype, data.as_bytes()),
        }
    }

    pub fn from_u32(device: &Device, shape: &[usize], values: &[u32]) -> Result<Tensor> {
        Tensor::from_bytes(device, shape, DType::U32, bytemuck::cast_slice(values))
    }

    /// A tensor whose contents will be written by an op. On the CPU it is zero-filled.
    pub fn empty(device: &Device, shape: &[usize], dtype: DType, op: &str) -> Result<Tensor> {
        let n = numel(shape);
        match device {
            Device::Cpu => Tensor::from_cpu_data(
                match dtype {
                    DType::F32 => CpuData::F32(vec![0.0; n]),
                    DType::F16 => CpuData::F16(vec![f16::ZERO; n]),
                    DType::U32 => CpuData::U32(vec![0; n]),
                },
                shape,
            ),
            Device::Gpu(ctx) => {
                ctx.check_dtype(dtype, op)?;
                let buffer = ctx.alloc((n * dtype.size_in_bytes()) as u64, op, shape)?;
                Ok(Tensor::from_gpu_buffer(buffer, shape, dtype))
            }
        }
    }

    pub fn zeros(device: &Device, shape: &[usize], dtype: DType) -> Result<Tensor> {
        match device {
            Device::Cpu => Tensor::empty(device, shape, dtype, "zeros"),
            Device::Gpu(_) => {
                let bytes = vec![0u8; numel(shape) * dtype.size_in_bytes()];
                Tensor::from_bytes(device, shape, dtype, &bytes)
            }
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Size of dimension `d`; negative values count from the end.
    pub fn dim(&self, d: isize) -> usize {
        let i = if d < 0 {
            self.shape.len() as isize + d
        } else {
            d
        };
        self.shape[i as usize]
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn size_in_bytes(&self) -> u64 {
        (self.numel() * self.dtype.size_in_bytes()) as u64
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The host data of a CPU tensor; `None` on a GPU.
    pub fn cpu_data(&self) -> Option<&CpuData> {
        match &*self.storage {
            Storage::Cpu(data) => Some(data),
            Storage::Gpu(_) => None,
        }
    }

    /// Mutable host data of a CPU tensor, for ops that update a tensor in place (a KV cache). Tensors
    /// are otherwise immutable, so this fails when another handle (a clone or a `reshape` view) shares
    /// the storage: writing through it would change what that handle sees.
    pub fn cpu_data_mut(&mut self, op: &str) -> Result<&mut CpuData> {
        let shape = self.shape.clone();
        match Arc::get_mut(&mut self.storage) {
            Some(Storage::Cpu(data)) => Ok(data),
            Some(Storage::Gpu(_)) => Err(Error::Device(format!(
                "{op}: tensor {shape:?} is on the GPU, not the CPU"
            ))),
            None => Err(shared_storage(op, &shape)),
        }
    }

    /// The GPU buffer of a tensor about to be written in place; like `cpu_data_mut`, it fails when
    /// another handle shares the storage.
    pub fn gpu_buffer_mut(&mut self, op: &str) -> Result<&GpuBuffer> {
        let shape = self.shape.clone();
        match Arc::get_mut(&mut self.storage) {
            Some(Storage::Gpu(buffer)) => Ok(buffer),
            Some(Storage::Cpu(_)) => Err(Error::Device(format!(
                "{op}: tensor {shape:?} is on the CPU, not a GPU"
            ))),
            None => Err(shared_storage(op, &shape)),
        }
    }

    pub fn gpu_buffer(&self) -> Option<&GpuBuffer> {
        match &*self.storage {
            Storage::Gpu(buffer) => Some(buffer),
            Storage::Cpu(_) => None,
        }
    }

    /// A view with another shape of the same element count; no data moves. One dimension may be
    /// `usize::MAX`, meaning "whatever is left".
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let mut shape = shape.to_vec();
        let known: usize = shape.iter().filter(|&&d| d != usize::MAX).product();
        let holes = shape.iter().filter(|&&d| d == usize::MAX).count();
        if holes > 1 {
            return Err(Error::shape(
                "reshape",
                format!("more than one inferred dimension in {shape:?}"),
            ));
        }
        if holes == 1 {
            if known == 0 || !self.numel().is_multiple_of(known) {
                return Err(Error::shape(
                    "reshape",
                    format!(
                        "cannot infer a dimension reshaping {:?} into {shape:?}",
                        self.shape
                    ),
                ));
            }
            for d in shape.iter_mut().filter(|d| **d == usize::MAX) {
                *d = self.numel() / known;
            }
        }
        if numel(&shape) != self.numel() {
            return Err(Error::shape(
                "reshape",
                format!(
                    "{:?} ({} elements) into {shape:?}",
                    self.shape,
                    self.numel()
                ),
            ));
        }
        Ok(Tensor {
            storage: self.storage.clone(),
            shape,
            dtype: self.dtype,
            device: self.device.clone(),
        })
    }

    /// Raw little-endian bytes, copied back to the host (this is where GPU work is waited for).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        match &*self.storage {
            Storage::Cpu(data) => Ok(data.as_bytes().to_vec()),
            Storage::Gpu(buffer) => {
                let mut bytes = buffer.context().read_buffer(buffer, self.size_in_bytes())?;
                bytes.truncate(self.size_in_bytes() as usize);
                Ok(bytes)
            }
        }
    }

    /// Values as f32 (f16 widened).
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        let bytes = self.to_bytes()?;
        match self.dtype {
            DType::F32 => Ok(bytemuck::pod_collect_to_vec(&bytes)),
            DType::F16 => {
                let halves: Vec<f16> = bytemuck::pod_collect_to_vec(&bytes);
                Ok(halves.iter().map(|h| h.to_f32()).collect())
            }
            DType::U32 => Err(Error::dtype("to_vec_f32", "u32 tensor (use to_vec_u32)")),
        }
    }

    pub fn to_vec_u32(&self) -> Result<Vec<u32>> {
        if self.dtype != DType::U32 {
            return Err(Error::dtype("to_vec_u32", format!("{} tensor", self.dtype)));
        }
        Ok(bytemuck::pod_collect_to_vec(&self.to_bytes()?))
    }

    /// The same values on another device.
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        if &self.device == device {
            return Ok(self.clone());
        }
        Tensor::from_bytes(device, &self.shape, self.dtype, &self.to_bytes()?)
    }
}

fn shared_storage(op: &str, shape: &[usize]) -> Error {
    Error::shape(
        op,
        format!(
            "tensor {shape:?} shares its storage with another tensor (a clone or reshape view), so it \
             cannot be written in place; drop the other handles first"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_is_a_view_and_checks_counts() {
        let t =
            Tensor::from_f32(&Device::Cpu, &[2, 3], DType::F32, &[1., 2., 3., 4., 5., 6.]).unwrap();
        let r = t.reshape(&[3, usize::MAX]).unwrap();
        assert_eq!(r.shape(), &[3, 2]);
        assert!(Arc::ptr_eq(&t.storage, &r.storage));
        let err = t.reshape(&[4, 2]).unwrap_err().to_string();
        assert!(err.contains("reshape") && err.contains("[2, 3]"), "{err}");
    }

    #[test]
    fn cpu_data_mut_writes_in_place_and_refuses_shared_storage() {
        let mut t = Tensor::from_f32(&Device::Cpu, &[2], DType::F32, &[1., 2.]).unwrap();
        let before = Arc::as_ptr(&t.storage);
        match t.cpu_data_mut("test").unwrap() {
            CpuData::F32(v) => v[1] = 5.0,
            other => panic!("{other:?}"),
        }
        assert_eq!(Arc::as_ptr(&t.storage), before);
        assert_eq!(t.to_vec_f32().unwrap(), [1., 5.]);
        let view = t.reshape(&[1, 2]).unwrap();
        let err = t.cpu_data_mut("kv_write").unwrap_err().to_string();
        assert!(
            err.contains("kv_write") && err.contains("[2]") && err.contains("shares"),
            "{err}"
        );
        assert!(t.gpu_buffer_mut("kv_write").is_err());
        drop(view);
        assert!(t.cpu_data_mut("test").is_ok());
        assert!(t
            .gpu_buffer_mut("test")
            .unwrap_err()
            .to_string()
            .contains("CPU"));
    }

    #[test]
    fn wrong_value_count_is_an_error() {
        let err = Tensor::from_f32(&Device::Cpu, &[2, 2], DType::F32, &[1.0]).unwrap_err();
        assert!(err.to_string().contains("[2, 2]"));
    }

    #[test]
    fn f16_round_trips_through_f32() {
        let t = Tensor::from_f32(&Device::Cpu, &[3], DType::F16, &[0.5, -2.0, 1.0e-3]).unwrap();
        let back = t.to_vec_f32().unwrap();
        assert_eq!(back[..2], [0.5, -2.0]);
        assert!((back[2] - 1.0e-3).abs() < 1e-6);
    }

    #[test]
    fn cpu_tensors_are_counted_while_alive() {
        // Other tests allocate, free and reset the peak concurrently, so the only thing that holds
        // whatever they do is that the live count includes our 4000 bytes while the tensor lives.
        // (`memory::tests` checks the counter's own arithmetic on a private instance.)
        let t = Tensor::zeros(&Device::Cpu, &[1000], DType::F32).unwrap();
        assert!(CPU_TENSOR_BYTES.current() >= 4000);
        drop(t);
    }
}
