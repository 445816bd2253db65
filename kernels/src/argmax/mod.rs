//! Argmax over the last dimension: the index of each row's largest value, as u32. Greedy decoding
//! reads back this one id per row instead of a vocabulary of logits.

mod cpu;
#[cfg(test)]
mod tests;

use kiln_runtime::gpu::{BufferArg, Dispatch};
use kiln_runtime::preprocess::{KernelSource, Variant};
use kiln_runtime::{DType, Device, Error, Result, Tensor};

use crate::common::{self, Params};

pub static SOURCE: KernelSource = KernelSource {
    file: "argmax.wgsl",
    source: include_str!("argmax.wgsl"),
};

/// What [`argmax_finite`] gives for a row holding a NaN or an infinity.
pub const NON_FINITE: u32 = u32::MAX;

/// `x` `[.., n]` (f32 or f16) -> `[..]` u32: per row, the index of the largest value, lowest index
/// on ties (the host sampler's greedy choice; PyTorch's argmax too). -0 and +0 tie.
///
/// NaN is treated as the sampler's host argmax (`llm/src/sampling/chain.rs`, a strict `>` scan from
/// index 0) treats it: a NaN is never the maximum, except that a NaN at index 0 is never replaced,
/// so that row gives 0 (as does a row of NaNs).
pub fn argmax(x: &Tensor) -> Result<Tensor> {
    run("argmax", x, false)
}

/// As [`argmax`], but a row holding any NaN or infinity gives [`NON_FINITE`] instead of an index,
/// for callers that would reject that row had they read it (the sampler refuses non-finite logits).
pub fn argmax_finite(x: &Tensor) -> Result<Tensor> {
    run("argmax_finite", x, true)
}

fn run(op: &str, x: &Tensor, check_finite: bool) -> Result<Tensor> {
    let dtype = common::same_float_dtype(op, &[("x", x)])?;
    common::non_empty(op, &[("x", x)])?;
    if x.rank() == 0 {
        return Err(Error::shape(
            op,
            "`x` is a scalar; it needs a last dimension",
        ));
    }
    let width = x.dim(-1);
    let rows = x.numel() / width;
    let shape = &x.shape()[..x.rank() - 1];
    match x.device() {
        Device::Cpu => cpu::argmax(x, width, shape, check_finite),
        Device::Gpu(ctx) => {
            if u32::try_from(x.numel()).is_err() {
                return Err(Error::limit(
                    op,
                    format!("`x` {:?} is too large for u32 indexing", x.shape()),
                ));
            }
            let out = Tensor::empty(x.device(), shape, DType::U32, op)?;
            let params = Params::new()
                .dim(op, rows)?
                .dim(op, width)?
                .u32(check_finite.into());
            ctx.dispatch(Dispatch {
                op,
                kernel: &SOURCE,
                entry: "argmax",
                variant: Variant::new(dtype),
                params: params.bytes(),
                buffers: &[BufferArg::new(1, "x", x), BufferArg::new(2, "out", &out)],
                workgroups: ctx.grid(op, rows as u64)?,
            })?;
            Ok(out)
        }
    }
}

/// Every compiled variant of this family, for the offline shader validation test.
pub fn variants() -> Vec<(&'static KernelSource, &'static str, Variant)> {
    [DType::F32, DType::F16]
        .into_iter()
        .map(|dtype| (&SOURCE, "argmax", Variant::new(dtype)))
        .collect()
}
