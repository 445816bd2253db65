//! Layout ops: concatenation, narrowing, permutation and transposition. They only move elements, so besides f32
//! and f16 they also accept u32 tensors (token ids, indices).

pub(crate) mod cpu;
#[cfg(test)]
mod tests;

use kiln_runtime::gpu::{BufferArg, Dispatch, GpuContext};
use kiln_runtime::preprocess::{KernelSource, Variant};
use kiln_runtime::{DType, Device, Error, Result, Tensor};

use crate::common::{self, Params};

pub static SOURCE: KernelSource = KernelSource {
    file: "layout.wgsl",
    source: include_str!("layout.wgsl"),
};

/// Permutations support up to this many dimensions (the kernel's parameter arrays hold 8).
pub const MAX_RANK: usize = 8;
const WORKGROUP: usize = 256;

/// `torch.cat(tensors, dim)`: every other dimension must match. Inputs whose size along `dim` is 0 are
/// skipped (a cache that starts empty can be concatenated onto), but the result must not be empty.
pub fn concat(tensors: &[&Tensor], dim: usize) -> Result<Tensor> {
    let name = "concat";
    let Some(&first) = tensors.first() else {
        return Err(Error::shape(name, "empty list of tensors"));
    };
    let shapes = || {
        tensors
            .iter()
            .map(|t| format!("{:?}", t.shape()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (i, t) in tensors.iter().enumerate() {
        if t.device() != first.device() {
            return Err(Error::Device(format!(
                "{name}: `tensors[0]` is on {} but `tensors[{i}]` is on {}",
                first.device().name(),
                t.device().name()
            )));
        }
        if t.dtype() != first.dtype() {
            return Err(Error::dtype(
                name,
                format!(
                    "mix of {} (`tensors[0]`) and {} (`tensors[{i}]`)",
                    first.dtype(),
                    t.dtype()
                ),
            ));
        }
    }
    let rank = first.rank();
    if dim >= rank {
        return Err(Error::shape(
            name,
            format!(
                "dim {dim} out of range for rank-{rank} tensors [{}]",
                shapes()
            ),
        ));
    }
    for t in tensors {
        let same =
            t.rank() == rank && (0..rank).all(|d| d == dim || t.shape()[d] == first.shape()[d]);
        if !same {
            return Err(Error::shape(
                name,
                format!(
                    "along dim {dim} needs all other dims equal, got [{}]",
                    shapes()
                ),
            ));
        }
    }
    let mut shape = first.shape().to_vec();
    shape[dim] = tensors.iter().map(|t| t.shape()[dim]).sum();
    if shape.iter().product::<usize>() == 0 {
        return Err(Error::shape(
            name,
            format!("zero-size result {shape:?} from [{}]", shapes()),
        ));
    }
    if let [only] = tensors {
        return Ok((*only).clone());
    }
    let outer: usize = shape[..dim].iter().product();
    let inner: usize = shape[dim + 1..].iter().product();
    match first.device() {
        Device::Cpu => cpu::concat(tensors, &shape, outer),
        Device::Gpu(ctx) => {
            let dtype = first.dtype();
            let out = Tensor::empty(first.device(), &shape, dtype, name)?;
            let row_out = shape[dim] * inner;
            let mut offset = 0usize;
            for t in tensors {
                let row_in = t.shape()[dim] * inner;
                if row_in == 0 {
                    continue;
                }
                let rows = RowCopy {
                    outer,
                    row_in,
                    row_out,
                    offset,
                };
                rows.dispatch(ctx, name, "concat_rows", ("input", t), &out)?;
                offset += row_in;
            }
            Ok(out)
        }
    }
}

/// `x.narrow(dim, start, len).contiguous()`: elements `start .. start + len` along `dim`.
pub fn narrow(x: &Tensor, dim: usize, start: usize, len: usize) -> Result<Tensor> {
    let name = "narrow";
    let shape = x.shape();
    if dim >= x.rank() || len == 0 || start + len > shape[dim] {
        return Err(Error::shape(
            name,
            format!(
                "elements {start}..{} along dim {dim} of `x` {shape:?}",
                start + len
            ),
        ));
    }
    let mut out_shape = shape.to_vec();
    out_shape[dim] = len;
    if len == shape[dim] {
        return Ok(x.clone());
    }
    let outer: usize = shape[..dim].iter().product();
    let inner: usize = shape[dim + 1..].iter().product();
    let (row_in, row_out, offset) = (shape[dim] * inner, len * inner, start * inner);
    match x.device() {
        Device::Cpu => cpu::narrow(x, &out_shape, outer, row_in, offset),
        Device::Gpu(ctx) => {
            let out = Tensor::empty(x.device(), &out_shape, x.dtype(), name)?;
            let rows = RowCopy {
                outer,
                row_in,
                row_out,
                offset,
            };
            rows.dispatch(ctx, name, "narrow_rows", ("x", x), &out)?;
            Ok(out)
        }
    }
}

/// A copy between [outer, row_in] and [outer, row_out] row blocks at column `offset` of the wider
/// side: concat writes an input into the output's rows, narrow reads the output out of the input's.
struct RowCopy {
    outer: usize,
    row_in: usize,
    row_out: usize,
    offset: usize,
}

impl RowCopy {
    /// Runs `entry` of layout.wgsl, one invocation per unit of the narrower row, in vec4 units
    /// when every length and the offset allow.
    fn dispatch(
        &self,
        ctx: &GpuContext,
        name: &str,
        entry: &'static str,
        (input_name, input): (&'static str, &Tensor),
        out: &Tensor,
    ) -> Result<()> {
        let vec4 = [self.row_in, self.row_out, self.offset]
            .iter()
            .all(|v| v.is_multiple_of(4));
        let unit = if vec4 { 4 } else { 1 };
        let n = self.outer * self.row_in.min(self.row_out) / unit;
        let params = Params::new()
            .dim(name, n)?
            .u32(0)
            .dim(name, self.row_in / unit)?
            .dim(name, self.row_out / unit)?
            .dim(name, self.offset / unit)?
            .align16();
        ctx.dispatch(Dispatch {
            op: name,
            kernel: &SOURCE,
            entry,
            variant: variant(out.dtype(), vec4),
            params: params.bytes(),
            buffers: &[
                BufferArg::new(1, input_name, input),
                BufferArg::new(2, "out", out),
            ],
            workgroups: ctx.grid(name, common::groups_for(n, WORKGROUP))?,
        })
    }
}

fn variant(dtype: DType, vec4: bool) -> Variant {
    Variant::new(dtype).define("VEC4", u32::from(vec4))
}

/// The copy a permutation needs, reduced: output sizes and the input element stride of each output
/// dimension, with size-1 dimensions dropped and output dimensions that are also neighbours in the
/// input merged. Empty or a single dimension means the permutation moves nothing.
pub(crate) fn plan(shape: &[usize], perm: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1;
    for d in (0..shape.len()).rev() {
        strides[d] = acc;
        acc *= shape[d];
    }
    let (mut dims, mut steps): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    for &d in perm {
        let (size, stride) = (shape[d], strides[d]);
        if size == 1 {
            continue;
        }
        match (dims.last_mut(), steps.last_mut()) {
            // The previous output dimension steps over exactly this one in the input: one dimension.
            (Some(last), Some(step)) if *step == stride * size => {
                *last *= size;
                *step = stride;
            }
            _ => {
                dims.push(size);
                steps.push(stride);
            }
        }
    }
    (dims, steps)
}

/// `x.permute(dims).contiguous()`: output dimension `k` is input dimension `dims[k]`.
pub fn permute(x: &Tensor, dims: &[usize]) -> Result<Tensor> {
    let name = "permute";
    common::non_empty(name, &[("x", x)])?;
    let rank = x.rank();
    let mut seen = [false; MAX_RANK];
    let valid = rank <= MAX_RANK
        && dims.len() == rank
        && dims
            .iter()
            .all(|&d| d < rank && !std::mem::replace(&mut seen[d], true));
    if !valid {
        return Err(Error::shape(
            name,
            format!(
                "dims {dims:?} are not a permutation of 0..{rank} for `x` of shape {:?} (rank at most {MAX_RANK})",
                x.shape()
            ),
        ));
    }
    let shape: Vec<usize> = dims.iter().map(|&d| x.shape()[d]).collect();
    let (sizes, steps) = plan(x.shape(), dims);
    if sizes.len() <= 1 {
        // Nothing moves: the contiguous result is the input's storage under the new shape.
        return x.reshape(&shape);
    }
    match x.device() {
        Device::Cpu => cpu::permute(x, &shape, &sizes, &steps),
        Device::Gpu(ctx) => {
            let out = Tensor::empty(x.device(), &shape, x.dtype(), name)?;
            let last = sizes.len() - 1;
            let vec4 = steps[last] == 1 && sizes[last].is_multiple_of(4);
            let (mut sizes, mut steps) = (sizes, steps);
            if vec4 {
                // Every other input stride is a multiple of the innermost run, so also of 4.
                sizes[last] /= 4;
                steps[..last].iter_mut().for_each(|s| *s /= 4);
            }
            let n = x.numel() / if vec4 { 4 } else { 1 };
            // n, rank, then the six concat-only scalars up to the arrays at byte 32.
            let mut params = Params::new().dim(name, n)?.dim(name, sizes.len())?;
            for _ in 0..6 {
                params = params.u32(0);
            }
            for list in [&sizes, &steps] {
                for d in 0..MAX_RANK {
                    params = params.dim(name, list.get(d).copied().unwrap_or(1))?;
                }
            }
            ctx.dispatch(Dispatch {
                op: name,
                kernel: &SOURCE,
                entry: "permute_copy",
                variant: variant(x.dtype(), vec4),
                params: params.bytes(),
                buffers: &[BufferArg::new(1, "x", x), BufferArg::new(2, "out", &out)],
                workgroups: ctx.grid(name, common::groups_for(n, WORKGROUP))?,
            })?;
            Ok(out)
        }
    }
}

/// Swaps dimensions `d0` and `d1`, contiguous like `x.transpose(d0, d1).contiguous()`.
pub fn transpose(x: &Tensor, d0: usize, d1: usize) -> Result<Tensor> {
    let rank = x.rank();
    if d0 >= rank || d1 >= rank {
        return Err(Error::shape(
            "transpose",
            format!(
                "dims ({d0}, {d1}) out of range for `x` of shape {:?}",
                x.shape()
            ),
        ));
    }
    let mut dims: Vec<usize> = (0..rank).collect();
    dims.swap(d0, d1);
    permute(x, &dims)
}

/// Every compiled variant of this family, for the offline shader validation test.
pub fn variants() -> Vec<(&'static KernelSource, &'static str, Variant)> {
    let mut v = Vec::new();
    for dtype in [DType::F32, DType::F16, DType::U32] {
        for vec4 in [false, true] {
            for entry in ["concat_rows", "narrow_rows", "permute_copy"] {
                v.push((&SOURCE, entry, variant(dtype, vec4)));
            }
        }
    }
    v
}
