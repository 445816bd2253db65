//! The wgpu side of the runtime: one `GpuContext` per opened adapter, owning its device and queue, the
//! buffer pool, the pipeline cache and the batch of recorded commands.

mod batch;
mod bind_cache;
mod buffer;
mod params;
mod pipeline;
mod reflect;
mod stats;
mod timing;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub use batch::{BufferArg, Dispatch};
pub use buffer::GpuBuffer;
use buffer::RawBuffer;
pub use pipeline::PipelineKey;
pub use stats::GpuStats;
pub use timing::KernelTiming;

use crate::adapters;
use crate::memory::MemoryStats;
use crate::pool::Pool;
use crate::{DType, Error, Result};

/// Knobs for opening a device; tests use them to imitate smaller hardware.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Lowers the storage-binding limit below the adapter's.
    pub max_storage_binding_size: Option<u64>,
    /// Creates the device without SHADER_F16 even where the adapter has it.
    pub disable_f16: bool,
}

/// Features kiln uses when an adapter has them.
fn wanted_features() -> wgpu::Features {
    wgpu::Features::SHADER_F16
        | wgpu::Features::SUBGROUP
        | wgpu::Features::TIMESTAMP_QUERY
        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
}

pub struct GpuContext {
    index: usize,
    info: wgpu::AdapterInfo,
    device: wgpu::Device,
    queue: wgpu::Queue,
    features: wgpu::Features,
    limits: wgpu::Limits,
    /// Binding limit in force: the device's, or a lower one from `GpuOptions`.
    max_binding: u64,
    pool: Arc<Mutex<Pool<RawBuffer>>>,
    next_buffer_id: AtomicU64,
    pipelines: pipeline::PipelineCache,
    batch: Mutex<batch::Batch>,
    /// Errors wgpu reported outside an error scope, surfaced by the next flush.
    uncaptured: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuContext(gpu:{} {})", self.index, self.info.name)
    }
}

impl GpuContext {
    pub fn open(index: usize, options: GpuOptions) -> Result<GpuContext> {
        let all = adapters::adapters();
        let adapter = all.get(index).ok_or_else(|| {
            Error::Device(format!(
                "gpu:{index} does not exist; {} adapter(s) found (see `kiln devices`)",
                all.len()
            ))
        })?;
        let info = adapter.get_info();
        let mut features = adapter.features() & wanted_features();
        if options.disable_f16 {
            features.remove(wgpu::Features::SHADER_F16);
        }
        // The adapter's own limits, not WebGPU's defaults: models need bindings far over 128 MiB.
        let limits = adapter.limits();
        let desc = wgpu::DeviceDescriptor {
            label: Some("kiln"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .map_err(|e| Error::Device(format!("gpu:{index} ({}): {e}", info.name)))?;
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(e.to_string());
        }));
        let mut max_binding = limits.max_storage_buffer_binding_size;
        if let Some(lower) = options.max_storage_binding_size {
            max_binding = max_binding.min(lower);
        }
        let batch = batch::Batch::new(&device, &limits);
        Ok(GpuContext {
            index,
            info,
            device,
            queue,
            features,
            limits,
            max_binding,
            pool: Arc::new(Mutex::new(Pool::default())),
            next_buffer_id: AtomicU64::new(0),
            pipelines: pipeline::PipelineCache::default(),
            batch: Mutex::new(batch),
            uncaptured,
        })
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    pub fn features(&self) -> wgpu::Features {
        self.features
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    pub fn wgpu_device(&self) -> &wgpu::Device {
        &self.device
    }

    /// Largest storage binding a kernel may use, in bytes.
    pub fn max_binding_size(&self) -> u64 {
        self.max_binding
    }

    pub fn supports(&self, dtype: DType) -> bool {
        match dtype {
            DType::F16 => self.features.contains(wgpu::Features::SHADER_F16),
            DType::F32 | DType::U32 => true,
        }
    }

    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    pub(crate) fn check_dtype(&self, dtype: DType, op: &str) -> Result<()> {
        if self.supports(dtype) {
            Ok(())
        } else {
            Err(Error::dtype(
                op,
                format!(
                    "{dtype} on gpu:{} ({}), which lacks SHADER_F16",
                    self.index, self.info.name
                ),
            ))
        }
    }

    pub fn memory_stats(&self) -> MemoryStats {
        lock(&self.pool).stats()
    }

    /// Starts a new peak-memory window.
    pub fn reset_peak_memory(&self) {
        lock(&self.pool).reset_peak();
    }

    /// Gives cached free buffers back to the driver, forgetting the bind groups that use them (which
    /// would otherwise keep them alive).
    pub fn trim_pool(&self) {
        let freed = lock(&self.pool).trim();
        self.forget(freed);
    }

    /// Drops trimmed buffers together with the cached bind groups that would keep them alive.
    fn forget(&self, freed: Vec<RawBuffer>) {
        let mut ids: Vec<u64> = freed.iter().map(|b| b.id).collect();
        ids.sort_unstable();
        lock(&self.batch).forget_buffers(&ids);
        drop(freed);
    }

    /// Sets (or lifts) a hard limit on the bytes reserved from the driver: over it, cached free
    /// buffers are given back first, and a request that still does not fit fails naming the tensor.
    pub fn set_memory_budget(&self, budget: Option<u64>) {
        lock(&self.pool).set_budget(budget);
    }

    /// (buffers created, requests served from the pool).
    pub fn pool_counts(&self) -> (u64, u64) {
        lock(&self.pool).counts()
    }

    /// A pooled storage buffer of at least `bytes`. `op` and `shape` name the request in errors.
    pub fn alloc(self: &Arc<Self>, bytes: u64, op: &str, shape: &[usize]) -> Result<GpuBuffer> {
        // Bindings are rounded to 16 bytes so kernels may read f16 data as vec4.
        let bytes = bytes.max(4).next_multiple_of(16);
        if bytes > self.limits.max_buffer_size {
            return Err(Error::limit(
                op,
                format!(
                    "tensor {shape:?} needs {bytes} bytes, over gpu:{}'s max buffer size {}",
                    self.index, self.limits.max_buffer_size
                ),
            ));
        }
        let mut pool = lock(&self.pool);
        let trimmed = pool.make_room(bytes).map_err(|e| {
            Error::limit(
                op,
                format!(
                    "tensor {shape:?} needs {} more on gpu:{}, over the memory budget of {} \
                     ({} already held by tensors)",
                    crate::memory::format_bytes(e.request),
                    self.index,
                    crate::memory::format_bytes(e.budget),
                    crate::memory::format_bytes(e.live)
                ),
            )
        })?;
        let acquired = pool.acquire(bytes, |class| {
            // Classes round up; never ask the driver for more than it allows.
            let size = class.min(self.limits.max_buffer_size);
            let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            match pollster::block_on(scope.pop()) {
                None => Ok(RawBuffer {
                    id: self.next_buffer_id.fetch_add(1, Ordering::Relaxed),
                    buffer,
                }),
                Some(e) => Err(Error::limit(
                    op,
                    format!("allocating {size} bytes for {shape:?}: {e}"),
                )),
            }
        });
        drop(pool);
        if !trimmed.is_empty() {
            self.forget(trimmed);
        }
        let (buffer, class) = acquired?;
        Ok(GpuBuffer::new(self.clone(), buffer, class, bytes))
    }

    pub(crate) fn release(&self, buffer: RawBuffer, class: u64) {
        let rank = buffer.id;
        lock(&self.pool).release(buffer, class, rank);
    }

    fn take_uncaptured(&self) -> Result<()> {
        let mut errors = lock(&self.uncaptured);
        if errors.is_empty() {
            Ok(())
        } else {
            let msg = errors.join("; ");
            errors.clear();
            Err(Error::Gpu(msg))
        }
    }
}

/// Locks a mutex, carrying on after another thread panicked while holding it (the data is still sound:
/// every critical section here leaves it consistent before it can panic).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
