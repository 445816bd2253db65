//! Peak-memory measurements against `--plan`: a clean window per run, the allowed gap, and turns
//! for tests that share the process-wide CPU counter.

use std::sync::{Mutex, MutexGuard};

use kiln_runtime::Device;

/// How far a plan may be from the measured peak (it matched to the byte when resident).
pub const MARGIN: f64 = 0.02;

static TURN: Mutex<()> = Mutex::new(());

/// Holds this test binary's turn: the CPU backend's counter and budget are process-wide.
pub fn take_turn() -> MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fresh peak window: cached GPU buffers from earlier runs given back, peaks at current use.
pub fn fresh(device: &Device) {
    if let Device::Gpu(ctx) = device {
        ctx.trim_pool();
    }
    device.reset_peak_memory();
}

/// Runs `run` in a fresh peak window: its result and the peaks (live, reserved) over what was live.
pub fn measured<T>(device: &Device, run: impl FnOnce() -> T) -> (T, u64, u64) {
    fresh(device);
    let before = device.memory_stats().live;
    let out = run();
    let stats = device.memory_stats();
    (out, stats.peak_live - before, stats.peak_reserved - before)
}

/// Asserts a planned figure is within `MARGIN` of the measured one.
pub fn within(planned: u64, measured: u64, what: &str) {
    let diff = (planned as f64 - measured as f64).abs();
    assert!(
        diff <= MARGIN * measured as f64,
        "{what}: planned {planned}, measured {measured}"
    );
}
