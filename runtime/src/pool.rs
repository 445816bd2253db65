//! A size-class pool of device buffers. Creating a buffer is expensive on every graphics API, and a model
//! frees and re-requests the same sizes every step, so freed buffers are kept by size class and handed out
//! again. The pool is generic over the buffer type so its policy is testable without a GPU.

use std::collections::BTreeMap;

use crate::memory::MemoryStats;

/// Rounds a request up to its size class: powers of two up to 64 KiB, then steps of an eighth of the
/// enclosing power of two, which bounds the waste at 12.5% while keeping few classes.
pub fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(16);
    let pow = bytes.next_power_of_two();
    if pow <= 64 * 1024 {
        return pow;
    }
    let step = pow / 16;
    bytes.div_ceil(step) * step
}

/// A request that does not fit the budget even with every cached buffer given back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverBudget {
    /// Bytes held by live tensors.
    pub live: u64,
    /// The request, rounded to its size class.
    pub request: u64,
    pub budget: u64,
}

#[derive(Debug)]
pub struct Pool<B> {
    /// Free buffers by class, then by rank.
    free: BTreeMap<u64, BTreeMap<u64, B>>,
    stats: MemoryStats,
    /// Hard limit on reserved bytes (`--max-vram`), if any.
    budget: Option<u64>,
    allocations: u64,
    reuses: u64,
}

impl<B> Default for Pool<B> {
    fn default() -> Self {
        Pool {
            free: BTreeMap::new(),
            stats: MemoryStats::default(),
            budget: None,
            allocations: 0,
            reuses: 0,
        }
    }
}

impl<B> Pool<B> {
    /// Takes a buffer of at least `bytes`, reusing a cached one of the same class when there is one.
    /// Returns the buffer and its class size.
    pub fn acquire<E>(
        &mut self,
        bytes: u64,
        create: impl FnOnce(u64) -> Result<B, E>,
    ) -> Result<(B, u64), E> {
        let class = size_class(bytes);
        let buffer = match self.free.get_mut(&class).and_then(BTreeMap::pop_first) {
            Some((_, buffer)) => {
                self.reuses += 1;
                buffer
            }
            None => {
                let buffer = create(class)?;
                self.allocations += 1;
                self.stats.reserved += class;
                self.stats.peak_reserved = self.stats.peak_reserved.max(self.stats.reserved);
                buffer
            }
        };
        self.stats.live += class;
        self.stats.peak_live = self.stats.peak_live.max(self.stats.live);
        Ok((buffer, class))
    }

    /// Returns a buffer of class `class` for reuse. Free buffers are handed out lowest `rank` first
    /// (ranks are unique, e.g. creation order): which buffer a request gets then depends only on which
    /// are free, not on the order they were freed in, so a model step repeated gets the same buffers
    /// every time and the bind groups cached for them keep matching.
    pub fn release(&mut self, buffer: B, class: u64, rank: u64) {
        self.stats.live -= class;
        self.free.entry(class).or_default().insert(rank, buffer);
    }

    /// Takes every cached free buffer out of the pool; dropping them gives the memory back to the
    /// device (the caller first forgets anything else that refers to them).
    pub fn trim(&mut self) -> Vec<B> {
        let cached: u64 = self
            .free
            .iter()
            .map(|(class, v)| class * v.len() as u64)
            .sum();
        self.stats.reserved -= cached;
        std::mem::take(&mut self.free)
            .into_values()
            .flat_map(BTreeMap::into_values)
            .collect()
    }

    /// Sets (or lifts) the hard limit on reserved bytes that `make_room` enforces.
    pub fn set_budget(&mut self, budget: Option<u64>) {
        self.budget = budget;
    }

    pub fn budget(&self) -> Option<u64> {
        self.budget
    }

    /// Gets ready for a request of `bytes` under the budget: when it would need a new buffer that
    /// takes reserved bytes over the budget, every cached free buffer is taken out (returned for the
    /// caller to destroy); when even then live bytes plus the request exceed it, the request fails.
    /// Without a budget nothing happens.
    pub fn make_room(&mut self, bytes: u64) -> Result<Vec<B>, OverBudget> {
        let Some(budget) = self.budget else {
            return Ok(Vec::new());
        };
        let class = size_class(bytes);
        let cached = self.free.get(&class).is_some_and(|v| !v.is_empty());
        if cached || self.stats.reserved + class <= budget {
            return Ok(Vec::new());
        }
        if self.stats.live + class > budget {
            return Err(OverBudget {
                live: self.stats.live,
                request: class,
                budget,
            });
        }
        Ok(self.trim())
    }

    pub fn stats(&self) -> MemoryStats {
        self.stats
    }

    /// Starts a new peak window at the current values.
    pub fn reset_peak(&mut self) {
        self.stats.peak_live = self.stats.live;
        self.stats.peak_reserved = self.stats.reserved;
    }

    /// How many buffers were created, and how many requests were served from the cache.
    pub fn counts(&self) -> (u64, u64) {
        (self.allocations, self.reuses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(class: u64) -> Result<Vec<u8>, ()> {
        Ok(vec![0; class as usize])
    }

    #[test]
    fn size_classes_round_up_and_bound_waste() {
        assert_eq!(size_class(1), 16);
        assert_eq!(size_class(100), 128);
        assert_eq!(size_class(64 * 1024), 64 * 1024);
        for bytes in [70_000u64, 1_000_001, 123_456_789] {
            let class = size_class(bytes);
            assert!(class >= bytes);
            assert!(
                (class - bytes) as f64 <= bytes as f64 * 0.125,
                "{bytes} -> {class}"
            );
        }
    }

    #[test]
    fn freed_buffers_are_reused_by_class() {
        let mut pool = Pool::default();
        let (a, class_a) = pool.acquire(1000, make).unwrap();
        pool.release(a, class_a, 0);
        // 900 bytes falls in the same 1024-byte class, so no new buffer is made.
        let (_b, class_b) = pool.acquire(900, make).unwrap();
        assert_eq!(class_a, class_b);
        assert_eq!(pool.counts(), (1, 1));
        // A different class is a new allocation.
        let (_c, _) = pool.acquire(5000, make).unwrap();
        assert_eq!(pool.counts(), (2, 1));
    }

    #[test]
    fn peak_accounts_for_live_and_reserved_bytes() {
        let mut pool = Pool::default();
        let (a, ca) = pool.acquire(1024, make).unwrap();
        let (b, cb) = pool.acquire(2048, make).unwrap();
        pool.release(a, ca, 0);
        let s = pool.stats();
        assert_eq!(s.live, 2048);
        assert_eq!(s.peak_live, 3072);
        assert_eq!(s.reserved, 3072);
        pool.release(b, cb, 1);
        pool.trim();
        let s = pool.stats();
        assert_eq!((s.live, s.reserved, s.peak_reserved), (0, 0, 3072));
        pool.reset_peak();
        assert_eq!(pool.stats().peak_live, 0);
    }

    #[test]
    fn free_buffers_go_out_lowest_rank_first_whatever_the_release_order() {
        let mut pool = Pool::default();
        let mk = |tag: u8| move |class: u64| Ok::<_, ()>(vec![tag; class as usize]);
        let (a, class) = pool.acquire(100, mk(1)).unwrap();
        let (b, _) = pool.acquire(100, mk(2)).unwrap();
        let (c, _) = pool.acquire(100, mk(3)).unwrap();
        // Released out of order: LIFO would hand out `b` next.
        pool.release(c, class, 30);
        pool.release(a, class, 10);
        pool.release(b, class, 20);
        let first = pool.acquire(100, mk(0)).unwrap().0;
        let second = pool.acquire(100, mk(0)).unwrap().0;
        assert_eq!((first[0], second[0]), (1, 2));
        // Trimming hands the rest back to the caller to destroy.
        let trimmed = pool.trim();
        assert_eq!(trimmed.len(), 1);
        assert_eq!(trimmed[0][0], 3);
        assert_eq!(pool.stats().reserved, 2 * class);
    }

    #[test]
    fn a_budget_trims_cached_buffers_before_growing_and_refuses_what_cannot_fit() {
        let mut pool = Pool::default();
        pool.set_budget(Some(4096));
        let (a, ca) = pool.acquire(2048, make).unwrap();
        pool.release(a, ca, 0);
        // A cached buffer of the class: reuse, nothing trimmed.
        assert!(pool.make_room(2000).unwrap().is_empty());
        // 2048 cached + 4096 new > 4096: the cache goes first.
        let trimmed = pool.make_room(4096).unwrap();
        assert_eq!(trimmed.len(), 1);
        let (b, cb) = pool.acquire(4096, make).unwrap();
        assert_eq!(pool.stats().reserved, 4096);
        // Live 4096 + 16 can never fit.
        let err = pool.make_room(10).unwrap_err();
        assert_eq!((err.live, err.request, err.budget), (4096, 16, 4096));
        pool.release(b, cb, 1);
        pool.set_budget(None);
        assert!(pool.make_room(1 << 40).unwrap().is_empty());
    }

    #[test]
    fn failed_creation_changes_nothing() {
        let mut pool: Pool<Vec<u8>> = Pool::default();
        assert!(pool
            .acquire(10, |_| Err::<Vec<u8>, _>("no memory"))
            .is_err());
        assert_eq!(pool.stats(), MemoryStats::default());
    }
}
