//! Embedding lookup: rows of a `[V, D]` table gathered by u32 token ids.

mod cpu;
#[cfg(test)]
mod tests;

use kiln_runtime::gpu::{BufferArg, Dispatch};
use kiln_runtime::preprocess::{KernelSource, Variant};
use kiln_runtime::{DType, Device, Error, Result, Tensor};

use crate::common::{self, Params};

pub static SOURCE: KernelSource = KernelSource {
    file: "embedding.wgsl",
    source: include_str!("embedding.wgsl"),
};

const WORKGROUP: usize = 256;

/// `table[ids]`: `ids` (u32, any shape) picks rows of `table` `[V, D]`, giving `[..ids.shape, D]` in
/// the table's dtype.
///
/// An id `>= V` is an error on the CPU (naming the id and `V`). On a GPU it yields a row of zeros
/// instead: the kernel cannot report, and checking the ids would mean reading them back, which stalls
/// the queue, so the GPU path does no validation. Validate ids upstream (the tokenizer's vocabulary
/// size) when that matters.
pub fn embedding(ids: &Tensor, table: &Tensor) -> Result<Tensor> {
    let name = "embedding";
    common::same_device(name, &[("ids", ids), ("table", table)])?;
    if ids.dtype() != DType::U32 {
        return Err(Error::dtype(
            name,
            format!(
                "{} for `ids` of shape {:?} (u32 expected)",
                ids.dtype(),
                ids.shape()
            ),
        ));
    }
    let dtype = common::same_float_dtype(name, &[("table", table)])?;
    common::rank(name, "table", table, 2)?;
    common::non_empty(name, &[("ids", ids), ("table", table)])?;
    let (vocab, dim) = (table.shape()[0], table.shape()[1]);
    let mut shape = ids.shape().to_vec();
    shape.push(dim);
    match ids.device() {
        Device::Cpu => cpu::embedding(ids, table, &shape),
        Device::Gpu(ctx) => {
            let out = Tensor::empty(ids.device(), &shape, dtype, name)?;
            let vec4 = dim.is_multiple_of(4);
            let unit = if vec4 { 4 } else { 1 };
            let n = ids.numel() * dim / unit;
            // The table's element count must index in u32 too.
            Params::new().dim(name, table.numel())?;
            let params = Params::new()
                .dim(name, n)?
                .dim(name, dim / unit)?
                .dim(name, vocab)?
                .align16();
            ctx.dispatch(Dispatch {
                op: name,
                kernel: &SOURCE,
                entry: "gather_rows",
                variant: variant(dtype, vec4),
                params: params.bytes(),
                buffers: &[
                    BufferArg::new(1, "ids", ids),
                    BufferArg::new(2, "table", table),
                    BufferArg::new(3, "out", &out),
                ],
                workgroups: ctx.grid(name, common::groups_for(n, WORKGROUP))?,
            })?;
            Ok(out)
        }
    }
}

fn variant(dtype: DType, vec4: bool) -> Variant {
    Variant::new(dtype).define("VEC4", u32::from(vec4))
}

/// Every compiled variant of this family, for the offline shader validation test.
pub fn variants() -> Vec<(&'static KernelSource, &'static str, Variant)> {
    let mut v = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        for vec4 in [false, true] {
            v.push((&SOURCE, "gather_rows", variant(dtype, vec4)));
        }
    }
    v
}
