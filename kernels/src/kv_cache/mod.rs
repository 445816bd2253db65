//! The KV cache of a decoder: `[capacity, H, D]` tensors written in place, a few rows per step, with
//! no copy or reallocation of the cache. Attention over a cache is `attention::cached_attention`.

mod cpu;
#[cfg(test)]
mod tests;

use kiln_runtime::gpu::{BufferArg, Dispatch};
use kiln_runtime::preprocess::{KernelSource, Variant};
use kiln_runtime::{DType, Device, Error, Result, Tensor};

use crate::common::{self, Params};

pub static SOURCE: KernelSource = KernelSource {
    file: "kv_cache.wgsl",
    source: include_str!("kv_cache.wgsl"),
};

const WORKGROUP: usize = 256;

/// Writes `rows` (`[L, H, D]`) into rows `start..start + L` of `cache` (`[capacity, H, D]`), converting
/// between f32 and f16 when their dtypes differ. The cache's storage is updated in place, so `cache`
/// must be its only handle (no clone or reshape view alive).
pub fn kv_write(cache: &mut Tensor, rows: &Tensor, start: usize) -> Result<()> {
    let name = "kv_write";
    common::same_device(name, &[("cache", cache), ("rows", rows)])?;
    for (n, t) in [("cache", &*cache), ("rows", rows)] {
        if !t.dtype().is_float() {
            return Err(Error::dtype(
                name,
                format!(
                    "{} for `{n}` {:?} (f32 or f16 expected)",
                    t.dtype(),
                    t.shape()
                ),
            ));
        }
        common::rank(name, n, t, 3)?;
    }
    common::non_empty(name, &[("cache", cache), ("rows", rows)])?;
    let (cs, rs) = (cache.shape(), rows.shape());
    if cs[1..] != rs[1..] {
        return Err(Error::shape(
            name,
            format!("rows {rs:?} and cache {cs:?} must agree on [H, D]"),
        ));
    }
    let len = rs[0];
    if start.checked_add(len).is_none_or(|end| end > cs[0]) {
        return Err(Error::shape(
            name,
            format!(
                "rows {rs:?} at start {start} do not fit cache {cs:?} (capacity {})",
                cs[0]
            ),
        ));
    }
    let row = cs[1] * cs[2];
    match cache.device().clone() {
        Device::Cpu => cpu::kv_write(cache, rows, start * row),
        Device::Gpu(ctx) => {
            // Refuses a cache whose storage another handle shares; the borrow ends before binding.
            cache.gpu_buffer_mut(name)?;
            // The kernel indexes the whole written range with u32.
            Params::new().dim(name, (start + len) * row)?;
            let params = Params::new()
                .dim(name, rows.numel())?
                .dim(name, start * row)?
                .align16();
            ctx.dispatch(Dispatch {
                op: name,
                kernel: &SOURCE,
                entry: "kv_write",
                variant: variant(rows.dtype(), cache.dtype()),
                params: params.bytes(),
                buffers: &[
                    BufferArg::new(1, "rows", rows),
                    BufferArg::new(2, "cache", cache),
                ],
                workgroups: ctx.grid(name, common::groups_for(rows.numel(), WORKGROUP))?,
            })
        }
    }
}

fn variant(src: DType, dst: DType) -> Variant {
    let f16 = src == DType::F16 || dst == DType::F16;
    Variant::new(if f16 { DType::F16 } else { DType::F32 })
        .define("SRC_F16", u32::from(src == DType::F16))
        .define("DST_F16", u32::from(dst == DType::F16))
}

/// Every compiled variant of this family, for the offline shader validation test.
pub fn variants() -> Vec<(&'static KernelSource, &'static str, Variant)> {
    let mut v = Vec::new();
    for src in [DType::F32, DType::F16] {
        for dst in [DType::F32, DType::F16] {
            v.push((&SOURCE, "kv_write", variant(src, dst)));
        }
    }
    v
}
