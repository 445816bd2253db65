//! Command batching: dispatches are recorded into one encoder and submitted together, either when the
//! host needs data back, before an upload that could overtake recorded work, or every
//! `MAX_DISPATCHES_PER_SUBMIT` dispatches so the GPU starts while the host keeps recording.

use std::num::NonZeroU64;
use std::sync::mpsc;
use std::time::Instant;

use super::stats::{nanos_since, GpuStats};
use super::{lock, GpuBuffer, GpuContext};
use crate::preprocess::{KernelSource, Variant};
use crate::{Error, Result, Tensor};

const MAX_DISPATCHES_PER_SUBMIT: usize = 512;
const PARAMS_CHUNK_BYTES: u64 = 64 * 1024;
const PROFILE_CAPACITY: u32 = 1024;
/// Compute passes one submission can time with `set_gpu_timing`; more forces a submission.
const TIMER_CAPACITY: u32 = 1024;

/// A storage buffer bound to a kernel at `binding`, with the name errors use for it.
pub struct BufferArg<'a> {
    pub binding: u32,
    pub name: &'static str,
    pub tensor: &'a Tensor,
}

impl<'a> BufferArg<'a> {
    pub fn new(binding: u32, name: &'static str, tensor: &'a Tensor) -> Self {
        BufferArg {
            binding,
            name,
            tensor,
        }
    }
}

/// One kernel launch. Binding 0 is the uniform `params` block; the buffers name their own bindings, so
/// entry points of one file can share declarations and each bind only what it uses.
pub struct Dispatch<'a> {
    /// The op, as errors should name it ("matmul").
    pub op: &'a str,
    pub kernel: &'static KernelSource,
    pub entry: &'static str,
    pub variant: Variant,
    pub params: &'a [u8],
    pub buffers: &'a [BufferArg<'a>],
    pub workgroups: [u32; 3],
}

/// GPU time of one dispatch, from timestamp queries.
#[derive(Clone, Debug)]
pub struct KernelTiming {
    pub label: String,
    pub nanos: f64,
}

/// Uniform parameter blocks of one submission, packed into a few large buffers.
struct ParamsArena {
    align: u64,
    in_use: Vec<(wgpu::Buffer, Vec<u8>)>,
    free: Vec<wgpu::Buffer>,
}

impl ParamsArena {
    fn slot(&mut self, device: &wgpu::Device, params: &[u8]) -> (wgpu::Buffer, u64) {
        let need_new = match self.in_use.last() {
            None => true,
            Some((_, bytes)) => {
                (bytes.len() as u64).next_multiple_of(self.align) + params.len() as u64
                    > PARAMS_CHUNK_BYTES
            }
        };
        if need_new {
            let buffer = self.free.pop().unwrap_or_else(|| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("kiln params"),
                    size: PARAMS_CHUNK_BYTES,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            });
            self.in_use
                .push((buffer, Vec::with_capacity(PARAMS_CHUNK_BYTES as usize)));
        }
        let (buffer, bytes) = self.in_use.last_mut().expect("a chunk was just ensured");
        let offset = (bytes.len() as u64).next_multiple_of(self.align);
        bytes.resize(offset as usize, 0);
        bytes.extend_from_slice(params);
        (buffer.clone(), offset)
    }

    /// Uploads this submission's parameters; they land before the submission's commands run.
    fn upload(&mut self, queue: &wgpu::Queue) {
        for (buffer, bytes) in &self.in_use {
            queue.write_buffer(buffer, 0, bytes);
        }
    }

    fn recycle(&mut self) {
        self.free.extend(self.in_use.drain(..).map(|(b, _)| b));
    }
}

struct Profiler {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    labels: Vec<String>,
    results: Vec<KernelTiming>,
}

/// Device time of whole compute passes, summed into `GpuStats::gpu_nanos`: cheap enough to leave on
/// for a model run, unlike the per-dispatch `Profiler`.
struct PassTimer {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    /// Passes given timestamp writes in the batch being recorded.
    used: u32,
    /// Resolved timestamps of submitted batches, read when stats are asked for.
    pending: Vec<(wgpu::Buffer, u32)>,
}

pub(crate) struct Batch {
    encoder: Option<wgpu::CommandEncoder>,
    recorded: usize,
    params: ParamsArena,
    profiler: Option<Profiler>,
    timer: Option<PassTimer>,
    stats: GpuStats,
}

impl Batch {
    pub fn new(limits: &wgpu::Limits) -> Self {
        Batch {
            encoder: None,
            recorded: 0,
            params: ParamsArena {
                align: limits.min_uniform_buffer_offset_alignment as u64,
                in_use: Vec::new(),
                free: Vec::new(),
            },
            profiler: None,
            timer: None,
            stats: GpuStats::default(),
        }
    }
}

impl GpuContext {
    /// Splits `groups` workgroups into a grid within the per-dimension limit. Kernels recover the linear
    /// index as `wid.x + wid.y * num_workgroups.x` and skip ids past their work.
    pub fn grid(&self, op: &str, groups: u64) -> Result<[u32; 3]> {
        let max = self.limits().max_compute_workgroups_per_dimension as u64;
        if groups <= max {
            return Ok([groups.max(1) as u32, 1, 1]);
        }
        let y = groups.div_ceil(max);
        if y > max {
            return Err(Error::limit(
                op,
                format!("{groups} workgroups exceed the device's grid"),
            ));
        }
        Ok([groups.div_ceil(y) as u32, y as u32, 1])
    }

    /// Records one kernel launch into the current batch.
    pub fn dispatch(&self, d: Dispatch<'_>) -> Result<()> {
        let start = Instant::now();
        let compiled_before = self.pipelines.compile_nanos();
        let max = self.limits().max_compute_workgroups_per_dimension;
        if d.workgroups.iter().any(|&n| n > max) {
            return Err(Error::limit(
                d.op,
                format!(
                    "{:?} workgroups, over the device's {max} per dimension",
                    d.workgroups
                ),
            ));
        }
        for arg in d.buffers {
            let buffer = arg.tensor.gpu_buffer().ok_or_else(|| {
                Error::Device(format!("{}: tensor `{}` is not on the GPU", d.op, arg.name))
            })?;
            if !std::ptr::eq(std::sync::Arc::as_ptr(buffer.context()), self) {
                return Err(Error::Device(format!(
                    "{}: tensor `{}` is on another GPU",
                    d.op, arg.name
                )));
            }
            if buffer.bytes() > self.max_binding_size() {
                return Err(Error::limit(
                    d.op,
                    format!(
                        "tensor `{}` {:?} {} is {} bytes, over the device's storage-binding limit of {} bytes",
                        arg.name,
                        arg.tensor.shape(),
                        arg.tensor.dtype(),
                        arg.tensor.size_in_bytes(),
                        self.max_binding_size()
                    ),
                ));
            }
        }
        let pipeline = self
            .pipelines
            .get(&self.device, d.kernel, d.entry, &d.variant)?;
        // Every slot is padded to a full 256 bytes (the usual uniform offset alignment, so it costs no
        // space), which covers any parameter struct up to that size without launchers padding by hand.
        let mut params = d.params.to_vec();
        params.resize(params.len().max(256).next_multiple_of(16), 0);

        let mut batch = lock(&self.batch);
        let submitted_before = batch.stats.submit_nanos + batch.stats.finish_nanos;
        let (params_buffer, offset) = batch.params.slot(&self.device, &params);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &params_buffer,
                offset,
                size: NonZeroU64::new(params.len() as u64),
            }),
        }];
        for arg in d.buffers {
            let buffer = arg.tensor.gpu_buffer().expect("checked above");
            entries.push(wgpu::BindGroupEntry {
                binding: arg.binding,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: buffer.raw(),
                    offset: 0,
                    size: NonZeroU64::new(buffer.bytes()),
                }),
            });
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });

        batch.stats.bind_groups_created += 1;
        if batch
            .profiler
            .as_ref()
            .is_some_and(|p| p.labels.len() as u32 >= PROFILE_CAPACITY)
            || batch
                .timer
                .as_ref()
                .is_some_and(|t| t.used >= TIMER_CAPACITY)
        {
            self.flush_locked(&mut batch)?;
        }
        let timestamp_index = batch.profiler.as_mut().map(|p| {
            p.labels.push(format!("{}:{}", d.kernel.file, d.entry));
            p.labels.len() as u32 - 1
        });
        let Batch {
            encoder,
            profiler,
            timer,
            stats,
            ..
        } = &mut *batch;
        let encoder = encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        });
        {
            let timestamp_writes = match (profiler.as_ref(), timestamp_index) {
                (Some(p), Some(i)) => Some(wgpu::ComputePassTimestampWrites {
                    query_set: &p.queries,
                    beginning_of_pass_write_index: Some(2 * i),
                    end_of_pass_write_index: Some(2 * i + 1),
                }),
                _ => timer.as_mut().map(|t| {
                    t.used += 1;
                    wgpu::ComputePassTimestampWrites {
                        query_set: &t.queries,
                        beginning_of_pass_write_index: Some(2 * t.used - 2),
                        end_of_pass_write_index: Some(2 * t.used - 1),
                    }
                }),
            };
            stats.passes += 1;
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
        }
        batch.recorded += 1;
        batch.stats.dispatches += 1;
        // Compilation and a submission forced mid-dispatch are counted elsewhere.
        let elsewhere = (self.pipelines.compile_nanos() - compiled_before)
            + (batch.stats.submit_nanos + batch.stats.finish_nanos - submitted_before);
        batch.stats.record_nanos += nanos_since(start).saturating_sub(elsewhere);
        if batch.recorded >= MAX_DISPATCHES_PER_SUBMIT {
            self.flush_locked(&mut batch)?;
        }
        Ok(())
    }

    /// Submits everything recorded so far without waiting for it.
    pub fn flush(&self) -> Result<()> {
        let mut batch = lock(&self.batch);
        self.flush_locked(&mut batch)
    }

    fn flush_locked(&self, batch: &mut Batch) -> Result<()> {
        let Some(mut encoder) = batch.encoder.take() else {
            return self.take_uncaptured();
        };
        let profiled = batch
            .profiler
            .as_ref()
            .map(|p| p.labels.len() as u32)
            .unwrap_or(0);
        let mut readback = None;
        if let Some(p) = batch.profiler.as_ref().filter(|_| profiled > 0) {
            encoder.resolve_query_set(&p.queries, 0..2 * profiled, &p.resolve, 0);
            let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kiln timestamps"),
                size: 16 * profiled as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            encoder.copy_buffer_to_buffer(&p.resolve, 0, &staging, 0, 16 * profiled as u64);
            readback = Some(staging);
        }
        if let Some(t) = batch.timer.as_mut().filter(|t| t.used > 0) {
            encoder.resolve_query_set(&t.queries, 0..2 * t.used, &t.resolve, 0);
            let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kiln pass timestamps"),
                size: 16 * t.used as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            encoder.copy_buffer_to_buffer(&t.resolve, 0, &staging, 0, 16 * t.used as u64);
            t.pending.push((staging, t.used));
            t.used = 0;
        }
        let start = Instant::now();
        batch.params.upload(&self.queue);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let commands = encoder.finish();
        batch.stats.finish_nanos += nanos_since(start);
        let start = Instant::now();
        self.queue.submit([commands]);
        let error = pollster::block_on(scope.pop());
        batch.params.recycle();
        batch.recorded = 0;
        batch.stats.submissions += 1;
        batch.stats.submit_nanos += nanos_since(start);
        if let Some(e) = error {
            return Err(Error::Gpu(e.to_string()));
        }
        if let Some(staging) = readback {
            let bytes = self.map_and_read(&staging)?;
            let ticks: &[u64] = bytemuck::cast_slice(&bytes);
            let period = self.queue.get_timestamp_period() as f64;
            let p = batch.profiler.as_mut().expect("profiling was on");
            for (i, label) in p.labels.drain(..).enumerate() {
                let nanos = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period;
                p.results.push(KernelTiming { label, nanos });
            }
        }
        self.take_uncaptured()
    }

    /// Waits until all submitted work has finished.
    pub fn synchronize(&self) -> Result<()> {
        self.flush()?;
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the device: {e}")))?;
        Ok(())
    }

    /// Copies `data` into `buffer`. Recorded work is submitted first, because a queue write runs before
    /// the commands of the next submission and could otherwise overwrite data they still read.
    pub fn write_buffer(&self, buffer: &GpuBuffer, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let mut batch = lock(&self.batch);
        if batch.encoder.is_some() {
            self.flush_locked(&mut batch)?;
        }
        if data.len().is_multiple_of(4) {
            self.queue.write_buffer(buffer.raw(), 0, data);
        } else {
            let mut padded = data.to_vec();
            padded.resize(data.len().next_multiple_of(4), 0);
            self.queue.write_buffer(buffer.raw(), 0, &padded);
        }
        Ok(())
    }

    /// Copies the first `bytes` of `buffer` back to the host, waiting for recorded work.
    pub fn read_buffer(&self, buffer: &GpuBuffer, bytes: u64) -> Result<Vec<u8>> {
        let size = bytes.next_multiple_of(4).min(buffer.bytes());
        if size == 0 {
            return Ok(Vec::new());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kiln readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        {
            let mut batch = lock(&self.batch);
            let encoder = batch.encoder.get_or_insert_with(|| {
                self.device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
            });
            encoder.copy_buffer_to_buffer(buffer.raw(), 0, &staging, 0, size);
            self.flush_locked(&mut batch)?;
        }
        self.map_and_read(&staging)
    }

    fn map_and_read(&self, staging: &wgpu::Buffer) -> Result<Vec<u8>> {
        let slice = staging.slice(..);
        let (tx, rx) = mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for a readback: {e}")))?;
        rx.recv()
            .map_err(|_| Error::Gpu("readback callback never ran".into()))?
            .map_err(|e| Error::Gpu(format!("mapping a readback buffer: {e}")))?;
        let data = slice
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("reading a mapped buffer: {e}")))?
            .to_vec();
        staging.unmap();
        Ok(data)
    }

    /// Starts recording GPU time per dispatch (needs TIMESTAMP_QUERY).
    pub fn begin_profiling(&self) -> Result<()> {
        if !self.has_timestamps() {
            return Err(Error::Device(format!(
                "gpu:{} ({}) has no timestamp queries",
                self.index(),
                self.info().name
            )));
        }
        let mut batch = lock(&self.batch);
        self.flush_locked(&mut batch)?;
        batch.profiler = Some(Profiler {
            queries: self.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kiln timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * PROFILE_CAPACITY,
            }),
            resolve: self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kiln timestamp resolve"),
                size: 16 * PROFILE_CAPACITY as u64,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
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

    /// Times every compute pass with timestamp queries (see `GpuStats::gpu_nanos`), where the device
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
            batch.timer = Some(PassTimer {
                queries: self.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("kiln pass timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2 * TIMER_CAPACITY,
                }),
                resolve: self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("kiln pass timestamp resolve"),
                    size: 16 * TIMER_CAPACITY as u64,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                }),
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
        let period = self.queue.get_timestamp_period() as f64;
        for (staging, passes) in std::mem::take(&mut timer.pending) {
            let bytes = self.map_and_read(&staging)?;
            let ticks: &[u64] = bytemuck::cast_slice(&bytes);
            for pass in ticks.chunks_exact(2).take(passes as usize) {
                batch.stats.gpu_nanos += (pass[1].saturating_sub(pass[0]) as f64 * period) as u64;
                batch.stats.timed_passes += 1;
            }
        }
        Ok(())
    }

    /// Number of distinct pipelines compiled so far.
    pub fn pipeline_count(&self) -> usize {
        self.pipelines.len()
    }
}
