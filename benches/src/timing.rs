//! Times one case: GPU timestamp queries where the device has them, wall clock otherwise.

use std::time::Instant;

use kiln_runtime::{Device, Result};
use serde::{Deserialize, Serialize};

use crate::cases::{Case, Work};

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Timing {
    /// Summed GPU time of the case's dispatches, from timestamp queries.
    GpuTimestamps,
    /// Host time around the runs, waiting for the device at the end.
    WallClock,
    /// CUDA events around the timed loop (tools/torch_bench.py's reports).
    CudaEvents,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measurement {
    pub name: String,
    pub op: String,
    pub dtype: String,
    pub shape: String,
    pub params: serde_json::Value,
    pub iters: usize,
    /// Mean time of one run, in milliseconds.
    pub mean_ms: f64,
    pub gflops: Option<f64>,
    pub gbps: Option<f64>,
    /// Seconds per output megapixel, for image models (upscalers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s_per_mpix: Option<f64>,
    pub timing: Timing,
}

/// Runs `warmup` untimed and `iters` timed repetitions of `case` on `device`.
pub fn measure(case: &Case, device: &Device, warmup: usize, iters: usize) -> Result<Measurement> {
    let run = (case.prepare)(device)?;
    for _ in 0..warmup {
        run()?;
    }
    device.synchronize()?;
    let iters = iters.max(1);
    let (seconds, timing) = match device {
        Device::Gpu(ctx) if ctx.has_timestamps() => {
            ctx.begin_profiling()?;
            for _ in 0..iters {
                run()?;
            }
            let timings = ctx.end_profiling()?;
            let total: f64 = timings.iter().map(|t| t.nanos).sum();
            (total * 1e-9 / iters as f64, Timing::GpuTimestamps)
        }
        _ => {
            let start = Instant::now();
            for _ in 0..iters {
                run()?;
            }
            device.synchronize()?;
            (
                start.elapsed().as_secs_f64() / iters as f64,
                Timing::WallClock,
            )
        }
    };
    let (gflops, gbps) = match case.work {
        Work::Flops(f) => (Some(f / seconds * 1e-9), None),
        Work::Bytes(b) => (None, Some(b / seconds * 1e-9)),
        Work::Model | Work::Pixels(_) => (None, None),
    };
    let s_per_mpix = match case.work {
        Work::Pixels(p) => Some(seconds / (p * 1e-6)),
        _ => None,
    };
    Ok(Measurement {
        name: case.name.clone(),
        op: case.op.to_string(),
        dtype: case.dtype.to_string(),
        shape: case.shape.clone(),
        params: case.params.clone(),
        iters,
        mean_ms: seconds * 1e3,
        gflops,
        gbps,
        s_per_mpix,
        timing,
    })
}
