//! Counters of the command path, so a caller can see what one model step costs the host (recording
//! and submitting) next to what it costs the device (timestamp queries).

use std::ops::{Add, Sub};
use std::time::Instant;

/// Totals since the context was opened; subtract two snapshots to get the cost of the work between.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GpuStats {
    /// Kernel launches recorded.
    pub dispatches: u64,
    /// Command buffers handed to the queue.
    pub submissions: u64,
    /// Compute passes opened.
    pub passes: u64,
    /// Bind groups created (a cache miss).
    pub bind_groups_created: u64,
    /// Dispatches that found their bind group in the cache.
    pub bind_groups_reused: u64,
    /// Host time inside `dispatch` (checks, pipeline lookup, bind group, parameters, pass recording),
    /// less pipeline compilation.
    pub record_nanos: u64,
    /// Host time closing a batch: parameter upload and `CommandEncoder::finish`, where wgpu turns the
    /// recorded passes into driver commands (resource tracking, barriers).
    pub finish_nanos: u64,
    /// Host time inside `Queue::submit`. A driver that runs work synchronously or waits for earlier
    /// work there (llvmpipe) adds device time to it; a hardware driver returns at once.
    pub submit_nanos: u64,
    /// Host time compiling pipelines on first use (kept apart: a one-off, not per-step cost).
    pub compile_nanos: u64,
    /// Device time of the timed compute passes (see `GpuContext::set_gpu_timing`).
    pub gpu_nanos: u64,
    /// Compute passes whose device time is in `gpu_nanos`.
    pub timed_passes: u64,
}

impl GpuStats {
    /// Host time spent recording and submitting, in milliseconds.
    pub fn host_ms(&self) -> f64 {
        (self.record_nanos + self.finish_nanos + self.submit_nanos) as f64 / 1e6
    }

    pub fn gpu_ms(&self) -> f64 {
        self.gpu_nanos as f64 / 1e6
    }
}

impl Sub for GpuStats {
    type Output = GpuStats;

    /// Saturating, so a counter reset between snapshots gives zeros rather than a panic.
    fn sub(self, rhs: GpuStats) -> GpuStats {
        GpuStats {
            dispatches: self.dispatches.saturating_sub(rhs.dispatches),
            submissions: self.submissions.saturating_sub(rhs.submissions),
            passes: self.passes.saturating_sub(rhs.passes),
            bind_groups_created: self
                .bind_groups_created
                .saturating_sub(rhs.bind_groups_created),
            bind_groups_reused: self
                .bind_groups_reused
                .saturating_sub(rhs.bind_groups_reused),
            record_nanos: self.record_nanos.saturating_sub(rhs.record_nanos),
            finish_nanos: self.finish_nanos.saturating_sub(rhs.finish_nanos),
            submit_nanos: self.submit_nanos.saturating_sub(rhs.submit_nanos),
            compile_nanos: self.compile_nanos.saturating_sub(rhs.compile_nanos),
            gpu_nanos: self.gpu_nanos.saturating_sub(rhs.gpu_nanos),
            timed_passes: self.timed_passes.saturating_sub(rhs.timed_passes),
        }
    }
}

impl Add for GpuStats {
    type Output = GpuStats;

    fn add(self, rhs: GpuStats) -> GpuStats {
        GpuStats {
            dispatches: self.dispatches + rhs.dispatches,
            submissions: self.submissions + rhs.submissions,
            passes: self.passes + rhs.passes,
            bind_groups_created: self.bind_groups_created + rhs.bind_groups_created,
            bind_groups_reused: self.bind_groups_reused + rhs.bind_groups_reused,
            record_nanos: self.record_nanos + rhs.record_nanos,
            finish_nanos: self.finish_nanos + rhs.finish_nanos,
            submit_nanos: self.submit_nanos + rhs.submit_nanos,
            compile_nanos: self.compile_nanos + rhs.compile_nanos,
            gpu_nanos: self.gpu_nanos + rhs.gpu_nanos,
            timed_passes: self.timed_passes + rhs.timed_passes,
        }
    }
}

pub(crate) fn nanos_since(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}
