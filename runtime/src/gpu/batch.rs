//! Command batching: dispatches are recorded into one open compute pass of one encoder and submitted
//! together, when the host needs data back, before an upload that could overtake recorded work, or
//! when a batch reaches `MAX_DISPATCHES_PER_SUBMIT` (bounding what recorded commands hold). A model
//! step of up to that many dispatches is therefore one submission.
//!
//! kiln's part of `dispatch` allocates nothing once warm: the pipeline and its bind group are found
//! in caches (bind groups keyed by pipeline and buffer ids, `bind_cache.rs`), parameters go into a
//! persistent arena bound at a dynamic offset (`params.rs`), and the pass stays open between
//! dispatches (wgpu orders dispatches within a pass with the barriers they need).

use std::num::NonZeroU64;
use std::sync::mpsc;
use std::time::Instant;

use super::bind_cache::{BindGroupCache, BindKey, MAX_STORAGE_BINDINGS};
use super::params::ParamsArena;
use super::pipeline::Kernel;
use super::stats::{nanos_since, GpuStats};
use super::timing::{PassTimer, Profiler};
use super::{lock, GpuBuffer, GpuContext};
use crate::preprocess::{KernelSource, Variant};
use crate::{Error, Result, Tensor};

const MAX_DISPATCHES_PER_SUBMIT: usize = 4096;

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

pub(crate) struct Batch {
    /// The open pass, if any; always ended before the encoder is used for anything else.
    pass: Option<wgpu::ComputePass<'static>>,
    encoder: Option<wgpu::CommandEncoder>,
    recorded: usize,
    params: ParamsArena,
    bind_groups: BindGroupCache,
    pub(super) profiler: Option<Profiler>,
    pub(super) timer: Option<PassTimer>,
    pub(super) stats: GpuStats,
}

impl Batch {
    pub fn new(device: &wgpu::Device, limits: &wgpu::Limits) -> Self {
        Batch {
            pass: None,
            encoder: None,
            recorded: 0,
            params: ParamsArena::new(device, limits),
            bind_groups: BindGroupCache::default(),
            profiler: None,
            timer: None,
            stats: GpuStats::default(),
        }
    }

    /// Drops cached bind groups that use these (sorted) buffer ids, which are being destroyed.
    pub fn forget_buffers(&mut self, ids: &[u64]) {
        self.bind_groups.evict(ids);
    }

    /// The encoder, with no pass open on it.
    fn encoder(&mut self, device: &wgpu::Device) -> &mut wgpu::CommandEncoder {
        bare_encoder(&mut self.pass, &mut self.encoder, device)
    }

    /// The open pass, opening one (timed, if timing is on) when there is none.
    fn pass(&mut self, device: &wgpu::Device) -> &mut wgpu::ComputePass<'static> {
        if self.pass.is_none() {
            self.stats.passes += 1;
            let timestamp_writes = self.timer.as_mut().map(PassTimer::next_writes);
            let pass = bare_encoder(&mut self.pass, &mut self.encoder, device)
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes,
                })
                .forget_lifetime();
            self.pass = Some(pass);
        }
        self.pass.as_mut().expect("a pass was just opened")
    }

    /// Whether recording one more dispatch needs a submission first (profiling or timing capacity).
    fn full(&self) -> bool {
        self.profiler.as_ref().is_some_and(Profiler::full)
            || (self.pass.is_none() && self.timer.as_ref().is_some_and(PassTimer::full))
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
        let key = self.check_dispatch(&d)?;
        let compiled_before = self.pipelines.compile_nanos();
        let kernel = self
            .pipelines
            .get(&self.device, d.kernel, d.entry, d.variant)?;
        let params_size = ParamsArena::slot_size(d.params.len());
        if params_size as u64 > self.limits().max_uniform_buffer_binding_size {
            return Err(Error::limit(
                d.op,
                format!(
                    "{} bytes of parameters, over the device's uniform binding limit",
                    d.params.len()
                ),
            ));
        }
        let key = BindKey {
            pipeline: kernel.id,
            params_size: params_size as u32,
            ..key
        };

        let mut guard = lock(&self.batch);
        let batch = &mut *guard;
        let submitted_before = batch.stats.submit_nanos + batch.stats.finish_nanos;
        if batch.full() {
            self.flush_locked(batch)?;
        }
        let offset = match batch.params.push(d.params) {
            Some(offset) => offset,
            None => {
                self.flush_locked(batch)?;
                batch
                    .params
                    .push(d.params)
                    .expect("an empty arena holds any slot under the binding limit")
            }
        };
        let bind_group = match batch.bind_groups.get(&key) {
            Some(group) => {
                batch.stats.bind_groups_reused += 1;
                group.clone()
            }
            None => {
                let group = self.create_bind_group(
                    &kernel,
                    &key,
                    (d.op, d.buffers),
                    batch.params.buffer(),
                )?;
                batch.bind_groups.insert(key, group.clone());
                batch.stats.bind_groups_created += 1;
                group
            }
        };

        if batch.profiler.is_some() {
            // Per-dispatch timings need a pass of their own per dispatch.
            batch.stats.passes += 1;
            let Batch {
                pass,
                encoder,
                profiler,
                ..
            } = batch;
            let writes = profiler
                .as_mut()
                .expect("checked above")
                .next_writes(&kernel.label);
            let mut pass = bare_encoder(pass, encoder, &self.device).begin_compute_pass(
                &wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes: Some(writes),
                },
            );
            record(&mut pass, &kernel, &bind_group, offset, d.workgroups);
        } else {
            let pass = batch.pass(&self.device);
            record(pass, &kernel, &bind_group, offset, d.workgroups);
        }
        batch.recorded += 1;
        batch.stats.dispatches += 1;
        // Compilation and a submission forced mid-dispatch are counted elsewhere.
        let elsewhere = (self.pipelines.compile_nanos() - compiled_before)
            + (batch.stats.submit_nanos + batch.stats.finish_nanos - submitted_before);
        batch.stats.record_nanos += nanos_since(start).saturating_sub(elsewhere);
        if batch.recorded >= MAX_DISPATCHES_PER_SUBMIT {
            self.flush_locked(batch)?;
        }
        Ok(())
    }

    /// Checks the launch and returns its bind key's buffer part.
    fn check_dispatch(&self, d: &Dispatch<'_>) -> Result<BindKey> {
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
        if d.buffers.len() > MAX_STORAGE_BINDINGS {
            return Err(Error::Device(format!(
                "{}: {} storage buffers, over the {MAX_STORAGE_BINDINGS} one dispatch may bind",
                d.op,
                d.buffers.len()
            )));
        }
        let mut key = BindKey {
            len: d.buffers.len() as u8,
            ..BindKey::default()
        };
        for (slot, arg) in key.storage.iter_mut().zip(d.buffers) {
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
            *slot = (arg.binding, buffer.id(), buffer.bytes());
        }
        Ok(key)
    }

    fn create_bind_group(
        &self,
        kernel: &Kernel,
        key: &BindKey,
        (op, buffers): (&str, &[BufferArg<'_>]),
        params: &wgpu::Buffer,
    ) -> Result<wgpu::BindGroup> {
        let mut entries = Vec::with_capacity(1 + buffers.len());
        entries.push(wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: params,
                offset: 0,
                size: NonZeroU64::new(key.params_size as u64),
            }),
        });
        for arg in buffers {
            let buffer = arg.tensor.gpu_buffer().expect("checked by check_dispatch");
            entries.push(wgpu::BindGroupEntry {
                binding: arg.binding,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: buffer.raw(),
                    offset: 0,
                    size: NonZeroU64::new(buffer.bytes()),
                }),
            });
        }
        // Checked here, on a miss only, so a binding that does not fit the kernel is reported with the
        // op's name and never cached.
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &kernel.layout,
            entries: &entries,
        });
        match pollster::block_on(scope.pop()) {
            None => Ok(group),
            Some(e) => Err(Error::Gpu(format!(
                "{}: binding buffers {:?} to {}: {e}",
                op,
                buffers
                    .iter()
                    .map(|b| (b.binding, b.name))
                    .collect::<Vec<_>>(),
                kernel.label
            ))),
        }
    }

    /// Submits everything recorded so far without waiting for it.
    pub fn flush(&self) -> Result<()> {
        let mut batch = lock(&self.batch);
        self.flush_locked(&mut batch)
    }

    pub(super) fn flush_locked(&self, batch: &mut Batch) -> Result<()> {
        batch.pass = None;
        let Some(mut encoder) = batch.encoder.take() else {
            return self.take_uncaptured();
        };
        let profile = batch
            .profiler
            .as_mut()
            .and_then(|p| p.resolve(&self.device, &mut encoder));
        if let Some(timer) = batch.timer.as_mut() {
            timer.resolve(&self.device, &mut encoder);
        }
        let start = Instant::now();
        batch.params.upload(&self.queue);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let commands = encoder.finish();
        batch.stats.finish_nanos += nanos_since(start);
        let start = Instant::now();
        self.queue.submit([commands]);
        let error = pollster::block_on(scope.pop());
        batch.recorded = 0;
        batch.stats.submissions += 1;
        batch.stats.submit_nanos += nanos_since(start);
        if let Some(e) = error {
            return Err(Error::Gpu(e.to_string()));
        }
        if let Some(staging) = profile {
            let bytes = self.map_and_read(&staging)?;
            let period = self.queue.get_timestamp_period() as f64;
            let p = batch.profiler.as_mut().expect("profiling was on");
            p.collect(bytemuck::cast_slice(&bytes), period);
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
            batch
                .encoder(&self.device)
                .copy_buffer_to_buffer(buffer.raw(), 0, &staging, 0, size);
            self.flush_locked(&mut batch)?;
        }
        self.map_and_read(&staging)
    }

    pub(super) fn map_and_read(&self, staging: &wgpu::Buffer) -> Result<Vec<u8>> {
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

    /// Number of distinct pipelines compiled so far.
    pub fn pipeline_count(&self) -> usize {
        self.pipelines.len()
    }

    /// Number of bind groups held in the cache.
    pub fn bind_group_count(&self) -> usize {
        lock(&self.batch).bind_groups.len()
    }
}

/// Ends any open pass and returns the encoder (created on first use).
fn bare_encoder<'a>(
    pass: &mut Option<wgpu::ComputePass<'static>>,
    encoder: &'a mut Option<wgpu::CommandEncoder>,
    device: &wgpu::Device,
) -> &'a mut wgpu::CommandEncoder {
    *pass = None;
    encoder.get_or_insert_with(|| {
        device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
    })
}

fn record(
    pass: &mut wgpu::ComputePass<'_>,
    kernel: &Kernel,
    bind_group: &wgpu::BindGroup,
    params_offset: u32,
    workgroups: [u32; 3],
) {
    pass.set_pipeline(&kernel.pipeline);
    pass.set_bind_group(0, bind_group, &[params_offset]);
    pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
}
