//! CPU layout ops. Elements are copied in their own type (no round trip through f32), rows in parallel.

use half::f16;
use rayon::prelude::*;

use kiln_runtime::{CpuData, DType, Error, Result, Tensor};

/// An element type CPU tensors store, so copies can be written once for all dtypes.
pub(crate) trait Elem: Copy + Default + Send + Sync + 'static {
    fn slice(data: &CpuData) -> Option<&[Self]>;
    fn wrap(values: Vec<Self>) -> CpuData;
}

macro_rules! elem {
    ($t:ty, $variant:ident) => {
        impl Elem for $t {
            fn slice(data: &CpuData) -> Option<&[Self]> {
                match data {
                    CpuData::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn wrap(values: Vec<Self>) -> CpuData {
                CpuData::$variant(values)
            }
        }
    };
}
elem!(f32, F32);
elem!(f16, F16);
elem!(u32, U32);

/// A CPU tensor's elements as `T` (the caller has matched `T` to the dtype).
pub(crate) fn elems<'a, T: Elem>(op: &str, t: &'a Tensor) -> Result<&'a [T]> {
    let data = t
        .cpu_data()
        .ok_or_else(|| Error::Device(format!("{op}: CPU implementation given a GPU tensor")))?;
    T::slice(data).ok_or_else(|| Error::dtype(op, format!("unexpected {}", t.dtype())))
}

/// Rows of at least this many elements go to one rayon task.
pub(crate) const MIN_TASK: usize = 4096;

pub fn concat(tensors: &[&Tensor], shape: &[usize], outer: usize) -> Result<Tensor> {
    fn run<T: Elem>(tensors: &[&Tensor], shape: &[usize], outer: usize) -> Result<Tensor> {
        let parts = tensors
            .iter()
            .map(|t| elems::<T>("concat", t))
            .collect::<Result<Vec<_>>>()?;
        let row_out: usize = shape.iter().product::<usize>() / outer;
        let mut out = vec![T::default(); outer * row_out];
        out.par_chunks_mut(row_out)
            .with_min_len(MIN_TASK.div_ceil(row_out))
            .enumerate()
            .for_each(|(r, row)| {
                let mut at = 0;
                for (part, t) in parts.iter().zip(tensors) {
                    let len = t.numel() / outer;
                    row[at..at + len].copy_from_slice(&part[r * len..(r + 1) * len]);
                    at += len;
                }
            });
        Tensor::from_cpu_data(T::wrap(out), shape)
    }
    match tensors[0].dtype() {
        DType::F32 => run::<f32>(tensors, shape, outer),
        DType::F16 => run::<f16>(tensors, shape, outer),
        DType::U32 => run::<u32>(tensors, shape, outer),
    }
}

/// Columns `offset .. offset + row_out` of `x` viewed as [outer, row_in], `row_out` being the
/// output's row length.
pub fn narrow(
    x: &Tensor,
    shape: &[usize],
    outer: usize,
    row_in: usize,
    offset: usize,
) -> Result<Tensor> {
    fn run<T: Elem>(
        x: &Tensor,
        shape: &[usize],
        outer: usize,
        row_in: usize,
        offset: usize,
    ) -> Result<Tensor> {
        let src = elems::<T>("narrow", x)?;
        let row_out = shape.iter().product::<usize>() / outer;
        let mut out = vec![T::default(); outer * row_out];
        out.par_chunks_mut(row_out)
            .with_min_len(MIN_TASK.div_ceil(row_out))
            .enumerate()
            .for_each(|(r, row)| {
                row.copy_from_slice(&src[r * row_in + offset..][..row_out]);
            });
        Tensor::from_cpu_data(T::wrap(out), shape)
    }
    match x.dtype() {
        DType::F32 => run::<f32>(x, shape, outer, row_in, offset),
        DType::F16 => run::<f16>(x, shape, outer, row_in, offset),
        DType::U32 => run::<u32>(x, shape, outer, row_in, offset),
    }
}

/// Gathers `x` into `shape` following a reduced plan (`super::plan`): output sizes `sizes` with input
/// strides `steps`, at least two of them.
pub fn permute(x: &Tensor, shape: &[usize], sizes: &[usize], steps: &[usize]) -> Result<Tensor> {
    fn run<T: Elem>(
        x: &Tensor,
        shape: &[usize],
        sizes: &[usize],
        steps: &[usize],
    ) -> Result<Tensor> {
        let src = elems::<T>("permute", x)?;
        let last = sizes.len() - 1;
        let (inner, inner_step) = (sizes[last], steps[last]);
        let mut out = vec![T::default(); x.numel()];
        out.par_chunks_mut(inner)
            .with_min_len(MIN_TASK.div_ceil(inner))
            .enumerate()
            .for_each(|(r, row)| {
                let (mut rest, mut base) = (r, 0);
                for d in (0..last).rev() {
                    base += (rest % sizes[d]) * steps[d];
                    rest /= sizes[d];
                }
                if inner_step == 1 {
                    row.copy_from_slice(&src[base..base + inner]);
                } else {
                    for (k, v) in row.iter_mut().enumerate() {
                        *v = src[base + k * inner_step];
                    }
                }
            });
        Tensor::from_cpu_data(T::wrap(out), shape)
    }
    match x.dtype() {
        DType::F32 => run::<f32>(x, shape, sizes, steps),
        DType::F16 => run::<f16>(x, shape, sizes, steps),
        DType::U32 => run::<u32>(x, shape, sizes, steps),
    }
}
