//! Device time from timestamp queries: per dispatch (`begin_profiling`, for kernel benchmarks; one
//! pass per dispatch) or per compute pass (`set_gpu_timing`, cheap enough to leave on for a model run),
//! and the counters of `GpuStats`.

use super::batch::Batch;
use super::stats::GpuStats;
use super::{lock, GpuContext};
use crate::{Error, Result};

const PROFILE_CAPACITY: u32 = 1024;
/// Compute passes one submission can time; more forces a submission.
const TIMER_CAPACITY: u32 = 1024;

/// GPU time of one dispatch, from timestamp queries.
#[derive(Clone, Debug)]
pub struct KernelTiming {
    pub label: String,
    pub nanos: f64,
}

fn query_set(device: &wgpu::Device, capacity: u32) -> (wgpu::QuerySet, wgpu::Buffer) {
    let queries = device.create_query_set(&wgpu::QuerySetDescriptor {
        label: Some("kiln timestamps"),
        ty: wgpu::QueryType::Timestamp,
        count: 2 * capacity,
    });
    let resolve = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("kiln timestamp resolve"),
        size: 16 * capacity as u64,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    (queries, resolve)
}

/// Resolves the first `pairs` begin/end pairs into a buffer the host can map.
fn resolve_pairs(
    device: &wgpu::Device,
    encoder: &mut wgpu::CommandEncoder,
    queries: &wgpu::QuerySet,
    resolve: &wgpu::Buffer,
    pairs: u32,
) -> wgpu::Buffer {
    encoder.resolve_query_set(queries, 0..2 * pairs, resolve, 0);
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("kiln timestamps readback"),
        size: 16 * pairs as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    encoder.copy_buffer_to_buffer(resolve, 0, &staging, 0, 16 * pairs as u64);
    staging
}

fn writes(queries: &wgpu::QuerySet, pair: u32) -> wgpu::ComputePassTimestampWrites<'_> {
    wgpu::ComputePassTimestampWrites {
        query_set: queries,
        beginning_of_pass_write_index: Some(2 * pair),
        end_of_pass_write_index: Some(2 * pair + 1),
    }
}

pub(crate) struct Profiler {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    labels: Vec<String>,
    results: Vec<KernelTiming>,
}

impl Profiler {
    pub fn full(&self) -> bool {
        self.labels.len() as u32 >= PROFILE_CAPACITY
    }

    pub fn next_writes(&mut self, label: &str) -> wgpu::ComputePassTimestampWrites<'_> {
        self.labels.push(label.to_string());
        writes(&self.queries, self.labels.len() as u32 - 1)
    }

    pub fn resolve(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Option<wgpu::Buffer> {
        let n = self.labels.len() as u32;
        (n > 0).then(|| resolve_pairs(device, encoder, &self.queries, &self.resolve, n))
    }

    pub fn collect(&mut self, ticks: &[u64], period: f64) {
        for (i, label) in self.labels.drain(..).enumerate() {
            let nanos = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period;
            self.results.push(KernelTiming { label, nanos });
        }
    }
}

pub(crate) struct PassTimer {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    /// Passes given timestamp writes in the batch being recorded.
    used: u32,
    /// Resolved timestamps of submitted batches, read when stats are asked for.
    pending: Vec<(wgpu::Buffer, u32)>,
}

impl PassTimer {
    pub fn full(&self) -> bool {
        self.used >= TIMER_CAPACITY
    }

    pub fn next_writes(&mut self) -> wgpu::ComputePassTimestampWrites<'_> {
        self.used += 1;
        writes(&self.queries, self.used - 1)
    }

    pub fn resolve(&mut self, device: &wgpu::Device, encoder: &mut wgpu::CommandEncoder) {
        if self.used > 0 {
            let staging = resolve_pairs(device, encoder, &self.queries, &self.resolve, self.used);
            self.pending.push((staging, self.used));
            self.used = 0;
        }
    }
}

impl GpuContext {
    /// Starts recording GPU time per dispatch (needs TIMESTAMP_QUERY).
    pub fn begin_profiling(&self) -> Result<()> {
        self.require_timestamps()?;
        let mut batch = lock(&self.batch);
        self.flush_locked(&mut batch)?;
        let (queries, resolve) = query_set(&self.device, PROFILE_CAPACITY);
        batch.profiler = Some(Profiler {
            queries,
            resolve,
            labels: Vec::new(),
            results: Vec::new(),
        });
        Ok(())
    }

    /// Stops profiling and returns the GPU time of every dispatch since `begin_profiling`.
    pub fn end_profiling(&self) -> Result<Vec<KernelTiming>> {
        let mut batch = lock(&self.batch);
        self.flush_locked(&mut batch)?;
        Ok(batch.profiler.take().map(|p| p.results).unwrap_or_default())
    }

    fn require_timestamps(&self) -> Result<()> {
        if self.has_timestamps() {
            Ok(())
        } else {
            Err(Error::Device(format!(
                "gpu:{} ({}) has no timestamp queries",
                self.index(),
                self.info().name
            )))
        }
    }

    /// Times every compute pass with timestamp queries into `GpuStats::gpu_nanos`, where the device
    /// has them; returns whether timing is on. Per-dispatch profiling takes precedence while active.
    pub fn set_gpu_timing(&self, on: bool) -> Result<bool> {
        let mut batch = lock(&self.batch);
        self.flush_locked(&mut batch)?;
        if !on || !self.has_timestamps() {
            self.collect_pass_times(&mut batch)?;
            batch.timer = None;
            return Ok(false);
        }
        if batch.timer.is_none() {
            let (queries, resolve) = query_set(&self.device, TIMER_CAPACITY);
            batch.timer = Some(PassTimer {
                queries,
                resolve,
                used: 0,
                pending: Vec::new(),
            });
        }
        Ok(true)
    }

    /// Counters since the context was opened. Reading device times waits for the submissions they
    /// belong to, so call it once the work of interest has finished (after a readback or
    /// `synchronize`); work still being recorded is not counted yet.
    pub fn stats(&self) -> Result<GpuStats> {
        let mut batch = lock(&self.batch);
        self.collect_pass_times(&mut batch)?;
        let mut stats = batch.stats;
        stats.compile_nanos = self.pipelines.compile_nanos();
        Ok(stats)
    }

    fn collect_pass_times(&self, batch: &mut Batch) -> Result<()> {
        let Some(timer) = batch.timer.as_mut() else {
            return Ok(());
        };
        let pending = std::mem::take(&mut timer.pending);
        let period = self.queue.get_timestamp_period() as f64;
        for (staging, passes) in pending {
            let bytes = self.map_and_read(&staging)?;
            let ticks: &[u64] = bytemuck::cast_slice(&bytes);
            for pass in ticks.chunks_exact(2).take(passes as usize) {
                batch.stats.gpu_nanos += (pass[1].saturating_sub(pass[0]) as f64 * period) as u64;
                batch.stats.timed_passes += 1;
            }
        }
        Ok(())
    }
}
