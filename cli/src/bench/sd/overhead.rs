//! Per-step host overhead of the GPU backend for `kiln bench sd`: host time recording and submitting
//! commands against device time from timestamp queries, with dispatch and submission counts.

use std::sync::Arc;

use anyhow::Result;
use kiln_runtime::gpu::{GpuContext, GpuStats};
use kiln_runtime::Device;
use serde::Serialize;

#[derive(Serialize)]
pub struct StepOverhead {
    /// Host time recording + submitting (pipeline compilation excluded).
    pub host_ms: f64,
    pub record_ms: f64,
    /// Parameter upload + encoder finish.
    pub finish_ms: f64,
    /// Inside `Queue::submit` (on llvmpipe this includes waiting for the device).
    pub submit_ms: f64,
    /// Device time of the step's compute passes; absent without timestamp queries.
    pub gpu_ms: Option<f64>,
    pub host_gpu_percent: Option<f64>,
    pub dispatches: u64,
    pub submissions: u64,
    pub passes: u64,
    pub bind_groups_created: u64,
    /// Host microseconds per dispatch: the figure that carries over to a real GPU.
    pub host_us_per_dispatch: f64,
    pub compile_ms: f64,
}

#[derive(Serialize)]
pub struct OverheadReport {
    pub gpu_timing: bool,
    /// One entry per UNet step; the first also covers text encoding and pipeline compilation.
    pub steps: Vec<StepOverhead>,
    /// Means over steps 2.. (steady state), or step 1 for a one-step run.
    pub steady: StepOverhead,
}

/// Takes a stats snapshot at every step mark.
pub struct Recorder {
    ctx: Arc<GpuContext>,
    timing: bool,
    last: GpuStats,
    steps: Vec<GpuStats>,
    error: Option<anyhow::Error>,
}

impl Recorder {
    /// None on the CPU backend, which records no commands.
    pub fn start(device: &Device) -> Result<Option<Recorder>> {
        let Device::Gpu(ctx) = device else {
            return Ok(None);
        };
        let timing = ctx.set_gpu_timing(true)?;
        Ok(Some(Recorder {
            ctx: ctx.clone(),
            timing,
            last: ctx.stats()?,
            steps: Vec::new(),
            error: None,
        }))
    }

    /// Called when a step has finished on the device (the sampler has read its output back).
    pub fn mark(&mut self) {
        match self.ctx.stats() {
            Ok(now) => {
                self.steps.push(now - self.last);
                self.last = now;
            }
            Err(e) => {
                self.error.get_or_insert(e.into());
            }
        }
    }

    pub fn finish(self) -> Result<OverheadReport> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.ctx.set_gpu_timing(false)?;
        let steps: Vec<StepOverhead> = self.steps.iter().map(|s| step(s, self.timing)).collect();
        let tail = if self.steps.len() > 1 {
            &self.steps[1..]
        } else {
            &self.steps[..]
        };
        let n = tail.len().max(1) as u64;
        let sum = tail.iter().fold(GpuStats::default(), |a, s| a + *s);
        let mut steady = step(&sum, self.timing);
        for v in [
            &mut steady.host_ms,
            &mut steady.record_ms,
            &mut steady.finish_ms,
            &mut steady.submit_ms,
            &mut steady.compile_ms,
        ] {
            *v /= n as f64;
        }
        if let Some(g) = steady.gpu_ms.as_mut() {
            *g /= n as f64;
        }
        for c in [
            &mut steady.dispatches,
            &mut steady.submissions,
            &mut steady.passes,
            &mut steady.bind_groups_created,
        ] {
            *c = c.div_ceil(n);
        }
        Ok(OverheadReport {
            gpu_timing: self.timing,
            steps,
            steady,
        })
    }
}

fn step(s: &GpuStats, timing: bool) -> StepOverhead {
    let host_ms = s.host_ms();
    let gpu_ms = timing.then(|| s.gpu_ms());
    StepOverhead {
        host_ms,
        record_ms: s.record_nanos as f64 / 1e6,
        finish_ms: s.finish_nanos as f64 / 1e6,
        submit_ms: s.submit_nanos as f64 / 1e6,
        host_gpu_percent: gpu_ms.filter(|&g| g > 0.0).map(|g| 100.0 * host_ms / g),
        gpu_ms,
        dispatches: s.dispatches,
        submissions: s.submissions,
        passes: s.passes,
        bind_groups_created: s.bind_groups_created,
        host_us_per_dispatch: 1e3 * host_ms / s.dispatches.max(1) as f64,
        compile_ms: s.compile_nanos as f64 / 1e6,
    }
}

pub fn print(r: &OverheadReport) {
    println!();
    println!(
        "per-step host overhead (host = recording + submitting commands, compilation excluded)"
    );
    println!(
        "{:<14} {:>9} {:>9} {:>8} {:>10} {:>7} {:>6} {:>9} {:>10}",
        "step",
        "host ms",
        "gpu ms",
        "host/gpu",
        "dispatches",
        "submits",
        "passes",
        "new bgs",
        "us/disp"
    );
    let row = |name: &str, s: &StepOverhead| {
        let opt = |v: Option<f64>, suffix: &str| match v {
            Some(v) => format!("{v:.1}{suffix}"),
            None => "-".to_string(),
        };
        println!(
            "{:<14} {:>9.2} {:>9} {:>8} {:>10} {:>7} {:>6} {:>9} {:>10.1}",
            name,
            s.host_ms,
            opt(s.gpu_ms, ""),
            opt(s.host_gpu_percent, "%"),
            s.dispatches,
            s.submissions,
            s.passes,
            s.bind_groups_created,
            s.host_us_per_dispatch
        );
    };
    for (i, s) in r.steps.iter().enumerate() {
        row(&format!("unet step {}", i + 1), s);
    }
    row("steady mean", &r.steady);
    if !r.gpu_timing {
        println!("(no timestamp queries on this adapter: device time not measured)");
    }
}
