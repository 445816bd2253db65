//! Row scatter: a copy of a `[N, D]` tensor with some rows replaced by the rows of another (image
//! features written over the embeddings of a prompt's image-token positions).

mod cpu;
#[cfg(test)]
mod tests;

use kiln_runtime::gpu::{BufferArg, Dispatch};
use kiln_runtime::preprocess::{KernelSource, Variant};
use kiln_runtime::{DType, Device, Error, Result, Tensor};

use crate::common::{self, Params};

pub static SOURCE: KernelSource = KernelSource {
    file: "scatter.wgsl",
    source: include_str!("scatter.wgsl"),
};

const WORKGROUP: usize = 256;

/// Marks an output row that keeps `x`'s row in the origin map the GPU kernel reads.
const KEEP: u32 = u32::MAX;

/// A copy of `x` (`[N, D]`) with row `rows[m]` replaced by `src[m]`, `src` being `[M, D]` with
/// `M = rows.len()`, of x's dtype (f32 or f16) and on its device. Rows are copied, not converted, so
/// both backends give the same bits.
///
/// The indices are checked on the host: one `>= N`, or one that appears twice, is an error naming it
/// and its place in `rows`. `M = 0` returns `x` itself (`src` must then be `[0, D]`).
pub fn scatter_rows(x: &Tensor, rows: &[u32], src: &Tensor) -> Result<Tensor> {
    let name = "scatter_rows";
    common::same_device(name, &[("x", x), ("src", src)])?;
    let dtype = common::same_float_dtype(name, &[("x", x), ("src", src)])?;
    common::rank(name, "x", x, 2)?;
    common::rank(name, "src", src, 2)?;
    common::non_empty(name, &[("x", x)])?;
    let [n, dim] = [x.shape()[0], x.shape()[1]];
    if src.shape() != [rows.len(), dim] {
        return Err(Error::shape(
            name,
            format!(
                "`src` {:?} must be [M, D] = [{}, {dim}] for {} row indices and `x` {:?}",
                src.shape(),
                rows.len(),
                rows.len(),
                x.shape()
            ),
        ));
    }
    let origin = origin_map(name, n, rows)?;
    if rows.is_empty() {
        return Ok(x.clone());
    }
    match x.device() {
        Device::Cpu => cpu::scatter_rows(x, rows, src),
        Device::Gpu(ctx) => {
            let out = Tensor::empty(x.device(), x.shape(), dtype, name)?;
            let origin = Tensor::from_u32(x.device(), &[n], &origin)?;
            let vec4 = dim.is_multiple_of(4);
            let unit = if vec4 { 4 } else { 1 };
            let params = Params::new()
                .dim(name, x.numel() / unit)?
                .dim(name, dim / unit)?
                .align16();
            ctx.dispatch(Dispatch {
                op: name,
                kernel: &SOURCE,
                entry: "scatter_rows",
                variant: variant(dtype, vec4),
                params: params.bytes(),
                buffers: &[
                    BufferArg::new(1, "x", x),
                    BufferArg::new(2, "src", src),
                    BufferArg::new(3, "origin", &origin),
                    BufferArg::new(4, "out", &out),
                ],
                workgroups: ctx.grid(name, common::groups_for(x.numel() / unit, WORKGROUP))?,
            })?;
            Ok(out)
        }
    }
}

/// Validates `rows` against `N` rows and inverts it: entry `r` is the `m` with `rows[m] = r`, or
/// `KEEP`.
fn origin_map(name: &str, n: usize, rows: &[u32]) -> Result<Vec<u32>> {
    let mut origin = vec![KEEP; n];
    for (m, &row) in rows.iter().enumerate() {
        let Some(slot) = origin.get_mut(row as usize) else {
            return Err(Error::shape(
                name,
                format!("row index {row} (rows[{m}]) is out of range for `x` of N = {n} rows"),
            ));
        };
        if *slot != KEEP {
            return Err(Error::shape(
                name,
                format!(
                    "row index {row} appears twice in `rows` (rows[{}] and rows[{m}])",
                    *slot
                ),
            ));
        }
        // m < N here (the rows so far are distinct and below N), so it fits in u32 as `row` does.
        *slot = m as u32;
    }
    Ok(origin)
}

fn variant(dtype: DType, vec4: bool) -> Variant {
    Variant::new(dtype).define("VEC4", u32::from(vec4))
}

/// Every compiled variant of this family, for the offline shader validation test.
pub fn variants() -> Vec<(&'static KernelSource, &'static str, Variant)> {
    let mut v = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        for vec4 in [false, true] {
            v.push((&SOURCE, "scatter_rows", variant(dtype, vec4)));
        }
    }
    v
}
