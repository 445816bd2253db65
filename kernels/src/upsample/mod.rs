//! Nearest-neighbour upsampling by an integer factor, as `F.interpolate(x, scale_factor=f,
//! mode="nearest")` on [N, C, H, W] (Stable Diffusion's upsampler uses f = 2).

mod cpu;
#[cfg(test)]
mod tests;

use kiln_runtime::gpu::{BufferArg, Dispatch};
use kiln_runtime::preprocess::{KernelSource, Variant};
use kiln_runtime::{DType, Device, Error, Result, Tensor};

use crate::common::{self, Params};

pub static SOURCE: KernelSource = KernelSource {
    file: "upsample.wgsl",
    source: include_str!("upsample.wgsl"),
};

const WORKGROUP: usize = 256;

/// [N, C, H, W] -> [N, C, H * factor, W * factor], each output taking the input at (oh / f, ow / f).
pub fn upsample_nearest2d(x: &Tensor, factor: usize) -> Result<Tensor> {
    let name = "upsample_nearest2d";
    let dtype = common::same_float_dtype(name, &[("x", x)])?;
    common::rank(name, "x", x, 4)?;
    common::non_empty(name, &[("x", x)])?;
    if factor == 0 {
        return Err(Error::shape(
            name,
            format!("factor must be >= 1 (x {:?})", x.shape()),
        ));
    }
    let s = x.shape();
    let too_big = || {
        Error::limit(
            name,
            format!("x {s:?} upsampled by {factor} overflows the output size"),
        )
    };
    let ho = s[2].checked_mul(factor).ok_or_else(too_big)?;
    let wo = s[3].checked_mul(factor).ok_or_else(too_big)?;
    let shape = [s[0], s[1], ho, wo];
    match x.device() {
        Device::Cpu => cpu::upsample_nearest2d(x, factor, &shape),
        Device::Gpu(ctx) => {
            let out = Tensor::empty(x.device(), &shape, dtype, name)?;
            let params = Params::new()
                .dim(name, out.numel())?
                .dim(name, s[2])?
                .dim(name, s[3])?
                .dim(name, factor)?;
            ctx.dispatch(Dispatch {
                op: name,
                kernel: &SOURCE,
                entry: "upsample_nearest",
                variant: Variant::new(dtype),
                params: params.bytes(),
                buffers: &[BufferArg::new(1, "x", x), BufferArg::new(2, "out", &out)],
                workgroups: ctx.grid(name, common::groups_for(out.numel(), WORKGROUP))?,
            })?;
            Ok(out)
        }
    }
}

/// Every compiled variant of this family, for the offline shader validation test.
pub fn variants() -> Vec<(&'static KernelSource, &'static str, Variant)> {
    [DType::F32, DType::F16]
        .into_iter()
        .map(|d| (&SOURCE, "upsample_nearest", Variant::new(d)))
        .collect()
}
