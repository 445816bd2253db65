//! Bind groups kept across dispatches. A model step launches the same kernels on the same pooled
//! buffers every time (the pool hands back freed buffers in a repeatable order), so after the first
//! step nearly every bind group is found here instead of being created.
//!
//! Keys name buffers by the id the context gave them at creation, never reused, so an entry can never
//! be hit by a different buffer; entries are dropped when their buffers are destroyed (`evict`), which
//! is what lets the driver free them.

use std::collections::HashMap;

/// Most storage buffers one dispatch binds (kernels use up to 6).
pub(crate) const MAX_STORAGE_BINDINGS: usize = 8;
/// Past this many entries the cache starts over, bounding memory for workloads whose bindings never
/// repeat (each entry is a small driver object).
const MAX_ENTRIES: usize = 16 * 1024;

/// Fixed-size so building a key allocates nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct BindKey {
    pub pipeline: u64,
    /// Bound size of the parameter slot (its offset is dynamic, so not part of the key).
    pub params_size: u32,
    pub len: u8,
    /// (binding, buffer id, bound bytes); the size matters because a recycled buffer can back a
    /// smaller tensor and kernels may read the binding's length.
    pub storage: [(u32, u64, u64); MAX_STORAGE_BINDINGS],
}

impl BindKey {
    pub fn buffers(&self) -> &[(u32, u64, u64)] {
        &self.storage[..self.len as usize]
    }
}

#[derive(Default)]
pub(crate) struct BindGroupCache {
    map: HashMap<BindKey, wgpu::BindGroup>,
}

impl BindGroupCache {
    pub fn get(&self, key: &BindKey) -> Option<&wgpu::BindGroup> {
        self.map.get(key)
    }

    pub fn insert(&mut self, key: BindKey, group: wgpu::BindGroup) {
        if self.map.len() >= MAX_ENTRIES {
            self.map.clear();
        }
        self.map.insert(key, group);
    }

    /// Drops every entry that binds one of `buffer_ids` (sorted).
    pub fn evict(&mut self, buffer_ids: &[u64]) {
        if buffer_ids.is_empty() {
            return;
        }
        self.map.retain(|key, _| {
            !key.buffers()
                .iter()
                .any(|&(_, id, _)| buffer_ids.binary_search(&id).is_ok())
        });
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}
