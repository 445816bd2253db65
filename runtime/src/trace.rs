//! Allocation traces: every CPU-backend tensor allocated and freed on this thread while a trace is
//! on, with phase marks. `kiln generate --plan` runs a phase on the CPU backend, records the tensors
//! the model code makes and drops, and replays them through the GPU pool's own policy (size classes,
//! cached free buffers, lowest id first) to learn what the same code would reserve on a GPU.
//!
//! Thread-local so that concurrent work elsewhere in the process (other tests) does not leak in.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::pool::Pool;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A tensor's storage of `bytes`, `id` unique among live storages.
    Alloc {
        id: usize,
        bytes: u64,
    },
    Free {
        id: usize,
    },
    /// The start of a named phase of the run (text encoding, UNet step, VAE decode...).
    Phase(String),
}

thread_local! {
    static TRACE: RefCell<Option<Vec<Event>>> = const { RefCell::new(None) };
}

/// Starts recording on this thread (dropping any trace in progress).
pub fn start() {
    TRACE.with(|t| *t.borrow_mut() = Some(Vec::new()));
}

/// Stops recording and returns what was recorded (empty when no trace was on).
pub fn finish() -> Vec<Event> {
    TRACE.with(|t| t.borrow_mut().take()).unwrap_or_default()
}

fn record(event: impl FnOnce() -> Event) {
    // try_with: a storage dropped during thread teardown must not panic.
    let _ = TRACE.try_with(|t| {
        if let Some(events) = t.borrow_mut().as_mut() {
            events.push(event());
        }
    });
}

/// Marks the start of phase `name`; nothing when no trace is on.
pub fn phase(name: &str) {
    record(|| Event::Phase(name.to_string()));
}

pub(crate) fn alloc(id: usize, bytes: u64) {
    record(|| Event::Alloc { id, bytes });
}

pub(crate) fn free(id: usize) {
    record(|| Event::Free { id });
}

/// How to count a replayed allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accounting {
    /// The CPU backend: exactly the bytes asked for, nothing cached.
    Exact,
    /// A GPU: requests rounded to 16 bytes and to the pool's size classes, freed buffers cached
    /// and reused by class, as `GpuContext::alloc` does.
    Pool,
}

/// The peaks of one phase of a replayed trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhasePeak {
    pub name: String,
    /// Highest bytes held by live tensors during the phase.
    pub peak_live: u64,
    /// Highest bytes reserved (live plus cached) during the phase.
    pub peak_reserved: u64,
}

/// Replays `events` with `accounting`, on top of `base` bytes already live (the weights), and
/// returns each phase's peaks; allocations before the first phase mark form a phase named "setup".
/// At each phase mark the pool's cached free buffers are given back, as `generate` does on a GPU
/// (`Device::release_cached_memory`).
pub fn replay(events: &[Event], accounting: Accounting, base: u64) -> Vec<PhasePeak> {
    let mut replayer = Replayer {
        accounting,
        pool: Pool::default(),
        exact_live: 0,
        next_rank: 0,
        free_ranks: HashMap::new(),
        live: HashMap::new(),
    };
    let mut phases = vec![PhasePeak {
        name: "setup".into(),
        peak_live: base,
        peak_reserved: base,
    }];
    for event in events {
        match event {
            Event::Phase(name) => {
                replayer.release_cached();
                phases.push(PhasePeak {
                    name: name.clone(),
                    peak_live: 0,
                    peak_reserved: 0,
                });
            }
            Event::Alloc { id, bytes } => replayer.alloc(*id, *bytes),
            Event::Free { id } => replayer.free(*id),
        }
        let (live, reserved) = replayer.now();
        if let Some(p) = phases.last_mut() {
            p.peak_live = p.peak_live.max(base + live);
            p.peak_reserved = p.peak_reserved.max(base + reserved);
        }
    }
    phases
}

struct Replayer {
    accounting: Accounting,
    pool: Pool<()>,
    exact_live: u64,
    next_rank: u64,
    /// Free buffers' ranks by class, ascending: the pool hands out the lowest, so the buffer a
    /// request gets (and later gives back) is known without real buffers.
    free_ranks: HashMap<u64, Vec<u64>>,
    /// Live storages: (class, rank).
    live: HashMap<usize, (u64, u64)>,
}

impl Replayer {
    fn alloc(&mut self, id: usize, bytes: u64) {
        match self.accounting {
            Accounting::Exact => {
                self.exact_live += bytes;
                self.live.insert(id, (bytes, 0));
            }
            Accounting::Pool => {
                let request = bytes.max(4).next_multiple_of(16);
                let class = match self.pool.acquire(request, |_| Ok::<_, ()>(())) {
                    Ok(((), class)) => class,
                    Err(()) => unreachable!("creating a () buffer cannot fail"),
                };
                let free = self.free_ranks.entry(class).or_default();
                let rank = if free.is_empty() {
                    self.next_rank += 1;
                    self.next_rank
                } else {
                    free.remove(0)
                };
                self.live.insert(id, (class, rank));
            }
        }
    }

    fn free(&mut self, id: usize) {
        let Some((class, rank)) = self.live.remove(&id) else {
            return;
        };
        match self.accounting {
            Accounting::Exact => self.exact_live -= class,
            Accounting::Pool => {
                self.pool.release((), class, rank);
                let free = self.free_ranks.entry(class).or_default();
                let at = free.partition_point(|&r| r < rank);
                free.insert(at, rank);
            }
        }
    }

    /// Drops the pool's cached free buffers: later requests of their classes get new ones.
    fn release_cached(&mut self) {
        if self.accounting == Accounting::Pool {
            self.pool.trim();
            self.free_ranks.clear();
        }
    }

    /// (live, reserved) bytes.
    fn now(&self) -> (u64, u64) {
        match self.accounting {
            Accounting::Exact => (self.exact_live, self.exact_live),
            Accounting::Pool => {
                let s = self.pool.stats();
                (s.live, s.reserved)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, Device, Tensor};

    #[test]
    fn cpu_tensors_are_traced_on_this_thread_only() {
        start();
        phase("a");
        let t = Tensor::zeros(&Device::Cpu, &[10], DType::F32).unwrap();
        let view = t.reshape(&[2, 5]).unwrap();
        drop(t);
        std::thread::spawn(|| Tensor::zeros(&Device::Cpu, &[99], DType::F32).map(drop))
            .join()
            .unwrap()
            .unwrap();
        drop(view);
        let events = finish();
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[0], Event::Phase("a".into()));
        let Event::Alloc { id, bytes: 40 } = events[1] else {
            panic!("{events:?}")
        };
        // Freed once, when the last view went.
        assert_eq!(events[2], Event::Free { id });
        assert!(finish().is_empty());
    }

    #[test]
    fn replay_counts_exact_bytes_or_pool_classes_and_reuse() {
        let a = |id, bytes| Event::Alloc { id, bytes };
        let f = |id| Event::Free { id };
        let events = vec![
            Event::Phase("x".into()),
            a(1, 1000),
            a(2, 3000),
            f(1),
            Event::Phase("y".into()),
            a(3, 900),
            f(2),
            f(3),
        ];
        let exact = replay(&events, Accounting::Exact, 100);
        assert_eq!(exact.len(), 3);
        assert_eq!(exact[1].peak_live, 4100);
        assert_eq!(exact[2].peak_live, 100 + 3000 + 900);
        let pooled = replay(&events, Accounting::Pool, 0);
        // 1000 -> 1024, 3000 -> 4096; the freed 1024 buffer is given back at the mark of "y" and
        // 900 gets a new one.
        assert_eq!(pooled[1].peak_live, 5120);
        assert_eq!(pooled[2].peak_live, 5120);
        assert_eq!(pooled[2].peak_reserved, 5120);
    }

    #[test]
    fn replay_gives_cached_buffers_back_at_each_phase_mark() {
        let events = vec![
            Event::Phase("x".into()),
            Event::Alloc { id: 1, bytes: 1000 },
            Event::Free { id: 1 },
            Event::Alloc { id: 2, bytes: 1000 },
            Event::Free { id: 2 },
            Event::Phase("y".into()),
            Event::Alloc { id: 3, bytes: 3000 },
        ];
        let pooled = replay(&events, Accounting::Pool, 0);
        // Within "x" the second request reuses the first's buffer; "y" starts with none cached.
        assert_eq!(pooled[1].peak_reserved, 1024);
        assert_eq!(pooled[2].peak_reserved, 4096);
    }
}
