//! A conversation's key/value cache: per layer, `[capacity, kv_heads, head_dim]` device buffers
//! allocated once, and the number of positions filled. New tokens are written in place; nothing is
//! concatenated or copied per step.

use kiln_nn::KvBuffers;
use kiln_runtime::{DType, Error, Result};

use crate::config::MistralConfig;
use crate::model::attention_config;

/// Cache bytes per position over all of the model's layers at `dtype`.
pub fn kv_bytes_per_token(config: &MistralConfig, dtype: DType) -> u64 {
    KvBuffers::bytes_per_token(&attention_config(config), dtype) * config.num_hidden_layers as u64
}

/// `--kv-type`: f16 or f32.
pub fn parse_kv_type(name: &str) -> Result<DType> {
    match name {
        "f16" => Ok(DType::F16),
        "f32" => Ok(DType::F32),
        other => Err(Error::dtype(
            "--kv-type",
            format!("must be f16 or f32, got {other:?}"),
        )),
    }
}

pub struct KvCache {
    layers: Vec<KvBuffers>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    pub fn new(layers: Vec<KvBuffers>, capacity: usize) -> KvCache {
        KvCache {
            layers,
            len: 0,
            capacity,
        }
    }

    /// Positions filled.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn layers(&self) -> &[KvBuffers] {
        &self.layers
    }

    pub(crate) fn layers_mut(&mut self) -> &mut [KvBuffers] {
        &mut self.layers
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Forgets every position from `len` on (they are overwritten by the next tokens).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Device bytes held.
    pub fn size_in_bytes(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| l.k.size_in_bytes() + l.v.size_in_bytes())
            .sum()
    }
}
