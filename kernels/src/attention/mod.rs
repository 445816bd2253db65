//! Scaled dot-product attention over `[B, L, H, D]` tensors (the layout a Linear projection gives
//! after a free reshape), with grouped-query heads, an end-aligned causal mask and a key padding mask.
//! The GPU kernel is a flash attention: it never materialises the Lq x Lk score matrix.

mod cached;
mod cached_cpu;
#[cfg(test)]
mod cached_tests;
mod cpu;
#[cfg(test)]
mod tests;

pub use cached::{cached_attention, CachedAttentionOptions, MAX_DECODE_ROWS};

use kiln_runtime::gpu::{BufferArg, Dispatch};
use kiln_runtime::preprocess::{KernelSource, Variant};
use kiln_runtime::{DType, Device, Error, Result, Tensor};

use crate::common::{self, Params};

pub static SOURCE: KernelSource = KernelSource {
    file: "attention.wgsl",
    source: include_str!("attention.wgsl"),
};

/// Largest head dim the GPU kernel supports (its private accumulators have a fixed size).
pub const MAX_HEAD_DIM: usize = 256;
/// Head dims are rounded up to a multiple of this for the kernel's compile-time size, which bounds
/// the number of pipelines to `MAX_HEAD_DIM / HEAD_DIM_STEP` per dtype and mask setting.
const HEAD_DIM_STEP: usize = 8;
/// Workgroup memory budget in f32 words (16 KiB, the WebGPU baseline).
const SHARED_WORDS: usize = 4096;
const MAX_KEY_TILE: usize = 32;

#[derive(Clone, Copy, Debug, Default)]
pub struct AttentionOptions<'a> {
    /// Multiplies the scores; `None` means `1 / sqrt(D)`.
    pub scale: Option<f32>,
    /// Query i sees key j iff `j <= i + (Lk - Lq)`: aligned to the end, so a query block appended to
    /// a KV cache sees the whole cache plus the causal part of itself.
    pub causal: bool,
    /// U32 `[B, Lk]`: 1 = attend, 0 = padding.
    pub key_padding_mask: Option<&'a Tensor>,
}

/// Tile sizes for a (rounded) head dim: `(query rows per workgroup, keys per tile)`.
///
/// Workgroup memory holds the query tile (`bq * dim`), one key-or-value tile (`bk * (dim + 1)`,
/// padded a word per row against bank conflicts) and the scores (`bq * bk`), all f32, within
/// 16 KiB. Each query row is shared by `64 / bq` of the workgroup's 64 invocations, each owning
/// `dim / (64 / bq)` output columns in registers, so large heads use fewer rows per workgroup to keep
/// that private array small.
pub fn tiles(dim: usize) -> (usize, usize) {
    let bq = if dim <= 128 { 16 } else { 8 };
    let bk = ((SHARED_WORDS - bq * dim) / (dim + 1 + bq)).min(MAX_KEY_TILE);
    (bq, bk)
}

/// `softmax(q kᵀ * scale + masks) v` per batch and query head; see the module docs for the layout.
/// A query row that can see no key gets zeros.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, opts: AttentionOptions) -> Result<Tensor> {
    let name = "attention";
    let shape = check(name, q, k, v, &opts)?;
    let scale = opts.scale.unwrap_or(1.0 / (shape.d as f32).sqrt());
    if !scale.is_finite() {
        return Err(Error::shape(name, format!("scale {scale} is not finite")));
    }
    match q.device() {
        Device::Cpu => cpu::attention(q, k, v, opts.key_padding_mask, &shape, scale, opts.causal),
        Device::Gpu(ctx) => {
            if shape.d > MAX_HEAD_DIM {
                return Err(Error::limit(
                    name,
                    format!(
                        "head dim {} of q {:?} is over the GPU kernel's {MAX_HEAD_DIM}",
                        shape.d,
                        q.shape()
                    ),
                ));
            }
            let dim = shape.d.next_multiple_of(HEAD_DIM_STEP);
            let (bq, _) = tiles(dim);
            let q_blocks = shape.lq.div_ceil(bq);
            let groups = shape.b * shape.hq * q_blocks;
            let out = Tensor::empty(q.device(), q.shape(), q.dtype(), name)?;
            let params = Params::new()
                .dim(name, shape.lq)?
                .dim(name, shape.lk)?
                .dim(name, shape.hq)?
                .dim(name, shape.hkv)?
                .dim(name, shape.d)?
                .dim(name, shape.hq / shape.hkv)?
                .dim(name, q_blocks)?
                .dim(name, groups)?
                .u32(u32::from(opts.causal))
                .f32(scale)
                .align16();
            let mut buffers = vec![
                BufferArg::new(1, "q", q),
                BufferArg::new(2, "k", k),
                BufferArg::new(3, "v", v),
                BufferArg::new(4, "out", &out),
            ];
            if let Some(mask) = opts.key_padding_mask {
                buffers.push(BufferArg::new(5, "key_padding_mask", mask));
            }
            ctx.dispatch(Dispatch {
                op: name,
                kernel: &SOURCE,
                entry: "flash_attention",
                variant: variant(q.dtype(), dim, opts.key_padding_mask.is_some()),
                params: params.bytes(),
                buffers: &buffers,
                workgroups: ctx.grid(name, groups as u64)?,
            })?;
            Ok(out)
        }
    }
}

/// The problem's sizes, checked.
pub(crate) struct Shape {
    pub b: usize,
    pub lq: usize,
    pub lk: usize,
    pub hq: usize,
    pub hkv: usize,
    pub d: usize,
}

fn check(name: &str, q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOptions) -> Result<Shape> {
    let mut tensors = vec![("q", q), ("k", k), ("v", v)];
    if let Some(mask) = opts.key_padding_mask {
        tensors.push(("key_padding_mask", mask));
    }
    common::same_device(name, &tensors)?;
    common::same_float_dtype(name, &[("q", q), ("k", k), ("v", v)])?;
    common::non_empty(name, &tensors)?;
    for (n, t) in [("q", q), ("k", k), ("v", v)] {
        common::rank(name, n, t, 4)?;
    }
    let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
    if ks != vs {
        return Err(Error::shape(
            name,
            format!("k {ks:?} and v {vs:?} must have the same shape [B, Lk, Hkv, D]"),
        ));
    }
    if qs[0] != ks[0] || qs[3] != ks[3] {
        return Err(Error::shape(
            name,
            format!("q {qs:?} and k {ks:?} must agree on batch and head dim ([B, L, H, D])"),
        ));
    }
    if qs[2] % ks[2] != 0 {
        return Err(Error::shape(
            name,
            format!(
                "query heads {} of q {qs:?} are not a multiple of key/value heads {} of k {ks:?}",
                qs[2], ks[2]
            ),
        ));
    }
    if let Some(mask) = opts.key_padding_mask {
        if mask.dtype() != DType::U32 {
            return Err(Error::dtype(
                name,
                format!("{} for `key_padding_mask` (u32 expected)", mask.dtype()),
            ));
        }
        if mask.shape() != [ks[0], ks[1]] {
            return Err(Error::shape(
                name,
                format!(
                    "key_padding_mask {:?} must be [B, Lk] = [{}, {}] for k {ks:?}",
                    mask.shape(),
                    ks[0],
                    ks[1]
                ),
            ));
        }
    }
    Ok(Shape {
        b: qs[0],
        lq: qs[1],
        lk: ks[1],
        hq: qs[2],
        hkv: ks[2],
        d: qs[3],
    })
}

fn variant(dtype: DType, dim: usize, mask: bool) -> Variant {
    let (bq, bk) = tiles(dim);
    Variant::new(dtype)
        .define("HEAD_DIM", dim as u32)
        .define("BQ", bq as u32)
        .define("BK", bk as u32)
        .define("MASK", u32::from(mask))
}

/// Every compiled variant of this family, for the offline shader validation test.
pub fn variants() -> Vec<(&'static KernelSource, &'static str, Variant)> {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        for dim in (HEAD_DIM_STEP..=MAX_HEAD_DIM).step_by(HEAD_DIM_STEP) {
            for mask in [false, true] {
                out.push((&SOURCE, "flash_attention", variant(dtype, dim, mask)));
            }
        }
    }
    out.extend(cached::variants());
    out
}
