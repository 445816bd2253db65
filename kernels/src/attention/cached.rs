//! Attention of one sequence's new query rows over a KV cache (`kv_cache::kv_write` fills it). Decode
//! steps (up to `MAX_DECODE_ROWS` rows) run a split-K flash-decoding kernel plus a combine; longer
//! blocks (prefill) run a causal flash attention over the cache prefix. Neither holds the score matrix.

use kiln_runtime::gpu::{BufferArg, Dispatch, GpuContext};
use kiln_runtime::preprocess::{KernelSource, Variant};
use kiln_runtime::{DType, Device, Error, Result, Tensor};

use super::{tiles, HEAD_DIM_STEP, MAX_HEAD_DIM};
use crate::common::{self, Params};

pub static CACHED_SOURCE: KernelSource = KernelSource {
    file: "cached.wgsl",
    source: include_str!("cached.wgsl"),
};

/// Query blocks up to this many rows take the split-K decode path.
pub const MAX_DECODE_ROWS: usize = 8;
/// Decode: keys per chunk at least this many (fewer would make the combine dominate) ...
const MIN_CHUNK: usize = 64;
/// ... and at most this many chunks per kv head, bounding the partials.
const MAX_CHUNKS: usize = 256;
/// Decode: workgroups to aim for, enough to fill a large GPU.
const TARGET_WORKGROUPS: usize = 256;

#[derive(Clone, Copy, Debug, Default)]
pub struct CachedAttentionOptions {
    /// Multiplies the scores; `None` means `1 / sqrt(D)`.
    pub scale: Option<f32>,
    /// `Some(w)`: a query at position `p` sees only keys `j` with `p - j < w` (Mistral's sliding
    /// window, as transformers applies it).
    pub sliding_window: Option<usize>,
}

/// The problem's sizes, checked.
pub(crate) struct CachedShape {
    pub l: usize,
    pub kv_len: usize,
    pub hq: usize,
    pub hkv: usize,
    pub d: usize,
}

/// `softmax(q kᵀ * scale + mask) v` for `q` `[L, Hq, D]` over the first `kv_len` rows of `k_cache`
/// and `v_cache` (`[capacity, Hkv, D]`, `Hq % Hkv == 0`). Query row `i` sits at position
/// `kv_len - L + i` and sees key `j` iff `j <= pos` (and `pos - j < w` with a sliding window `w`).
/// The caches may be f16 with f32 `q`; the output is `[L, Hq, D]` in q's dtype.
pub fn cached_attention(
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    kv_len: usize,
    opts: CachedAttentionOptions,
) -> Result<Tensor> {
    let name = "cached_attention";
    let s = check(name, q, k_cache, v_cache, kv_len, &opts)?;
    let scale = opts.scale.unwrap_or(1.0 / (s.d as f32).sqrt());
    if !scale.is_finite() {
        return Err(Error::shape(name, format!("scale {scale} is not finite")));
    }
    let window = opts.sliding_window.unwrap_or(0);
    match q.device() {
        Device::Cpu => super::cached_cpu::cached_attention(q, k_cache, v_cache, &s, scale, window),
        Device::Gpu(ctx) => {
            let chunk_len = if s.l <= MAX_DECODE_ROWS {
                Some(decode_chunk_len(&s))
            } else {
                None
            };
            launch(ctx, [q, k_cache, v_cache], &s, scale, window, chunk_len)
        }
    }
}

fn check(
    name: &str,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    kv_len: usize,
    opts: &CachedAttentionOptions,
) -> Result<CachedShape> {
    let all = [("q", q), ("k_cache", k), ("v_cache", v)];
    common::same_device(name, &all)?;
    common::same_float_dtype(name, &[("q", q)])?;
    common::same_float_dtype(name, &[("k_cache", k), ("v_cache", v)])?;
    for (n, t) in all {
        common::rank(name, n, t, 3)?;
    }
    common::non_empty(name, &all)?;
    let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
    if ks != vs {
        return Err(Error::shape(
            name,
            format!(
                "k_cache {ks:?} and v_cache {vs:?} must have the same shape [capacity, Hkv, D]"
            ),
        ));
    }
    if qs[2] != ks[2] {
        return Err(Error::shape(
            name,
            format!("q {qs:?} and k_cache {ks:?} must have the same head dim ([L, H, D])"),
        ));
    }
    if qs[1] % ks[1] != 0 {
        return Err(Error::shape(
            name,
            format!(
                "query heads {} of q {qs:?} are not a multiple of key/value heads {} of k_cache {ks:?}",
                qs[1], ks[1]
            ),
        ));
    }
    if kv_len > ks[0] || qs[0] > kv_len {
        return Err(Error::shape(
            name,
            format!(
                "kv_len {kv_len} must be at least q's {} rows (q {qs:?}) and at most the capacity of \
                 k_cache {ks:?}",
                qs[0]
            ),
        ));
    }
    if opts.sliding_window == Some(0) {
        return Err(Error::shape(name, "sliding window 0 would hide every key"));
    }
    Ok(CachedShape {
        l: qs[0],
        kv_len,
        hq: qs[1],
        hkv: ks[1],
        d: qs[2],
    })
}

/// Keys per chunk on the decode path: enough chunks that the kv heads times row blocks times chunks
/// reach `TARGET_WORKGROUPS`, each at least `MIN_CHUNK` keys, at most `MAX_CHUNKS`, in whole tiles.
fn decode_chunk_len(s: &CachedShape) -> usize {
    let dim = s.d.next_multiple_of(HEAD_DIM_STEP);
    let (bq, bk) = tiles(dim);
    let blocks = s.hkv * (s.l * (s.hq / s.hkv)).div_ceil(bq);
    let chunks = TARGET_WORKGROUPS.div_ceil(blocks).max(1);
    let len = s
        .kv_len
        .div_ceil(chunks)
        .max(MIN_CHUNK)
        .max(s.kv_len.div_ceil(MAX_CHUNKS));
    len.next_multiple_of(bk)
}

/// Runs on the GPU in chunks of `chunk_len` keys (`None`: one chunk, the prefill path). Any number of
/// query rows works either way; the public op splits for decode only.
pub(crate) fn launch(
    ctx: &GpuContext,
    [q, k, v]: [&Tensor; 3],
    s: &CachedShape,
    scale: f32,
    window: usize,
    chunk_len: Option<usize>,
) -> Result<Tensor> {
    let name = "cached_attention";
    if s.d > MAX_HEAD_DIM {
        return Err(Error::limit(
            name,
            format!(
                "head dim {} of q {:?} is over the GPU kernel's {MAX_HEAD_DIM}",
                s.d,
                q.shape()
            ),
        ));
    }
    let dim = s.d.next_multiple_of(HEAD_DIM_STEP);
    let (bq, _) = tiles(dim);
    let group = s.hq / s.hkv;
    let rows = group * s.l;
    let row_blocks = rows.div_ceil(bq);
    let chunk_len = chunk_len.unwrap_or(s.kv_len).max(1);
    let chunks = s.kv_len.div_ceil(chunk_len);
    let groups = s.hkv * chunks * row_blocks;
    // Largest indices the kernels form: the cache prefix, q/out, and the partials.
    Params::new()
        .dim(name, s.kv_len * s.hkv * s.d)?
        .dim(name, s.l * s.hq * s.d)?
        .dim(name, groups * bq * s.d)?;
    let params = Params::new()
        .dim(name, s.l)?
        .dim(name, s.kv_len)?
        .dim(name, s.hq)?
        .dim(name, s.hkv)?
        .dim(name, s.d)?
        .dim(name, group)?
        .dim(name, rows)?
        .dim(name, row_blocks)?
        .dim(name, chunks)?
        .dim(name, chunk_len)?
        .dim(name, groups)?
        .dim(name, window)?
        .f32(scale)
        .align16();
    let out = Tensor::empty(q.device(), q.shape(), q.dtype(), name)?;
    // One chunk needs no combine: the kernel writes the output itself.
    let split = chunks > 1;
    let inputs = || {
        vec![
            BufferArg::new(1, "q", q),
            BufferArg::new(2, "k_cache", k),
            BufferArg::new(3, "v_cache", v),
        ]
    };
    let run = |entry, variant, buffers: &[BufferArg], n: u64| {
        ctx.dispatch(Dispatch {
            op: name,
            kernel: &CACHED_SOURCE,
            entry,
            variant,
            params: params.bytes(),
            buffers,
            workgroups: ctx.grid(name, n)?,
        })
    };
    let variant = variant(q.dtype(), k.dtype(), dim, split);
    if !split {
        let mut buffers = inputs();
        buffers.push(BufferArg::new(4, "out", &out));
        run("attend", variant, &buffers, groups as u64)?;
        return Ok(out);
    }
    let part_acc = Tensor::empty(q.device(), &[s.hkv * chunks * rows * s.d], DType::F32, name)?;
    let part_ml = Tensor::empty(q.device(), &[s.hkv * chunks * rows * 2], DType::F32, name)?;
    let mut buffers = inputs();
    buffers.push(BufferArg::new(5, "part_acc", &part_acc));
    buffers.push(BufferArg::new(6, "part_ml", &part_ml));
    run("attend", variant.clone(), &buffers, groups as u64)?;
    run(
        "combine",
        variant,
        &[
            BufferArg::new(4, "out", &out),
            BufferArg::new(5, "part_acc", &part_acc),
            BufferArg::new(6, "part_ml", &part_ml),
        ],
        common::groups_for(s.hkv * rows * s.d, 256),
    )?;
    Ok(out)
}

fn variant(q: DType, kv: DType, dim: usize, split: bool) -> Variant {
    let (bq, bk) = tiles(dim);
    let f16 = q == DType::F16 || kv == DType::F16;
    Variant::new(if f16 { DType::F16 } else { DType::F32 })
        .define("Q_F16", u32::from(q == DType::F16))
        .define("KV_F16", u32::from(kv == DType::F16))
        .define("HEAD_DIM", dim as u32)
        .define("BQ", bq as u32)
        .define("BK", bk as u32)
        .define("SPLIT", u32::from(split))
}

/// Every compiled variant of the cached kernels, for the offline shader validation test.
pub fn variants() -> Vec<(&'static KernelSource, &'static str, Variant)> {
    let mut out = Vec::new();
    for q in [DType::F32, DType::F16] {
        for kv in [DType::F32, DType::F16] {
            for dim in (HEAD_DIM_STEP..=MAX_HEAD_DIM).step_by(HEAD_DIM_STEP) {
                out.push((&CACHED_SOURCE, "attend", variant(q, kv, dim, false)));
                out.push((&CACHED_SOURCE, "attend", variant(q, kv, dim, true)));
                out.push((&CACHED_SOURCE, "combine", variant(q, kv, dim, true)));
            }
        }
    }
    out
}
