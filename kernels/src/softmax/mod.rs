//! Softmax over the last dimension, with the attention logit scale folded in.

mod cpu;
#[cfg(test)]
mod tests;

use kiln_runtime::gpu::{BufferArg, Dispatch};
use kiln_runtime::preprocess::{KernelSource, Variant};
use kiln_runtime::{DType, Device, Error, Result, Tensor};

use crate::common::{self, Params};

pub static SOURCE: KernelSource = KernelSource {
    file: "softmax.wgsl",
    source: include_str!("softmax.wgsl"),
};

/// `softmax(scale * x)` over the last dimension, computed stably by subtracting each row's maximum.
pub fn softmax(x: &Tensor, scale: f32) -> Result<Tensor> {
    let op = "softmax";
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
    match x.device() {
        Device::Cpu => cpu::softmax(x, scale, width),
        Device::Gpu(ctx) => {
            let out = Tensor::empty(x.device(), x.shape(), dtype, op)?;
            if u32::try_from(x.numel()).is_err() {
                return Err(Error::limit(
                    op,
                    format!("`x` {:?} is too large for u32 indexing", x.shape()),
                ));
            }
            let params = Params::new().dim(op, rows)?.dim(op, width)?.f32(scale);
            ctx.dispatch(Dispatch {
                op,
                kernel: &SOURCE,
                entry: "softmax",
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
        .map(|dtype| (&SOURCE, "softmax", Variant::new(dtype)))
        .collect()
}
