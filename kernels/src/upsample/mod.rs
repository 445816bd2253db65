//! Nearest-neighbour upsampling on [N, C, H, W], as `F.interpolate(x, scale_factor=f | size=(h, w),
//! mode="nearest")` (Stable Diffusion's upsampler uses f = 2, or the skip's size for odd latents).

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
    check(name, x)?;
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
    // PyTorch maps with the reciprocal of a given scale factor, computed in f32.
    let scale = (1.0 / factor as f64) as f32;
    launch(
        name,
        x,
        Axis::new(s[2], ho, scale),
        Axis::new(s[3], wo, scale),
    )
}

/// [N, C, H, W] -> [N, C, out_h, out_w] as `F.interpolate(x, size=(out_h, out_w), mode="nearest")`:
/// diffusers' UNet upsamples to the next skip connection's size when the latent is not a multiple of
/// 2 per downsampling (e.g. 13 -> 7 -> 4 on the way down, 4 -> 7 -> 13 on the way up).
pub fn upsample_nearest2d_to(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let name = "upsample_nearest2d_to";
    check(name, x)?;
    if out_h == 0 || out_w == 0 {
        return Err(Error::shape(
            name,
            format!(
                "output size must be positive, got {out_h}x{out_w} (x {:?})",
                x.shape()
            ),
        ));
    }
    let s = x.shape();
    let ratio = |input: usize, output: usize| input as f32 / output as f32;
    launch(
        name,
        x,
        Axis::new(s[2], out_h, ratio(s[2], out_h)),
        Axis::new(s[3], out_w, ratio(s[3], out_w)),
    )
}

fn check(name: &str, x: &Tensor) -> Result<()> {
    common::same_float_dtype(name, &[("x", x)])?;
    common::rank(name, "x", x, 4)?;
    common::non_empty(name, &[("x", x)])
}

/// One spatial axis: input and output length and the f32 scale used when the output is neither the
/// input's size nor twice it (PyTorch's own special cases, which it maps exactly).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Axis {
    pub input: usize,
    pub output: usize,
    pub scale: f32,
}

impl Axis {
    fn new(input: usize, output: usize, scale: f32) -> Self {
        Self {
            input,
            output,
            scale,
        }
    }

    /// The input index output index `o` copies, as PyTorch's `nearest_idx`.
    pub(crate) fn source(&self, o: usize) -> usize {
        if self.output == self.input {
            o
        } else if self.output == 2 * self.input {
            o >> 1
        } else {
            ((o as f32 * self.scale).floor() as usize).min(self.input - 1)
        }
    }
}

fn launch(name: &'static str, x: &Tensor, rows: Axis, cols: Axis) -> Result<Tensor> {
    let dtype = x.dtype();
    let s = x.shape();
    let shape = [s[0], s[1], rows.output, cols.output];
    match x.device() {
        Device::Cpu => cpu::upsample_nearest2d(x, rows, cols, &shape),
        Device::Gpu(ctx) => {
            let out = Tensor::empty(x.device(), &shape, dtype, name)?;
            let params = Params::new()
                .dim(name, out.numel())?
                .dim(name, rows.input)?
                .dim(name, cols.input)?
                .dim(name, rows.output)?
                .dim(name, cols.output)?
                .f32(rows.scale)
                .f32(cols.scale)
                .align16();
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
