use kiln_kernels::attention::{
    attention, cached_attention, AttentionOptions, CachedAttentionOptions,
};
use kiln_kernels::kv_cache::kv_write;
use kiln_kernels::layout::{concat, narrow};
use kiln_kernels::rope::{rope_at, rope_table, RopeStyle};
use kiln_runtime::{DType, Device, Error, Result, Tensor};

use crate::linear::Linear;
use crate::weights::Weights;

/// The sizes of a multi-head attention block. `head_dim` is its own setting: Mistral Small 3.1 has
/// 32 heads of 128 over a 5120-wide residual stream, so q projects to 4096, not 5120.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionConfig {
    pub hidden: usize,
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Biases on the q/k/v projections.
    pub qkv_bias: bool,
    /// Rotary embedding of q and k: `(theta, pairing)`.
    pub rope: Option<(f32, RopeStyle)>,
    /// A query sees only the last `w` positions (itself included).
    pub sliding_window: Option<usize>,
}

impl AttentionConfig {
    fn check(&self) -> Result<()> {
        if self.heads == 0 || self.kv_heads == 0 || self.head_dim == 0 || self.hidden == 0 {
            return Err(Error::shape(
                "attention",
                format!("empty sizes in {self:?}"),
            ));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(Error::shape(
                "attention",
                format!(
                    "{} query heads are not a multiple of {} key/value heads",
                    self.heads, self.kv_heads
                ),
            ));
        }
        Ok(())
    }
}

/// One layer's key/value cache: `[capacity, kv_heads, head_dim]` buffers allocated once, written in
/// place row by row. Owned by a session (a conversation), never by the model, so one loaded model
/// serves any number of conversations.
pub struct KvBuffers {
    pub k: Tensor,
    pub v: Tensor,
}

impl KvBuffers {
    pub fn new(
        device: &Device,
        capacity: usize,
        cfg: &AttentionConfig,
        dtype: DType,
    ) -> Result<Self> {
        let shape = [capacity, cfg.kv_heads, cfg.head_dim];
        Ok(KvBuffers {
            k: Tensor::zeros(device, &shape, dtype)?,
            v: Tensor::zeros(device, &shape, dtype)?,
        })
    }

    pub fn capacity(&self) -> usize {
        self.k.shape()[0]
    }

    /// Bytes per cached position in one layer with this config.
    pub fn bytes_per_token(cfg: &AttentionConfig, dtype: DType) -> u64 {
        (2 * cfg.kv_heads * cfg.head_dim * dtype.size_in_bytes()) as u64
    }
}

/// Multi-head self-attention with `q_proj`, `k_proj`, `v_proj`, `o_proj` (transformers' Llama,
/// Mistral and Pixtral names), grouped-query heads and optional RoPE.
pub struct Attention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub cfg: AttentionConfig,
}

impl Attention {
    pub fn new(w: &Weights, cfg: AttentionConfig) -> Result<Attention> {
        cfg.check()?;
        let q_width = cfg.heads * cfg.head_dim;
        let kv_width = cfg.kv_heads * cfg.head_dim;
        Ok(Attention {
            q: Linear::new(&w.pp("q_proj"), cfg.hidden, q_width, cfg.qkv_bias)?,
            k: Linear::new(&w.pp("k_proj"), cfg.hidden, kv_width, cfg.qkv_bias)?,
            v: Linear::new(&w.pp("v_proj"), cfg.hidden, kv_width, cfg.qkv_bias)?,
            o: Linear::new(&w.pp("o_proj"), q_width, cfg.hidden, false)?,
            cfg,
        })
    }

    /// q, k, v of `x` `[L, hidden]` as `[L, heads, head_dim]`, rotated at `positions` (u32 `[L]`).
    fn project(&self, x: &Tensor, positions: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let c = &self.cfg;
        let l = x.shape()[0];
        let q = self.q.forward(x)?.reshape(&[l, c.heads, c.head_dim])?;
        let k = self.k.forward(x)?.reshape(&[l, c.kv_heads, c.head_dim])?;
        let v = self.v.forward(x)?.reshape(&[l, c.kv_heads, c.head_dim])?;
        match c.rope {
            Some((theta, style)) => Ok((
                rope_at(&q, positions, theta, style)?,
                rope_at(&k, positions, theta, style)?,
                v,
            )),
            None => Ok((q, k, v)),
        }
    }

    fn check_input(&self, x: &Tensor, positions: &Tensor) -> Result<usize> {
        let ok = x.rank() == 2 && x.shape()[1] == self.cfg.hidden;
        if !ok || positions.shape() != [x.shape()[0]] {
            return Err(Error::shape(
                "attention",
                format!(
                    "x {:?} with positions {:?}: expected [L, {}] and [L]",
                    x.shape(),
                    positions.shape(),
                    self.cfg.hidden
                ),
            ));
        }
        Ok(x.shape()[0])
    }

    /// Causal self-attention of `x` `[L, hidden]`, the tokens after the `start` already in `kv`:
    /// their keys and values are written into `kv` at `start..start + L` and the queries attend to
    /// everything cached up to themselves.
    pub fn forward_cached(
        &self,
        x: &Tensor,
        positions: &Tensor,
        kv: &mut KvBuffers,
        start: usize,
    ) -> Result<Tensor> {
        let l = self.check_input(x, positions)?;
        let (q, k, v) = self.project(x, positions)?;
        kv_write(&mut kv.k, &k, start)?;
        kv_write(&mut kv.v, &v, start)?;
        let opts = CachedAttentionOptions {
            scale: None,
            sliding_window: self.cfg.sliding_window,
        };
        let out = cached_attention(&q, &kv.k, &kv.v, start + l, opts)?;
        self.o
            .forward(&out.reshape(&[l, self.cfg.heads * self.cfg.head_dim])?)
    }

    /// One decode step of several independent sequences: row `b` of `x` `[B, hidden]` is the
    /// next token of the sequence cached in `kvs[b]` at position `starts[b]` (its rotary position
    /// is `positions[b]`). The projections run once over all rows (a small GEMM instead of `B`
    /// GEMVs, which is where batching pays); each row then writes and attends to its own cache.
    pub fn forward_cached_batch(
        &self,
        x: &Tensor,
        positions: &Tensor,
        kvs: &mut [&mut KvBuffers],
        starts: &[usize],
    ) -> Result<Tensor> {
        let b = self.check_input(x, positions)?;
        if b == 0 || kvs.len() != b || starts.len() != b {
            return Err(Error::shape(
                "batched attention",
                format!(
                    "{b} rows with {} caches and {} start positions",
                    kvs.len(),
                    starts.len()
                ),
            ));
        }
        let (q, k, v) = self.project(x, positions)?;
        let opts = CachedAttentionOptions {
            scale: None,
            sliding_window: self.cfg.sliding_window,
        };
        let mut rows = Vec::with_capacity(b);
        for (i, (kv, &start)) in kvs.iter_mut().zip(starts).enumerate() {
            kv_write(&mut kv.k, &narrow(&k, 0, i, 1)?, start)?;
            kv_write(&mut kv.v, &narrow(&v, 0, i, 1)?, start)?;
            rows.push(cached_attention(
                &narrow(&q, 0, i, 1)?,
                &kv.k,
                &kv.v,
                start + 1,
                opts,
            )?);
        }
        let out = match rows.len() {
            1 => rows.remove(0),
            _ => concat(&rows.iter().collect::<Vec<_>>(), 0)?,
        };
        self.o
            .forward(&out.reshape(&[b, self.cfg.heads * self.cfg.head_dim])?)
    }

    /// Non-causal attention over `x` `[L, hidden]` with no cache (an encoder: Pixtral's patches).
    pub fn forward(&self, x: &Tensor, positions: &Tensor) -> Result<Tensor> {
        let l = self.check_input(x, positions)?;
        let c = &self.cfg;
        let (q, k, v) = self.project(x, positions)?;
        let as4 = |t: &Tensor, h| t.reshape(&[1, l, h, c.head_dim]);
        let out = attention(
            &as4(&q, c.heads)?,
            &as4(&k, c.kv_heads)?,
            &as4(&v, c.kv_heads)?,
            AttentionOptions::default(),
        )?;
        self.o.forward(&out.reshape(&[l, c.heads * c.head_dim])?)
    }

    /// Non-causal attention over `x` `[L, hidden]` rotated by a per-token table: `cos`, `sin`
    /// F32 `[L, head_dim / 2]` (Pixtral's 2-D RoPE, where each patch's angles come from its row
    /// and column). The config's own `rope` must be `None`.
    pub fn forward_table(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        style: RopeStyle,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        if c.rope.is_some() || x.rank() != 2 || x.shape()[1] != c.hidden {
            return Err(Error::shape(
                "attention",
                format!(
                    "table-rotated attention of x {:?}: expected [L, {}] and a config without its own RoPE",
                    x.shape(),
                    c.hidden
                ),
            ));
        }
        let l = x.shape()[0];
        let as4 = |t: Tensor, h| t.reshape(&[1, l, h, c.head_dim]);
        let q = rope_table(&as4(self.q.forward(x)?, c.heads)?, cos, sin, style)?;
        let k = rope_table(&as4(self.k.forward(x)?, c.kv_heads)?, cos, sin, style)?;
        let v = as4(self.v.forward(x)?, c.kv_heads)?;
        let out = attention(&q, &k, &v, AttentionOptions::default())?;
        self.o.forward(&out.reshape(&[l, c.heads * c.head_dim])?)
    }
}
