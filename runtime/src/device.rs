//! Which device runs the work: the native CPU backend or one wgpu adapter.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::adapters;
use crate::gpu::{GpuContext, GpuOptions};
use crate::memory::{cpu_stats, MemoryStats};
use crate::{DType, Error, Result};

/// The environment variable read when no `--device` is given.
pub const DEVICE_ENV: &str = "KILN_DEVICE";

/// What the user asked for: `auto`, `cpu` or `gpu:N` (N indexes the list `kiln devices` prints).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Gpu(usize),
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" | "" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "gpu" => Ok(DeviceChoice::Gpu(0)),
            _ => s
                .strip_prefix("gpu:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Gpu)
                .ok_or_else(|| {
                    Error::Device(format!("unknown device `{s}`: expected auto, cpu or gpu:N"))
                }),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Gpu(i) => write!(f, "gpu:{i}"),
        }
    }
}

impl DeviceChoice {
    /// The choice from `KILN_DEVICE`, or `auto` when unset.
    pub fn from_env() -> Result<Self> {
        match std::env::var(DEVICE_ENV) {
            Ok(v) => v.parse(),
            Err(_) => Ok(DeviceChoice::Auto),
        }
    }
}

#[derive(Clone)]
pub enum Device {
    Cpu,
    Gpu(Arc<GpuContext>),
}

impl PartialEq for Device {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            (Device::Gpu(a), Device::Gpu(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Gpu(ctx) => write!(f, "gpu:{} ({})", ctx.index(), ctx.info().name),
        }
    }
}

impl Device {
    /// Opens the chosen device. `auto` takes the best real GPU and otherwise the native CPU backend: a
    /// software rasteriser (llvmpipe) is slower than the CPU backend, so it is used only when picked.
    pub fn open(choice: DeviceChoice) -> Result<Device> {
        match choice {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Gpu(index) => Device::open_gpu(index, GpuOptions::default()),
            DeviceChoice::Auto => match adapters::best_hardware_adapter() {
                Some(index) => Device::open_gpu(index, GpuOptions::default()),
                None => Ok(Device::Cpu),
            },
        }
    }

    pub fn open_gpu(index: usize, options: GpuOptions) -> Result<Device> {
        Ok(Device::Gpu(Arc::new(GpuContext::open(index, options)?)))
    }

    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    /// Whether tensors of `dtype` can live and be computed on here.
    pub fn supports(&self, dtype: DType) -> bool {
        match self {
            Device::Cpu => true,
            Device::Gpu(ctx) => ctx.supports(dtype),
        }
    }

    /// `preferred` if this device computes in it, else f32 (e.g. f16 on a GPU without SHADER_F16).
    pub fn float_dtype(&self, preferred: DType) -> DType {
        if self.supports(preferred) {
            preferred
        } else {
            DType::F32
        }
    }

    /// Memory held by tensors on this device.
    pub fn memory_stats(&self) -> MemoryStats {
        match self {
            Device::Cpu => cpu_stats(),
            Device::Gpu(ctx) => ctx.memory_stats(),
        }
    }

    /// Gives the device back the free buffers a GPU's pool keeps for reuse (nothing on the CPU
    /// backend, which caches none). Worth it where the sizes to come differ from those freed, as
    /// between the phases of a generation.
    pub fn release_cached_memory(&self) {
        if let Device::Gpu(ctx) = self {
            ctx.trim_pool();
        }
    }

    /// Starts a new peak-memory window at the current use.
    pub fn reset_peak_memory(&self) {
        match self {
            Device::Cpu => crate::memory::CPU_TENSOR_BYTES.reset_peak(),
            Device::Gpu(ctx) => ctx.reset_peak_memory(),
        }
    }

    /// Sets (or lifts) a hard limit on this device's memory: on a GPU, bytes reserved from the
    /// driver (cached free buffers are given back before it is crossed); on the CPU backend, bytes
    /// held by tensors, process-wide. An allocation that would cross it fails naming the tensor.
    pub fn set_memory_budget(&self, budget: Option<u64>) {
        match self {
            Device::Cpu => crate::memory::set_cpu_budget(budget),
            Device::Gpu(ctx) => ctx.set_memory_budget(budget),
        }
    }

    /// Waits until all recorded work has finished.
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Gpu(ctx) => ctx.synchronize(),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".to_string(),
            Device::Gpu(ctx) => format!("gpu:{} {}", ctx.index(), ctx.info().name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_choices_parse() {
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            "gpu:2".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Gpu(2)
        );
        let err = "gpu:x".parse::<DeviceChoice>().unwrap_err().to_string();
        assert!(
            err.contains("gpu:x") && err.contains("auto, cpu or gpu:N"),
            "{err}"
        );
    }
}
