//! Byte accounting shared by the GPU pool and the CPU backend, so that peak memory is measured the same
//! way on both.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of one device's memory use, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryStats {
    /// Bytes held by live tensors (rounded up to the pool's size classes on the GPU).
    pub live: u64,
    /// The highest `live` seen since the counters were last reset.
    pub peak_live: u64,
    /// Bytes obtained from the device: live plus cached free buffers.
    pub reserved: u64,
    /// The highest `reserved` seen since the counters were last reset.
    pub peak_reserved: u64,
}

/// Lock-free live/peak counters.
#[derive(Debug, Default)]
pub struct Counter {
    current: AtomicU64,
    peak: AtomicU64,
}

impl Counter {
    pub const fn new() -> Self {
        Counter {
            current: AtomicU64::new(0),
            peak: AtomicU64::new(0),
        }
    }

    pub fn add(&self, bytes: u64) {
        let now = self.current.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    pub fn sub(&self, bytes: u64) {
        self.current.fetch_sub(bytes, Ordering::Relaxed);
    }

    pub fn current(&self) -> u64 {
        self.current.load(Ordering::Relaxed)
    }

    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Starts a new measurement window: the peak becomes the current value.
    pub fn reset_peak(&self) {
        self.peak.store(self.current(), Ordering::Relaxed);
    }
}

/// Bytes held by CPU-backend tensors in this process.
pub static CPU_TENSOR_BYTES: Counter = Counter::new();

pub fn cpu_stats() -> MemoryStats {
    let live = CPU_TENSOR_BYTES.current();
    let peak = CPU_TENSOR_BYTES.peak();
    // The CPU backend allocates exactly what it uses; nothing is cached.
    MemoryStats {
        live,
        peak_live: peak,
        reserved: live,
        peak_reserved: peak,
    }
}

/// Human-readable byte count ("1.50 GiB").
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_tracks_peak_across_frees() {
        let c = Counter::new();
        c.add(100);
        c.add(50);
        c.sub(120);
        c.add(10);
        assert_eq!(c.current(), 40);
        assert_eq!(c.peak(), 150);
        c.reset_peak();
        assert_eq!(c.peak(), 40);
    }

    #[test]
    fn bytes_are_formatted_with_binary_units() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1536), "1.50 KiB");
        assert_eq!(format_bytes(3 << 30), "3.00 GiB");
    }
}
