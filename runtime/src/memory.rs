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

/// The CPU backend's budget in bytes; 0 = none.
static CPU_BUDGET: AtomicU64 = AtomicU64::new(0);

/// Sets (or lifts) the budget CPU-backend tensors must stay under (process-wide, like the counter).
pub fn set_cpu_budget(budget: Option<u64>) {
    CPU_BUDGET.store(budget.unwrap_or(0), Ordering::Relaxed);
}

/// Checks a new CPU tensor of `bytes` against the budget. The CPU backend caches nothing, so there
/// is nothing to give back first.
pub(crate) fn check_cpu_budget(bytes: u64, shape: &[usize]) -> crate::Result<()> {
    let budget = CPU_BUDGET.load(Ordering::Relaxed);
    let live = CPU_TENSOR_BYTES.current();
    if budget != 0 && live + bytes > budget {
        return Err(crate::Error::limit(
            "cpu tensor",
            format!(
                "tensor {shape:?} needs {} more, over the memory budget of {} ({} already held by \
                 tensors)",
                format_bytes(bytes),
                format_bytes(budget),
                format_bytes(live)
            ),
        ));
    }
    Ok(())
}

/// Parses a memory size as `--max-vram` takes it: a number with an optional binary unit, `K`, `M`,
/// `G` or `T` (also `KiB`, `MB`, ...: all powers of 1024), e.g. `1.5G`, `800M`, `1048576`.
pub fn parse_bytes(text: &str) -> crate::Result<u64> {
    let t = text.trim();
    let bad = |why: &str| {
        crate::Error::limit(
            "memory size",
            format!("`{text}` {why}: expected a number with an optional unit K, M, G or T (powers of 1024), e.g. 1.5G or 800M"),
        )
    };
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad("is not a size"))?;
    let unit = unit.trim().to_ascii_uppercase();
    let shift = match unit.trim_end_matches("IB").trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(bad("has an unknown unit")),
    };
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(bad("is not a positive size"));
    }
    Ok(bytes.round() as u64)
}

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
    fn sizes_parse_with_binary_units_and_bad_ones_are_named() {
        assert_eq!(parse_bytes("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("800M").unwrap(), 800 << 20);
        assert_eq!(parse_bytes("800MiB").unwrap(), 800 << 20);
        assert_eq!(parse_bytes(" 64k ").unwrap(), 64 << 10);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        for bad in ["", "G", "1.5X", "-1G", "0", "1..5G"] {
            let err = parse_bytes(bad).unwrap_err().to_string();
            assert!(
                err.contains(&format!("`{bad}`")) && err.contains("1.5G"),
                "{err}"
            );
        }
    }

    #[test]
    fn bytes_are_formatted_with_binary_units() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1536), "1.50 KiB");
        assert_eq!(format_bytes(3 << 30), "3.00 GiB");
    }
}
